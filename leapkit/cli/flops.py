"""`leapkit flops [RUN]`: training FLOPs of a run against the fixed-target baseline, and inference cost."""

from __future__ import annotations

from typing import Annotated

import typer

from leapkit.cli.options import RunArg

ExportBatch = Annotated[
    int, typer.Option("--export-batch", min=1, help="Batch the student is deployed at (activation memory).")
]


def flops_command(run: RunArg = None, export_batch: ExportBatch = 1) -> None:
    """Training FLOPs of the run and of the fixed-target baseline, and the student's inference cost.

    Writes RUN/flops.json.
    """
    from rich.console import Console

    from leapkit.flops import inference_table, run_flops, train_flops_table

    report = run_flops(run, export_batch=export_batch)
    console = Console()
    console.print(train_flops_table(report).to_rich())
    console.print(inference_table(report).to_rich())
