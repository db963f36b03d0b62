"""`leapkit report [RUN]`: one Markdown report (RUN/report.md) with plots of every stage's results."""

from __future__ import annotations

from typing import Annotated

import typer

from leapkit.cli.options import DeviceOpt, RunArg


def report_command(
    run: RunArg = None,
    evaluate: Annotated[bool, typer.Option("--eval", help="Run `leapkit eval` (student and teacher) first.")] = False,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Draw the curriculum, training-FLOPs and loss plots.")
    ] = True,
    device: DeviceOpt = "cpu",
) -> None:
    """Write RUN/report.md: config, curriculum, training FLOPs vs baseline, eval, export and latency."""
    from rich.console import Console

    from leapkit.errors import ConfigError
    from leapkit.report import write_report

    if device != "cpu" and not evaluate:
        raise ConfigError("--device only applies to --eval; add --eval or drop --device")
    report = write_report(run, evaluate=evaluate, plots=plots, device=device)
    Console().print(report.table().to_rich())
