"""`python -m flows.cli`: the same as the `remedy` command."""

from flows.cli import main

main()
