"""``python -m soraprep.cli``."""

from soraprep.cli import main

main()
