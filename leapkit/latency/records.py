"""bench/<target>.json as records: BenchReport, its BenchResults, and its comparison with a baseline.

The JSON keys are a contract (scripts and CI read them): ``results`` holds one entry per
runtime/format/precision with ``runtime``, ``format``, ``precision``, ``batch``, ``p50_ms``,
``p90_ms``, ``p99_ms``, ``mean_ms``, ``throughput`` (images/s), ``cv`` (``gpu_compute_ms``, ``qps``,
``batch_source``, ``latency_of`` and ``run_label`` when read from trtexec), ``roofline`` (the lower bound
on the target), ``predicted_ms``, ``predicted_range_ms``
[low, high] and ``prediction_source`` (the target's latency model, :mod:`leapkit.latency.forecast`;
null where it cannot read the model) and more; the top level holds ``budget_ms``, ``budget_stat``,
``evidence`` (measured | imported | estimated) with ``evidence_reason`` and ``measured_on``,
``verdict`` (PASS | FAIL | UNCONFIRMED), ``verdict_reason``, ``gated`` (the judged result's label) with
``choice`` (why it was judged, for a target that chooses the fastest variant), ``environment`` and more; ``baseline``
(with ``--baseline``) holds each result against an earlier report (:class:`Comparison`, made by
:mod:`leapkit.latency.regression`).

The records only hold and check; :mod:`leapkit.latency.render` turns them into tables and Markdown.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from leapkit import __version__
from leapkit.device.tegrastats import PowerSummary
from leapkit.errors import CheckFailed
from leapkit.latency.artifacts import export_failed
from leapkit.latency.cost import ROOFLINE_NOTE, Roofline
from leapkit.latency.timing import Method
from leapkit.records import Record
from leapkit.types import Evidence, Format, Runtime, Stat, Verdict

if TYPE_CHECKING:
    from leapkit.profiles import TargetProfile

Change = Literal["faster", "same", "slower", "within noise", "regressed", "new", "not compared"]
"""One result against its baseline; ``new``: the baseline has no such result, ``not compared``: a figure is missing."""

NOISE_K = 2.0
"""The noise band is this many standard errors of the difference (:mod:`leapkit.latency.regression`)."""
EFFECTIVE_SAMPLES = 100
"""The most samples one run counts towards its standard error (:mod:`leapkit.latency.regression`)."""


@dataclass
class RowChange(Record):
    """One result of the new report against the same result in the baseline.

    Args:
        label: the result's row name (``ONNX fp32``).
        runtime: its runtime.
        format: its file format.
        precision: its precision.
        batch: its batch size.
        before_ms: the baseline's statistic (None: no such result, or not recorded).
        now_ms: this run's statistic (None: the format did not run).
        change_pct: ``100 (now / before - 1)``.
        noise_pct: the noise band, +-percent.
        change: the verdict.
        run_label: what tells the result apart from others of the same runtime, format, precision and batch
            (imported trtexec runs); None for most results.
    """

    label: str
    runtime: Runtime
    format: Format
    precision: str
    batch: int
    before_ms: float | None
    now_ms: float | None
    change_pct: float | None
    noise_pct: float | None
    change: Change
    run_label: str | None = None

    def cell(self) -> str:
        """The table's "vs baseline" cell: ``+3.1% within noise (+-6.2%)``."""
        if self.change_pct is None:
            return self.change
        noise = f" (±{self.noise_pct:.1f}%)" if self.noise_pct else ""
        return f"{self.change_pct:+.1f}% {self.change}{noise}"

    def describe(self, stat: Stat, max_regression_pct: float) -> str:
        """The numbers behind a regression, for error messages and JUnit failures."""
        return (f"{self.label} {stat} {self.now_ms:.3f} ms vs {self.before_ms:.3f} ms in the baseline "
                f"({self.change_pct:+.1f}% > {max_regression_pct:g}% allowed; noise ±{self.noise_pct or 0:.1f}%)")


@dataclass
class Comparison(Record):
    """A bench report against its baseline: the ``baseline`` key of bench/<target>.json.

    Args:
        path: the baseline file as given.
        created: when the baseline was benched.
        evidence: the baseline's evidence kind.
        stat: the statistic compared (this report's ``budget_stat``).
        max_regression_pct: the slowdown allowed beyond the noise.
        noise_k: standard errors of the difference in the noise band.
        effective_samples: the cap on the samples a run counts.
        rows: one per result of this report, in its order.
        warnings: what makes the two runs less comparable (environment, noise wider than the threshold).
        notes: what else the comparison should say (host timings, results left out, unknown noise).
    """

    path: str
    created: str
    evidence: Evidence
    stat: Stat
    max_regression_pct: float
    noise_k: float = NOISE_K
    effective_samples: int = EFFECTIVE_SAMPLES
    rows: list[RowChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[RowChange]:
        return [r for r in self.rows if r.change == "regressed"]

    def row(self, r: BenchResult) -> RowChange | None:
        """The comparison of result ``r`` (matched by :func:`result_key`)."""
        return next((c for c in self.rows if result_key(c) == result_key(r)), None)

    def counts(self) -> str:
        """``1 regressed, 2 within noise``: how many results got each verdict."""
        seen: dict[str, int] = {}
        for r in self.rows:
            seen[r.change] = seen.get(r.change, 0) + 1
        return ", ".join(f"{n} {change}" for change, n in seen.items()) or "no results"

    def failure(self) -> str | None:
        """The regressions in one line, or None when there is none."""
        if not self.regressions:
            return None
        return "; ".join(r.describe(self.stat, self.max_regression_pct) for r in self.regressions)


def result_key(r: BenchResult | RowChange) -> tuple[str, str, str, int, str | None]:
    """What pairs a result with the same result of another report: runtime, format, precision, batch and run label.

    The run label tells apart imported trtexec runs of one engine (end-to-end and GPU compute only, or labelled
    runs); results without one (None) pair with each other, so reports written before the label pair as before.
    """
    return r.runtime, r.format, r.precision, r.batch, r.run_label


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
                                           "achieved_tflops", "gpu_compute_ms", "timing", "qps", "batch_source",
                                           "latency_of", "run_label", "power", "energy_mj",
                                           "energy_above_idle_mj")

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
    gpu_compute_ms: dict[str, float | None] | None = None
    # trtexec's own figures (leapkit.latency.imported): its queries per second (``throughput`` is images/s, qps x
    # batch), where the batch was read ("batch not stated, assumed 1: pass --batch N" when nowhere), whether the
    # latency statistics are the host latency or, in an excerpt without it, the GPU compute time, and what tells
    # the run apart from others of the same precision
    qps: float | None = None
    batch_source: str | None = None
    latency_of: str | None = None
    run_label: str | None = None
    # what a GPU runner's timed figure includes (device-resident I/O or not); None on the CPU
    timing: str | None = None
    roofline: Roofline | None = None
    budget_ok: bool | None = None  # None: not judged (timed away from the target, or off its device)
    # the target's latency model (leapkit.latency.forecast); None where it cannot read the model; never judged
    predicted_ms: float | None = None
    predicted_range_ms: list[float] | None = None
    prediction_source: str | None = None
    # where tegrastats ran on the device: the timing run's power, and energy per inference (mJ, mean board power x
    # mean latency / batch; above the idle baseline where one was recorded)
    power: PowerSummary | None = None
    energy_mj: float | None = None
    energy_above_idle_mj: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        drop = {k for k in self.OPTIONAL if data[k] is None}
        if self.status != "ok":
            drop.update(self.MEASURED)
        return {k: v for k, v in data.items() if k not in drop}

    @property
    def label(self) -> str:
        """``PyTorch eager``, ``ONNX fp16``, ``OpenVINO bf16``, ``TensorRT engine int8``: the row name in tables and
        verdicts."""
        if self.format == "pytorch":
            return "PyTorch (torch.compile)" if self.compiled else "PyTorch eager"
        name = {"onnx": f"ONNX {self.precision}", "openvino": f"OpenVINO {self.precision}",
                "engine": f"TensorRT engine {self.precision}"}[self.format]
        return f"{name} ({self.run_label})" if self.run_label else name

    @property
    def export_failed(self) -> bool:
        return export_failed(self.export_status)

    def stat_ms(self, stat: Stat) -> float | None:
        """The value of a budget statistic (``p99`` -> ``p99_ms``), None when the format did not run."""
        return getattr(self, f"{stat}_ms")

    def add_power(self, power: PowerSummary | None) -> None:
        """Keep the power sampled during this result's timing run and its energy per inference at ``mean_ms``."""
        self.power = power
        self.energy_mj, self.energy_above_idle_mj = power.energy(self.mean_ms, self.batch) if power else (None, None)

    @property
    def measured_over_predicted(self) -> float | None:
        """p50 over the prediction (None without both)."""
        return self.p50_ms / self.predicted_ms if self.p50_ms is not None and self.predicted_ms else None


@dataclass
class BenchReport(Record):
    """Everything ``leapkit bench`` measured and decided: the content of bench/<target>.json.

    ``baseline`` is written only when there is one. ``json_path`` is where it was written or read, and
    ``sections`` the Markdown appended to bench/<target>.md (trtexec's per-layer profile); neither is
    part of the JSON.
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
    evidence: Evidence
    evidence_reason: str
    measured_on: str
    verdict: Verdict
    verdict_reason: str
    gated: str | None
    method: Method | None
    roofline_note: str
    warnings: list[str]
    environment: dict[str, Any]
    leapkit_version: str
    created: str
    baseline: Comparison | None = None
    choice: str | None = None  # which result the verdict judges and why, for a target that chooses the fastest
    # the energy budget per inference (profile energy_budget_mj or --budget-mj) and its verdict; absent without one
    energy_budget_mj: float | None = None
    energy_budget_source: str | None = None
    energy_verdict: Verdict | None = None
    energy_verdict_reason: str | None = None
    json_path: Path | None = field(default=None, kw_only=True, compare=False, repr=False)
    sections: list[str] = field(default_factory=list, kw_only=True, compare=False, repr=False)

    @classmethod
    def of(
        cls, profile: TargetProfile, results: list[BenchResult], budget: Budget, provenance: Provenance,
        decision: Decision, *, model: str, warnings: list[str], method: Method | None = None,
        files: tuple[Path | None, Path | None] = (None, None), choice: str | None = None,
    ) -> BenchReport:
        """The report of ``results`` for ``profile``, stamped with this leapkit and the time.

        Args:
            profile: the target.
            results: every benched format.
            budget: the budget judged.
            provenance: where the figures come from.
            decision: the verdict on them.
            model: what the report names as the model.
            warnings: what makes the figures less trustworthy.
            method: how every format was timed here (None: by trtexec on the device).
            files: the run and the export folder benched, where known.
            choice: which result the verdict judges and why, for a target that chooses the fastest.
        """
        run_dir, export_dir = files
        return cls(
            target=profile.name, target_description=profile.description, model=model,
            source_run=str(run_dir) if run_dir else None, export_dir=str(export_dir) if export_dir else None,
            input_shape=next((r.input_shape for r in results if r.input_shape), None), results=results,
            budget_ms=budget.ms, budget_stat=budget.stat, budget_source=budget.source,
            energy_budget_mj=budget.mj, energy_budget_source=budget.mj_source if budget.mj is not None else None,
            energy_verdict=(decision.energy or _UNJUDGED)[0] if budget.mj is not None else None,
            energy_verdict_reason=(decision.energy or _UNJUDGED)[1] if budget.mj is not None else None,
            evidence=provenance.evidence, evidence_reason=provenance.reason, measured_on=provenance.measured_on,
            verdict=decision.verdict, verdict_reason=decision.reason,
            gated=decision.gated.label if decision.gated else None, choice=choice, method=method,
            roofline_note=ROOFLINE_NOTE, warnings=warnings, environment=provenance.environment,
            leapkit_version=__version__, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        del data["json_path"], data["sections"]
        for key in ("baseline", "choice", "energy_budget_mj", "energy_budget_source", "energy_verdict",
                    "energy_verdict_reason"):
            if data[key] is None:
                del data[key]
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

    def check(self, require_measured: bool = False) -> None:
        """Raise CheckFailed when the verdict is FAIL, or UNCONFIRMED and ``require_measured`` is set, or a
        result regressed against the baseline; every failed check in the one message."""
        failed = []
        if self.verdict == "FAIL":
            failed.append(f"bench verdict FAIL on {self.target}: {self.verdict_reason}")
        elif self.verdict == "UNCONFIRMED" and require_measured:
            failed.append(
                f"bench verdict UNCONFIRMED on {self.target} and --require-measured is set: {self.evidence_reason}; "
                f"bench on the device (--host) or import its trtexec output (--from-trtexec)"
            )
        regression = self.baseline.failure() if self.baseline else None
        if self.energy_verdict == "FAIL":
            failed.append(f"energy verdict FAIL on {self.target}: {self.energy_verdict_reason}")
        elif self.energy_verdict == "UNCONFIRMED" and require_measured:
            failed.append(f"energy verdict UNCONFIRMED on {self.target} and --require-measured is set: "
                          f"{self.energy_verdict_reason}")
        if self.baseline and regression:
            failed.append(f"latency regression on {self.target} against {self.baseline.path}: {regression}")
        if failed:
            raise CheckFailed(f"{'; and '.join(failed)} (report: {self.md_path})")

    @property
    def judged_here(self) -> bool:
        """Whether the figures are the target's own (measured on it or imported from it)."""
        return self.evidence != "estimated"


@dataclass(frozen=True)
class Budget:
    """The budgets a report judges: latency (its value, the statistic judged, where it came from) and energy.

    Args:
        ms: the latency budget in milliseconds.
        stat: the statistic judged against it.
        source: ``--budget-ms`` or ``profile <name>``.
        mj: the energy budget per inference in millijoules; None: none.
        mj_source: ``--budget-mj`` or ``profile <name>``.
    """

    ms: float
    stat: Stat
    source: str
    mj: float | None = None
    mj_source: str = ""

    @classmethod
    def of(cls, profile: TargetProfile, budget_ms: float | None = None, stat: Stat | None = None,
           budget_mj: float | None = None) -> Budget:
        """The profile's budgets and statistic, each unless given."""
        mj = profile.energy_budget_mj if budget_mj is None else budget_mj
        return cls(float(profile.latency_budget_ms if budget_ms is None else budget_ms), stat or profile.budget_stat,
                   "--budget-ms" if budget_ms is not None else f"profile {profile.name}",
                   float(mj) if mj is not None else None,
                   "--budget-mj" if budget_mj is not None else f"profile {profile.name}")


class Provenance(NamedTuple):
    """Where a report's figures come from.

    Args:
        evidence: measured (on the target), imported (its trtexec output) or estimated (timed elsewhere).
        reason: why, in one line.
        measured_on: the machine the figures were taken on.
        environment: its fingerprint (:func:`leapkit.latency.machine.environment`, or the device's for trtexec).
    """

    evidence: Evidence
    reason: str
    measured_on: str
    environment: dict[str, Any]


class Decision(NamedTuple):
    """The budget verdict (:func:`leapkit.latency.verdict.decide`): PASS, FAIL or UNCONFIRMED, why, and the result
    judged; ``energy``: the energy budget's verdict and why (:func:`leapkit.latency.verdict.decide_energy`), None
    where it was not judged."""

    verdict: Verdict
    reason: str
    gated: BenchResult | None
    energy: tuple[Verdict, str] | None = None


_UNJUDGED: tuple[Verdict, str] = ("UNCONFIRMED", "no power was sampled on the device for this report (tegrastats "
                                                 "runs with bench --host, or comes back in the results folder "
                                                 "bench_engine.sh writes on a Jetson)")
