"""`python -m slmops.cli`: the same as the `slmops` console script."""

from slmops.cli import main

main()
