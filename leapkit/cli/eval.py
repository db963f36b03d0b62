"""`leapkit eval [RUN]`: linear probe, kNN and retrieval of the student (and teacher) on a labelled split."""

from __future__ import annotations

from typing import Annotated

import typer

from leapkit.cli.options import RunArg
from leapkit.types import Pool


def eval_command(
    run: RunArg = None,
    data: Annotated[
        str | None, typer.Option("--data", help="ImageFolder root with train/ and val/ (default: the run's data).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "cpu",
    teacher: Annotated[
        bool, typer.Option("--teacher/--no-teacher", help="Evaluate the teacher too, for the gap.")
    ] = True,
    pool: Annotated[
        Pool, typer.Option("--pool", help="Features: cls (CLS token) or avg (mean of patch tokens).")
    ] = "cls",
    revisitop: Annotated[
        list[str] | None,
        typer.Option("--revisitop", help="Prepared revisitop folder (roxford5k, rparis6k); repeatable."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 256,
) -> None:
    """Linear probe, kNN and retrieval mAP of the student and the teacher; writes RUN/eval.json."""
    from rich.console import Console

    from leapkit.eval.stage import evaluate_run

    report = evaluate_run(
        run, data=data, device=device, teacher=teacher, pool=pool, revisitop=revisitop or (), batch_size=batch_size
    )
    Console().print(report.table().to_rich())
