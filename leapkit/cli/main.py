"""The `leapkit` command: registers each command module's functions and maps errors to exit codes.

Command modules only parse and delegate; they never import this module, so ``app`` is complete as
soon as it is imported (``typer.testing.CliRunner().invoke(app, [...])`` works on a fresh import).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from typing import NoReturn

import typer

from leapkit import __version__
from leapkit.cli import bench, calibrate, distill, eval, export, flops, plan, profiles, report
from leapkit.errors import INTERNAL_ERROR_EXIT, ROOM_ERRNOS, USAGE_EXIT, Interrupted, LeapkitError

INTERRUPTED_EXIT = Interrupted.exit_code
# click's error base class, wherever this typer takes click from (its own copy since 0.2x, the click package before).
ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

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
    """Entry point: every error is one line on stderr and its exit code; a crash is an internal error.

    click runs without its standalone mode, so that its usage errors come here too: one line naming the
    command's --help, exit 2 (never click's boxed usage text). Ctrl-C is one line and exit 130. An OS error
    on a named path (permission denied, no space left, a file where a folder should be) is the user's to
    fix: one line with the path, exit 2. Any other exception exits with INTERNAL_ERROR_EXIT, never 1, so
    that a crash does not read as a failed check in CI. LEAPKIT_DEBUG=1 adds the traceback; the exit code
    stays the same.
    """
    debug = os.environ.get("LEAPKIT_DEBUG") == "1"
    try:
        code = app(standalone_mode=False)
    except ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # no arguments: the help is printed already, as typer does
            sys.exit(USAGE_EXIT)
        _exit(f"error: {usage_line(e)}", USAGE_EXIT, debug)
    except typer.Abort:  # Ctrl-C at a prompt, or end of input where one was read
        _exit("error: interrupted", INTERRUPTED_EXIT, debug)
    except LeapkitError as e:
        _exit(f"error: {e}", e.exit_code, debug)
    except OSError as e:
        if e.filename is None and e.errno not in ROOM_ERRNOS:
            _internal_error(e, debug)
        _exit(f"error: {os_error_line(e)}", USAGE_EXIT, debug)
    except Exception as e:
        if (line := out_of_memory_line(e)) is not None:
            _exit(f"error: {line}", USAGE_EXIT, debug)
        _internal_error(e, debug)
    if code == INTERRUPTED_EXIT:  # click turns a KeyboardInterrupt into Exit(130), returned without standalone mode
        _exit("error: interrupted (Ctrl-C); rerun the command to do it again", INTERRUPTED_EXIT, debug)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(e: Exception) -> str:
    """``Invalid value for '--batch': ... (see leapkit export --help)``: click's message as one line."""
    message = " ".join(e.format_message().split())  # type: ignore[attr-defined]
    message = message.replace("Value error, ", "")  # typer 0.2x's prefix to a parser's ValueError
    # "Invalid value for '--x': must be ..." (leapkit's parsers) reads as "--x must be ...", as leapkit's own checks
    message = re.sub(r"^Invalid value for '(-[^']+)'(?: / '-[^']+')?: must be ", r"\1 must be ", message)
    ctx = getattr(e, "ctx", None)
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    command = " ".join(["leapkit", *reversed(names[:-1])])  # the root's name is however leapkit was started
    return f"{message} (see {command} --help)"


def os_error_line(e: OSError) -> str:
    """``/x/y: permission denied (check ...)``: the path and the reason, as one line."""
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    reason = (e.strerror or type(e).__name__).lower()
    if e.errno in ROOM_ERRNOS:
        where = f"writing {paths}" if paths else "writing the output"
        return f"{reason} while {where}; free space there (df -h) and run the command again"
    return f"{paths}: {reason} (check the path and its permissions)"


_NO_MEMORY = re.compile(r"can't allocate memory|out of memory|Unable to allocate", re.IGNORECASE)


def out_of_memory_line(e: Exception) -> str | None:
    """One line for a request larger than the machine's memory (host or GPU), or None for any other error.

    torch reports a failed host allocation as a RuntimeError naming its allocator, a GPU's as
    ``torch.OutOfMemoryError``; numpy raises MemoryError. None of them is a bug: the work asked is too big here.
    """
    text = str(e)
    if not isinstance(e, MemoryError) and not (isinstance(e, RuntimeError) and _NO_MEMORY.search(text)):
        return None
    size = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGTPE]iB)", text)
    asked = ""
    if size:
        asked = f" (an allocation of {int(size[1]) / 2**30:.1f} GiB)" if size[1] else f" (an allocation of {size[2]})"
    return (f"out of memory{asked}: ask for less (a smaller --batch, --batch-size, --input-size or --img-size) or "
            "run where there is more memory")


def _internal_error(e: Exception, debug: bool) -> NoReturn:
    _exit(f"internal error: {type(e).__name__}: {e} "
          "(a bug in leapkit: set LEAPKIT_DEBUG=1 for the traceback and report it)", INTERNAL_ERROR_EXIT, debug)


def _exit(line: str, code: int, debug: bool) -> NoReturn:
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    typer.secho(line, fg="red", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
