"""`python -m tools.bridge ...`: the LoRaWAN bridge's CLI."""

from tools.bridge.cli import main

main()
