"""`leapkit bench [MODEL] --target T`: latency report and budget verdict (exit 1 on FAIL)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from leapkit.cli.options import BudgetOpt, OptionalTargetOpt, PrecisionsOpt, RuntimesOpt, StatOpt, split_choices
from leapkit.types import PRECISIONS, RUNTIMES, OrtProvider

ModelArg = Annotated[
    str | None,
    typer.Argument(help="Run directory, export folder, .onnx file or TensorRT engine (default: runs/latest).",
                   show_default=False),
]
OrtProviderOpt = Annotated[
    OrtProvider, typer.Option("--ort-provider", help="ONNX Runtime provider (auto: CUDA for GPU targets when present).")
]
IterationsOpt = Annotated[
    int | None,
    typer.Option("--iterations", "-n", help="Timed iterations (default: run for --duration).", show_default=False),
]
DurationOpt = Annotated[
    float, typer.Option("--duration", help="Timed seconds per format when --iterations is not given.")
]
WarmupOpt = Annotated[float, typer.Option("--warmup", help="Warm-up seconds per format.")]
ThreadsOpt = Annotated[
    str | None,
    typer.Option("--threads", help="CPU threads for torch and ONNX Runtime, or 'auto': the fastest of 1, 2, 4, ... "
                 "cores per format (default: the target's, else all cores).", show_default=False),
]
BatchOpt = Annotated[
    int | None, typer.Option("--batch", help="Batch size (default: the target's).", show_default=False)
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Run the PyTorch student through torch.compile.")]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Folder for bench/<target>.json|.md (default: the run, else next to the model).",
                 show_default=False),
]


def _runtimes(values: list[str] | None) -> list[str] | None:
    """``--runtime`` values checked; ``all`` (what MODEL has) stays ``["all"]``."""
    chosen = split_choices(values, RUNTIMES, "--runtime")
    given = {v.strip() for raw in values or () for v in raw.split(",")}
    return ["all"] if "all" in given else chosen


def bench_cmd(
    model: ModelArg = None,
    target: OptionalTargetOpt = None,
    budget_ms: BudgetOpt = None,
    stat: StatOpt = None,
    runtime: RuntimesOpt = None,
    precision: PrecisionsOpt = None,
    iterations: IterationsOpt = None,
    duration: DurationOpt = 3.0,
    warmup: WarmupOpt = 0.5,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    compile: CompileOpt = False,
    ort_provider: OrtProviderOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Measure latency per format, estimate the target's roofline, and judge the latency budget."""
    from rich.console import Console
    from rich.markup import escape

    from leapkit.latency.bench import bench
    from leapkit.latency.report import latency_table

    precisions = split_choices(precision, PRECISIONS, "--precision")
    report = bench(
        model, target, runtimes=_runtimes(runtime), budget_ms=budget_ms, stat=stat,
        precisions=None if precisions == list(PRECISIONS) else precisions, batch=batch, threads=threads,
        warmup_s=warmup, iterations=iterations, duration_s=duration, compile=compile, ort_provider=ort_provider,
        out_dir=out, check=False,
    )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(latency_table(report).to_rich())
    colour = "green" if report.verdict == "PASS" else "red"
    console.print(f"[bold {colour}]{report.verdict}[/]: {escape(report.verdict_reason)}", highlight=False)
    console.print(f"report: {report.md_path}", highlight=False, markup=False)
    report.check()
