"""`leapkit calibrate --target T [--runtime R] [--host H]`: fit a target's latency model to microbenchmarks.

A CPU target is timed on this machine (which must be the target), in its profile's runtime or another
it deploys with (``--runtime openvino``); a TensorRT target on this machine when it is the device, else
over SSH with ``--host``. The fit's file goes to ``~/.config/leapkit/calibration/<target>.json``
(``<target>-<runtime>.json`` for a runtime other than the profile's; or ``--out``), where ``leapkit plan``
and ``leapkit bench`` find it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from leapkit.cli.options import NON_NEGATIVE_SECONDS, FiniteFloat, PrecisionsOpt, TargetOpt, split_choices
from leapkit.types import PRECISIONS


def calibrate_command(
    target: TargetOpt,
    host: Annotated[
        str | None,
        typer.Option(help="[user@]host[:port] of the device: a TensorRT target timed over SSH.", show_default=False),
    ] = None,
    ssh_option: Annotated[
        list[str] | None,
        typer.Option("--ssh-option", help="ssh/scp setting for --host: Key=Value as in ssh_config, or quoted ssh "
                     "arguments ('-i ~/.ssh/jetson') (repeatable).", show_default=False),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", "-r", help="One of the target's runtimes, e.g. openvino (default: its profile's "
                     "runtime).", show_default=False),
    ] = None,
    precision: PrecisionsOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="The fit's file (default ~/.config/leapkit/calibration/<target>.json, "
                                       "<target>-<runtime>.json for another runtime than the profile's).",
                                  show_default=False)
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU runtime threads (default: the target's).", show_default=False)
    ] = None,
    duration: Annotated[
        float, typer.Option(parser=FiniteFloat(0.01, low_open=False, what="number of seconds"), metavar="S",
                            help="Seconds timed per microbenchmark and round (CPU).")
    ] = 1.0,
    warmup: Annotated[
        float, typer.Option(parser=NON_NEGATIVE_SECONDS, metavar="S",
                            help="Warm-up seconds per microbenchmark and round (CPU).")
    ] = 0.2,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (CPU); each microbenchmark keeps its fastest "
                                                    "round's median.")] = 9,
    quick: Annotated[
        bool, typer.Option("--quick", help="A small grid that fits in seconds; its fit is rough.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Time the latency model's microbenchmarks on the target and write its latency-model fit."""
    from rich.console import Console

    from leapkit.planning.fit import FitRequest, fit_latency_model
    from leapkit.planning.fit_file import fit_table
    from leapkit.planning.latency_model import check_runtime
    from leapkit.planning.microbench import GRID, QUICK_GRID
    from leapkit.profiles import load_target

    profile = load_target(target)
    plan = FitRequest(
        profile=profile, precisions=tuple(split_choices(precision, PRECISIONS, "--precision") or ()),
        grid=QUICK_GRID if quick else GRID, out=out, host=host,
        ssh_options=tuple(arg for item in ssh_option or () for arg in shlex.split(item)),
        threads=threads, warmup_s=warmup, duration_s=duration, rounds=rounds, progress=progress,
        runtime=check_runtime(profile, runtime),
    )
    fitted, path = fit_latency_model(plan)
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes are wider than 80
    console.print(fit_table(fitted).to_rich())
    console.print(f"latency-model fit: {path}")
