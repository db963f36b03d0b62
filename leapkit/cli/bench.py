"""`leapkit bench [MODEL] --target T`: latency report and budget verdict (exit 1 on FAIL)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


ModelArg = Annotated[
    Optional[str],
    typer.Argument(help="Run directory, export folder, .onnx file or TensorRT engine (default: runs/latest).", show_default=False),
]


def bench_cmd(
    model: ModelArg = None,
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Target profile or family ('jetson'); default: the export's target.", show_default=False)] = None,
    budget_ms: Annotated[Optional[float], typer.Option("--budget-ms", help="Latency budget in ms (default: the target's).", show_default=False)] = None,
    stat: Annotated[Optional[str], typer.Option("--stat", help="Statistic judged against the budget: min|mean|p50|p90|p95|p99|max (default: the target's, p99).", show_default=False)] = None,
    runtime: Annotated[Optional[list[str]], typer.Option("--runtime", "-r", help="torch|onnxruntime|tensorrt, repeatable, or 'all' (default: what MODEL has).", show_default=False)] = None,
    precision: Annotated[Optional[list[str]], typer.Option("--precision", help="Only these precisions (repeatable).", show_default=False)] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", help="Timed iterations (default: run for --duration).", show_default=False)] = None,
    duration: Annotated[float, typer.Option("--duration", help="Timed seconds per format when --iterations is not given.")] = 3.0,
    warmup: Annotated[float, typer.Option("--warmup", help="Warm-up seconds per format.")] = 0.5,
    threads: Annotated[Optional[str], typer.Option("--threads", help="CPU threads for torch and ONNX Runtime, or 'auto': the fastest of 1, 2, 4, ... cores per format (default: the target's, else all cores).", show_default=False)] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch size (default: the target's).", show_default=False)] = None,
    compile: Annotated[bool, typer.Option("--compile", help="Run the PyTorch student through torch.compile.")] = False,
    ort_provider: Annotated[str, typer.Option("--ort-provider", help="ONNX Runtime provider: auto|cpu|cuda|tensorrt.")] = "auto",
    out: Annotated[Optional[str], typer.Option("--out", help="Folder for bench/<target>.json|.md (default: the run, else next to the model).", show_default=False)] = None,
) -> None:
    """Measure latency per format, estimate the target's roofline, and judge the latency budget."""
    from leapkit.bench import TABLE_HEADER, bench, table_rows
    from leapkit.errors import ConfigError

    if ort_provider not in ("auto", "cpu", "cuda", "tensorrt"):
        raise ConfigError(f"unknown --ort-provider '{ort_provider}'; use auto, cpu, cuda or tensorrt")
    if runtime and "all" in runtime and len(runtime) > 1:
        raise ConfigError("--runtime all cannot be combined with other --runtime values")
    report = bench(
        model, target, runtimes=runtime, budget_ms=budget_ms, stat=stat, precisions=precision, batch=batch, threads=threads,
        warmup_s=warmup, iterations=iterations, duration_s=duration, compile=compile, ort_provider=ort_provider, out_dir=out, check=False,
    )
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"Latency on {report.data['target']} (roofline: estimate, not measured)", title_justify="left")
    for col in TABLE_HEADER:
        table.add_column(col, no_wrap=col in ("format", "budget"))
    for row in table_rows(report.data):
        table.add_row(*row)
    console.print(table)
    colour = "green" if report.verdict == "PASS" else "red"
    console.print(f"[bold {colour}]{report.verdict}[/]: {report.data['verdict_reason']}", highlight=False)
    console.print(f"report: {report.md_path}", highlight=False)
    report.check()
