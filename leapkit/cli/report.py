"""`leapkit report [RUN]`: one Markdown report (RUN/report.md) with plots of every stage's results."""

from __future__ import annotations

from typing import Annotated

import typer

from leapkit.cli.options import RunArg


def report_command(
    run: RunArg = None,
    evaluate: Annotated[bool, typer.Option("--eval", help="Run `leapkit eval` (student and teacher) first.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the curriculum, training-FLOPs and loss plots.")] = True,
    device: Annotated[str, typer.Option("--device", help="Where --eval runs: cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """Write RUN/report.md: config, curriculum, training FLOPs vs baseline, eval, export and latency."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from leapkit.errors import ConfigError
    from leapkit.report import write_report

    if device != "cpu" and not evaluate:
        raise ConfigError("--device only applies to --eval; add --eval or drop --device")
    report = write_report(run, evaluate=evaluate, plots=plots, device=device)
    table = Table(title=f"report: {report.path}")
    table.add_column("section")
    table.add_column("status")
    for s in report.sections:
        table.add_row(s.title, f"[yellow]missing: run `{escape(s.missing)}`[/yellow]" if s.missing else "[green]included[/green]")
    for name, path in report.plots.items():
        table.add_row(f"plot {name}", str(path.name))
    Console().print(table)
