"""The `leapkit` command. Each command group lives in its own module and only parses and delegates."""

from __future__ import annotations

import logging
import os
import sys

import typer

from leapkit import __version__
from leapkit.errors import LeapkitError

app = typer.Typer(
    name="leapkit",
    help="Distil Vision Foundation Models into edge-sized ViTs with the LEAP curriculum.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leapkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, markup=False)],
        force=True,
    )


def _register() -> None:
    # Command modules attach themselves to `app` on import.
    from leapkit.cli import distill  # noqa: F401
    from leapkit.cli import bench, profiles  # noqa: F401
    from leapkit.cli import eval  # noqa: F401
    from leapkit.cli import flops  # noqa: F401
    from leapkit.cli import export  # noqa: F401
    from leapkit.cli import report  # noqa: F401


def main() -> None:
    """Entry point: map leapkit errors to one line and an exit code; tracebacks with LEAPKIT_DEBUG=1.

    Usage errors are reported by click itself (exit 2).
    """
    _register()
    debug = os.environ.get("LEAPKIT_DEBUG") == "1"
    try:
        app()
    except LeapkitError as e:
        if debug:
            raise
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(e.exit_code)
    except Exception as e:
        if debug:
            raise
        typer.secho(f"error: {type(e).__name__}: {e} (set LEAPKIT_DEBUG=1 for the traceback)", fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
