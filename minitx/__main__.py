"""`python -m minitx` (and `torchrun -m minitx`) runs the command line."""

from minitx.cli import main

main()
