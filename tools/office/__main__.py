"""python -m tools.office: the office's command line (tools/office/cli.py)."""

from tools.office.cli import main

main()
