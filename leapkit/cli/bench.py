"""`leapkit bench [MODEL] --target T`: latency report and budget verdict (exit 1 on FAIL).

Also `leapkit bench --from-trtexec FILE --target T` (the device's own trtexec output) and
`leapkit bench RUN --target T --host [user@]host[:port]` (build and time on the device over SSH).
For CI: `--baseline PREV.json [--max-regression PCT]` (exit 1 on a slowdown beyond the noise), `--junit FILE`,
and the latency table appended to the GitHub Actions job summary when GITHUB_STEP_SUMMARY is set.
"""

from __future__ import annotations

import shlex
import sys
from typing import Annotated

import typer

from leapkit.cli.options import (
    NON_NEGATIVE_PCT,
    NON_NEGATIVE_SECONDS,
    POSITIVE_SECONDS,
    BudgetOpt,
    FiniteFloat,
    OptionalTargetOpt,
    PrecisionsOpt,
    RuntimesOpt,
    StatOpt,
    split_choices,
)
from leapkit.latency.request import BenchRequest
from leapkit.types import PRECISIONS, RUNTIMES, OrtProvider

DEFAULT = BenchRequest()

ModelArg = Annotated[
    str | None,
    typer.Argument(help="Run directory, export folder, .onnx file, OpenVINO IR (.xml) or TensorRT engine (default: "
                   "runs/latest).",
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
    float, typer.Option("--duration", parser=POSITIVE_SECONDS, metavar="S",
                        help="Timed seconds per format when --iterations is not given.")
]
WarmupOpt = Annotated[
    float, typer.Option("--warmup", parser=NON_NEGATIVE_SECONDS, metavar="S", help="Warm-up seconds per format.")
]
ThreadsOpt = Annotated[
    str | None,
    typer.Option("--threads", help="CPU threads for torch, ONNX Runtime and OpenVINO, or 'auto': the fastest of 1, 2, "
                 "4, ... cores per format (default: the target's, else all cores).", show_default=False),
]
BatchOpt = Annotated[
    int | None, typer.Option("--batch", help="Batch size (default: the target's); with --from-trtexec, the images "
                             "per query of trtexec runs whose files do not state it.", show_default=False)
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Run the PyTorch student through torch.compile.")]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Folder for bench/<target>.json|.md (default: the run, else next to the model; "
                 "with --from-trtexec, the run whose export holds the first file, else beside it).",
                 show_default=False),
]
FromTrtexecOpt = Annotated[
    list[str] | None,
    typer.Option("--from-trtexec", help="Read the target's own trtexec output instead of timing here: a log, its "
                 "--exportTimes/--exportProfile JSON, device.json, or the results folder bench_engine.sh wrote "
                 "(repeatable).", show_default=False),
]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="\\[user@]host[:port] of the device: copy the bundle there over SSH, build, check and "
                 "time the engine, and judge the budget on its figures.", show_default=False),
]
SshOptionOpt = Annotated[
    list[str] | None,
    typer.Option("--ssh-option", help="Extra ssh/scp setting for --host: Key=Value as in ssh_config (e.g. "
                 "IdentityFile=~/.ssh/jetson), or quoted ssh arguments ('-i ~/.ssh/jetson') (repeatable).",
                 show_default=False),
]
RequireMeasuredOpt = Annotated[
    bool,
    typer.Option("--require-measured", help="Exit 1 when the verdict is UNCONFIRMED (no figures from the target "
                 "itself), for CI jobs that must have a device figure."),
]
BaselineOpt = Annotated[
    str | None,
    typer.Option("--baseline", help="An earlier bench/<target>.json of the same target: compare each format's judged "
                 "statistic with it and exit 1 on a slowdown beyond --max-regression and the runs' noise.",
                 show_default=False),
]
MaxRegressionOpt = Annotated[
    float | None,
    typer.Option("--max-regression", parser=NON_NEGATIVE_PCT, metavar="PCT",
                 help="Slowdown allowed against --baseline, in percent (default: 10).", show_default=False),
]
JunitOpt = Annotated[
    str | None,
    typer.Option("--junit", help="Also write JUnit XML here: a test case per format, the budget and regression "
                 "checks as failures with their numbers (pip install 'leapkit\\[ci]').", show_default=False),
]
AllowOtherDeviceOpt = Annotated[
    bool,
    typer.Option("--allow-other-device", help="With --from-trtexec: judge the budget on figures that name another "
                 "device than the target's (otherwise the verdict is UNCONFIRMED)."),
]
BudgetMjOpt = Annotated[
    float | None,
    typer.Option("--budget-mj", parser=FiniteFloat(what="number of mJ"), metavar="MJ",
                 help="Energy budget per inference in mJ (mean board power x mean latency / batch, from the device's "
                      "tegrastats samples; default: the target's energy_budget_mj, if any).", show_default=False),
]
VERDICT_COLOUR = {"PASS": "green", "FAIL": "red", "UNCONFIRMED": "yellow"}


def _runtimes(values: list[str] | None) -> list[str] | None:
    """``--runtime`` values checked; ``all`` (what MODEL has) stays ``["all"]``."""
    chosen = split_choices(values, RUNTIMES, "--runtime")
    given = {v.strip() for raw in values or () for v in raw.split(",")}
    return ["all"] if "all" in given else chosen


def bench_cmd(
    model: ModelArg = None,
    target: OptionalTargetOpt = None,
    budget_ms: BudgetOpt = None,
    budget_mj: BudgetMjOpt = None,
    stat: StatOpt = None,
    runtime: RuntimesOpt = None,
    precision: PrecisionsOpt = None,
    iterations: IterationsOpt = None,
    duration: DurationOpt = DEFAULT.duration_s,
    warmup: WarmupOpt = DEFAULT.warmup_s,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    compile: CompileOpt = DEFAULT.compile,
    ort_provider: OrtProviderOpt = DEFAULT.ort_provider,
    out: OutOpt = None,
    from_trtexec: FromTrtexecOpt = None,
    host: HostOpt = None,
    ssh_option: SshOptionOpt = None,
    require_measured: RequireMeasuredOpt = DEFAULT.require_measured,
    baseline: BaselineOpt = None,
    max_regression: MaxRegressionOpt = None,
    junit: JunitOpt = None,
    allow_other_device: AllowOtherDeviceOpt = DEFAULT.allow_other_device,
) -> None:
    """Measure latency per format, bound it on the target, and judge the budget on the target's own figures.

    Away from the target the timings are shown but not judged: the verdict is UNCONFIRMED, or FAIL
    when even the lower bound misses the budget.
    """
    from rich.console import Console
    from rich.markup import escape

    from leapkit.ci_report import append_step_summary
    from leapkit.latency.bench import bench
    from leapkit.latency.render import latency_table, power_table, summary_markdown

    precisions = split_choices(precision, PRECISIONS, "--precision")
    request = BenchRequest(
        runtimes=_runtimes(runtime), budget_ms=budget_ms, budget_mj=budget_mj, stat=stat,
        precisions=None if precisions == list(PRECISIONS) else precisions, batch=batch, threads=threads,
        warmup_s=warmup, iterations=iterations, duration_s=duration, compile=compile, ort_provider=ort_provider,
        out_dir=out, check=False, from_trtexec=from_trtexec, host=host,
        ssh_options=[arg for item in ssh_option or () for arg in shlex.split(item)], require_measured=require_measured,
        baseline=baseline, max_regression_pct=max_regression, junit=junit, allow_other_device=allow_other_device,
    )
    report = bench(model, target, request)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(latency_table(report).to_rich())
    power = power_table(report)
    if power is not None:
        console.print(power.to_rich())
    console.print(f"evidence: {report.evidence} ({escape(report.evidence_reason)})", highlight=False)
    colour = VERDICT_COLOUR[report.verdict]
    console.print(f"[bold {colour}]{report.verdict}[/]: {escape(report.verdict_reason)}", highlight=False)
    if report.choice:
        console.print(f"judged: {escape(report.choice)}", highlight=False)
    if report.energy_verdict:
        colour = VERDICT_COLOUR[report.energy_verdict]
        console.print(f"[bold {colour}]energy {report.energy_verdict}[/]: {escape(report.energy_verdict_reason or '')}",
                      highlight=False)
    if report.baseline:
        colour = "red" if report.baseline.regressions else "green"
        console.print(f"[{colour}]vs baseline[/] {escape(report.baseline.path)}: {report.baseline.counts()}",
                      highlight=False)
    console.print(f"report: {report.md_path}", highlight=False, markup=False)
    if junit:
        console.print(f"JUnit: {junit}", highlight=False, markup=False)
    summary = append_step_summary(summary_markdown(report))
    if summary:
        console.print(f"job summary: {summary}", highlight=False, markup=False)
    report.check(require_measured)
