"""`python -m dlrun ...` is the same as `dlrun ...`."""

from dlrun.cli import main

main()
