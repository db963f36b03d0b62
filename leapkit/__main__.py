"""`python -m leapkit ...` (what torchrun launches)."""

from leapkit.cli.main import main

if __name__ == "__main__":
    main()
