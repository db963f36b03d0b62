"""`python -m leapkit ...` (what torchrun launches)."""

from leapkit.cli.main import main

main()
