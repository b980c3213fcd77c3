"""`python -m clicktune` runs the CLI."""

from clicktune.cli import main

main()
