"""`leapkit eval [RUN]`: linear probe, kNN and retrieval of the student (and teacher) on a labelled split."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from leapkit.cli.options import RunArg


def _table(result: dict[str, Any]):
    from rich.table import Table

    rows = [
        ("linear probe top-1 (%)", "linear_probe_top1"),
        ("linear probe top-5 (%)", "linear_probe_top5"),
        ("kNN top-1 (%)", "knn_top1"),
        ("retrieval mAP (%)", "retrieval_map"),
    ]
    teacher = result.get("teacher")
    table = Table(title=f"evaluation on {result['n_train']} train / {result['n_val']} val images ({result['pool']} features)")
    table.add_column("metric")
    table.add_column("student", justify="right")
    if teacher:
        table.add_column("teacher", justify="right")
        table.add_column("gap", justify="right")
    for label, key in rows:
        cells = [f"{result[key]:.2f}"]
        if teacher:
            cells += [f"{teacher[key]:.2f}", f"{teacher[key] - result[key]:+.2f}"]
        table.add_row(label, *cells)
    for name, r in result.get("revisitop", {}).items():
        for protocol in ("easy", "medium", "hard"):
            cells = [f"{r[protocol]:.2f}"]
            if teacher:
                t = teacher["revisitop"][name][protocol]
                cells += [f"{t:.2f}", f"{t - r[protocol]:+.2f}"]
            table.add_row(f"{name} {protocol} mAP (%)", *cells)
    return table


def eval_command(
    run: RunArg = None,
    data: Annotated[Optional[str], typer.Option("--data", help="ImageFolder root with train/ and val/ (default: the run's data).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "cpu",
    teacher: Annotated[bool, typer.Option("--teacher/--no-teacher", help="Evaluate the teacher too, for the gap.")] = True,
    pool: Annotated[str, typer.Option("--pool", help="Features: cls (CLS token) or avg (mean of patch tokens).")] = "cls",
    revisitop: Annotated[
        Optional[list[str]], typer.Option("--revisitop", help="Prepared revisitop folder (roxford5k, rparis6k); repeatable.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 256,
) -> None:
    """Linear probe, kNN and retrieval mAP of the student and the teacher; writes RUN/eval.json."""
    from rich.console import Console

    from leapkit.errors import ConfigError
    from leapkit.evaluate import evaluate_run

    if pool not in ("cls", "avg"):
        raise ConfigError(f"--pool must be cls or avg, got {pool!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    result = evaluate_run(run, data=data, device=device, teacher=teacher, pool=pool, revisitop=revisitop or (), batch_size=batch_size)
    Console().print(_table(result))
