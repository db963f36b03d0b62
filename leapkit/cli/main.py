"""The `leapkit` command: registers each command module's functions and maps errors to exit codes.

Command modules only parse and delegate; they never import this module, so ``app`` is complete as
soon as it is imported (``typer.testing.CliRunner().invoke(app, [...])`` works on a fresh import).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from leapkit import __version__
from leapkit.cli import bench, calibrate, distill, eval, export, flops, plan, profiles, report
from leapkit.errors import INTERNAL_ERROR_EXIT, LeapkitError

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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (TensorRT's log at INFO too)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, markup=False)],
        force=True,
    )


app.command("distill")(distill.distill)
app.command("flops")(flops.flops_command)
app.command("eval")(eval.eval_command)
app.command("export")(export.export_command)
app.command("bench")(bench.bench_cmd)
app.command("report")(report.report_command)
app.command("plan")(plan.plan_command)
app.command("calibrate")(calibrate.calibrate_command)
app.add_typer(profiles.profiles_app, name="profiles")


def main() -> None:
    """Entry point: a leapkit error is one line and its exit code; anything else is an internal error.

    Usage errors are reported by click itself (exit 2). An unexpected exception exits with
    INTERNAL_ERROR_EXIT, never 1, so that a crash does not read as a failed check in CI.
    LEAPKIT_DEBUG=1 shows the traceback.
    """
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
        typer.secho(
            f"internal error: {type(e).__name__}: {e} "
            "(a bug in leapkit: set LEAPKIT_DEBUG=1 for the traceback and report it)",
            fg="red", err=True,
        )
        sys.exit(INTERNAL_ERROR_EXIT)


if __name__ == "__main__":
    main()
