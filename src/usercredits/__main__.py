"""``python -m usercredits``: the command line."""

from usercredits.cli import main

main()
