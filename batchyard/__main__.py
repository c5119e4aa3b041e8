"""`python -m batchyard` runs the CLI."""

from batchyard.launch import main

main()
