"""`python -m tools.vend ...`: the vending CLI."""

from tools.vend.cli import main

main()
