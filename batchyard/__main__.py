"""`python -m batchyard` runs the CLI."""

from producers.cli import main

main()
