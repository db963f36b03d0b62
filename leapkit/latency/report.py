"""bench/<target>.json and .md: the BenchReport record and its tables.

The JSON keys are a contract (scripts and CI read them): ``results`` holds one entry per
runtime/format/precision with ``runtime``, ``format``, ``precision``, ``batch``, ``p50_ms``,
``p90_ms``, ``p99_ms``, ``mean_ms``, ``throughput``, ``cv`` and more; the top level holds
``budget_ms``, ``budget_stat``, ``verdict``, ``verdict_reason``, ``environment`` and more.

The latency and method tables are built once as :class:`leapkit.tables.Table`; the Markdown file,
``leapkit bench``'s terminal output and ``leapkit report`` all render those same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from leapkit.errors import CheckFailed
from leapkit.latency.artifacts import export_failed
from leapkit.latency.cost import ROOFLINE_FORMULA, Roofline
from leapkit.latency.timing import PROBE_S, Method
from leapkit.records import Record
from leapkit.tables import Table, fmt
from leapkit.types import Format, Runtime, Stat, Verdict

LATENCY_COLUMNS = ("format", "precision", "runtime", "status", "size MB", "accuracy %", "p50 ms", "p99 ms", "FPS",
                   "roofline est. ms", "budget", "verdict")
METHOD_COLUMNS = ("format", "threads", "iterations", "min ms", "mean ms", "p90 ms", "p95 ms", "max ms", "cv",
                  "process peak RSS MB", "achieved TFLOP/s at p50", "est. bound")


@dataclass
class BenchResult(Record):
    """One benched format: how it ran and its latency statistics (None where it did not run).

    Keys that only apply to some results (``compiled`` for PyTorch, ``thread_probe_p50_ms`` with
    ``--threads auto``, the runner's ``device``, the statistics of a format that ran) are left out
    of the JSON where they do not apply.
    """

    # the statistics and memory figures of a format that ran
    MEASURED: ClassVar[tuple[str, ...]] = (
        "min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms", "cv", "throughput",
        "iterations", "noisy", "peak_rss_mb", "peak_cuda_mb",
    )
    # written only when set
    OPTIONAL: ClassVar[tuple[str, ...]] = ("thread_probe_p50_ms", "compiled", "device", "providers", "input_shape",
                                           "achieved_tflops")

    runtime: Runtime
    format: Format
    precision: str
    batch: int
    file: str | None = None
    threads: int = 1
    size_mb: float | None = None
    accuracy: float | None = None
    export_status: str = "ok"
    thread_probe_p50_ms: dict[str, float] | None = None
    compiled: bool | None = None
    device: str | None = None
    providers: list[str] | None = None
    input_shape: list[int] | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    throughput: float | None = None
    iterations: int | None = None
    noisy: bool | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    status: str = "ok"
    achieved_tflops: float | None = None
    roofline: Roofline | None = None
    budget_ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        drop = {k for k in self.OPTIONAL if data[k] is None}
        if self.status != "ok":
            drop.update(self.MEASURED)
        return {k: v for k, v in data.items() if k not in drop}

    @property
    def label(self) -> str:
        """``PyTorch eager``, ``ONNX fp16``, ``TensorRT engine int8``: the row name in tables and verdicts."""
        if self.format == "pytorch":
            return "PyTorch (torch.compile)" if self.compiled else "PyTorch eager"
        return {"onnx": f"ONNX {self.precision}", "engine": f"TensorRT engine {self.precision}"}[self.format]

    @property
    def export_failed(self) -> bool:
        return export_failed(self.export_status)

    def stat_ms(self, stat: Stat) -> float | None:
        """The value of a budget statistic (``p99`` -> ``p99_ms``), None when the format did not run."""
        return getattr(self, f"{stat}_ms")


@dataclass
class BenchReport(Record):
    """Everything ``leapkit bench`` measured and decided: the content of bench/<target>.json.

    ``json_path`` is where it was written or read (not part of the JSON).
    """

    target: str
    target_description: str
    model: str
    source_run: str | None
    export_dir: str | None
    input_shape: list[int] | None
    results: list[BenchResult]
    budget_ms: float
    budget_stat: Stat
    budget_source: str
    verdict: Verdict
    verdict_reason: str
    gated: str | None
    method: Method
    roofline_note: str
    warnings: list[str]
    environment: dict[str, Any]
    leapkit_version: str
    created: str
    json_path: Path | None = field(default=None, kw_only=True, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        del data["json_path"]
        return data

    @classmethod
    def load(cls, path: Path) -> BenchReport:
        """Read bench/<target>.json.

        Raises:
            RunError: the file is missing, not JSON, or lacks a required key.
        """
        report = super().load(path)
        report.json_path = Path(path)
        return report

    @property
    def md_path(self) -> Path | None:
        return self.json_path.with_suffix(".md") if self.json_path else None

    def check(self) -> None:
        """Raise CheckFailed when the verdict is FAIL."""
        if self.verdict == "FAIL":
            raise CheckFailed(f"bench verdict FAIL on {self.target}: {self.verdict_reason} (report: {self.md_path})")


def result_verdict(r: BenchResult) -> str:
    """PASS or FAIL of one result against the budget; ``-`` when it did not run."""
    if r.status != "ok":
        return "-"
    return "PASS" if r.budget_ok and not r.export_failed else "FAIL"


def latency_table(report: BenchReport) -> Table:
    """One row per benched format: latency, size, accuracy, roofline estimate and verdict."""
    table = Table.of(*LATENCY_COLUMNS, title=f"Latency on {report.target} (roofline: estimate, not measured)",
                     right=("size MB", "accuracy %", "p50 ms", "p99 ms", "FPS", "roofline est. ms"))
    for c in table.columns:
        c.no_wrap = c.title in ("format", "budget")
    for r in report.results:
        status = r.status.split(":")[0]
        if r.export_status != "ok":
            status += f", export {r.export_status.split(':')[0]}"
        verdict = result_verdict(r)
        table.add(
            r.label, r.precision, r.runtime, status, fmt(r.size_mb), fmt(r.accuracy, ".1f"), fmt(r.p50_ms, ".3f"),
            fmt(r.p99_ms, ".3f"), fmt(r.throughput, ".1f"), fmt(r.roofline.estimate_ms if r.roofline else None, ".3f"),
            f"{report.budget_stat} <= {report.budget_ms:g} ms", verdict,
            style={"PASS": "green", "FAIL": "red"}.get(verdict),
        )
    return table


def method_table(report: BenchReport) -> Table:
    """One row per benched format: threads, iterations, the full statistics, memory and achieved throughput."""
    table = Table.of(*METHOD_COLUMNS, right=METHOD_COLUMNS[2:-1])
    for r in report.results:
        probe = r.thread_probe_p50_ms
        threads = f"{r.threads}"
        if probe:
            threads += " (" + ", ".join(f"{n}: {ms:.3f} ms" for n, ms in probe.items()) + ")"
        table.add(
            r.label, threads, fmt(r.iterations, "d"), fmt(r.min_ms, ".3f"), fmt(r.mean_ms, ".3f"), fmt(r.p90_ms, ".3f"),
            fmt(r.p95_ms, ".3f"), fmt(r.max_ms, ".3f"), fmt(r.cv, ".3f"), fmt(r.peak_rss_mb, ".0f"),
            fmt(r.achieved_tflops, ".4f"), r.roofline.bound if r.roofline else "-",
        )
    return table


def method_sentence(m: Method) -> str:
    """How every format was timed, in one sentence."""
    if m.iterations:
        runs = f"{m.iterations} iterations"
    else:
        runs = f"{m.duration_s:g} s (at least {m.min_iterations} iterations)"
    if m.thread_candidates:
        threads = (f"CPU threads chosen per format: each of {', '.join(map(str, m.thread_candidates))} timed for "
                   f"{PROBE_S:g} s (p50 in brackets), the fastest measured")
    else:
        threads = f"{m.threads} CPU threads"
    return f"Warm-up {m.warmup_s:g} s, then {runs}; {threads}; timer: {m.timer}."


def render_markdown(report: BenchReport) -> str:
    """bench/<target>.md: the latency table, the verdict, the method and the environment."""
    env = report.environment
    shape = f", input {'x'.join(map(str, report.input_shape))}" if report.input_shape else ""
    lines = [
        f"# Latency on {report.target}",
        "",
        f"{report.target_description}. Model: `{report.model}`{shape}.",
        "",
        latency_table(report).to_markdown(),
        "",
        f"**Verdict: {report.verdict}** ({report.verdict_reason}); budget from {report.budget_source}.",
        "",
        "Latencies are measured on the machine below, one synchronous inference per sample. "
        f"The roofline column is an *estimate* for the target, not a measurement: {ROOFLINE_FORMULA}, "
        "at peak clocks and with no launch overheads.",
    ]
    if report.warnings:
        lines += ["", "Warnings:", *[f"- {w}" for w in report.warnings]]
    lines += ["", "## Method", "", method_sentence(report.method), "", method_table(report).to_markdown()]
    gpu = env.get("gpu") or {}
    flags = ", ".join(env["cpu_flags"]) or "no SIMD flags read"
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu']} ({env['cpu_cores']} cores, {env.get('cpu_affinity')} usable; {flags}); "
        f"load average {fmt(env.get('load_avg_1m'), '.1f')}",
        f"- GPU: {gpu.get('name', 'none')}" + (f", driver {gpu.get('driver')}, CUDA {gpu.get('cuda')}" if gpu else ""),
        f"- torch {env['torch']}, onnxruntime {env.get('onnxruntime')}, "
        f"tensorrt {env.get('tensorrt') or 'not installed'}, leapkit {env['leapkit']}; "
        f"{env['os']}, Python {env['python']}",
    ]
    if env.get("jetson"):
        j = env["jetson"]
        lines.append(f"- Jetson: {j.get('model')}, {j.get('l4t')}, power mode {j.get('power_mode')} "
                     f"(id {j.get('power_mode_id')}), GPU {j.get('gpu_freq_mhz')} MHz")
    return "\n".join(lines) + "\n"
