"""Each result against the same result in an earlier bench report: faster, same, slower, within noise or regressed.

    load_baseline(path) -> BenchReport                             a bench/<target>.json, else one ConfigError line
    compare(report, baseline, path, max_regression_pct) -> Comparison   recorded under ``baseline`` in the new report

Results pair up by runtime, format, precision, batch and run label (imported trtexec runs of one engine; a
result without one pairs with one without) (the target is the same: bench refuses a baseline
of another target), and the statistic judged against the budget (``budget_stat``, p99 by default) is
compared: the change is ``d = now / before - 1``.

The noise band. A run's statistic has the standard error ``q * sigma / sqrt(n)``, taken relative to
the statistic: ``sigma`` is the spread of the run's samples, its coefficient of variation times its
mean (``cv * mean``), ``n`` its timed iterations and ``q`` the standard error of the statistic in units
of ``sigma / sqrt(n)`` for normal samples: 1 for the mean, ``sqrt(p (1 - p)) / phi(z_p)`` for the
p-quantile (1.25 at p50, 3.73 at p99), p99's for min and max. A few stalls far beyond p99 inflate the
cv without making p50 or p99 any noisier, so ``sigma`` is at most the normal-equivalent spread of the
quantiles, ``(p99 - p50) / 2.33``. The samples of one run are not independent (clocks, caches and
neighbours drift over seconds) and a second run meets the machine in another state, so ``n`` counts at
most :data:`EFFECTIVE_SAMPLES`: without that cap a long run would call any drift a change. The band is
:data:`NOISE_K` standard errors of the difference, ``2 sqrt(se_now^2 + se_before^2)``; on a machine
whose cv is 10% that is about +-3.5% for p50 and +-8.6% for p99, so a 3% change there is within noise.

    same          |d| < SAME_PCT (1%)
    within noise  |d| <= band: the noise cannot tell this change from none
    faster        d < -band
    slower        band < d <= max regression
    regressed     d > band and d > max regression: the check fails (exit 1)

A band wider than the allowed regression is a warning (a regression of that size would read as within
noise), and so is every difference of environment: evidence kind, CPU, GPU, TensorRT, ONNX Runtime,
torch, power mode, and per result the threads, device and providers. A run that recorded no cv or no
iteration count adds no noise to the band; the notes say so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

from leapkit.errors import ConfigError, RunError
from leapkit.latency.records import (
    EFFECTIVE_SAMPLES,
    NOISE_K,
    BenchReport,
    BenchResult,
    Change,
    Comparison,
    RowChange,
    result_key,
)
from leapkit.types import Stat

DEFAULT_MAX_REGRESSION_PCT = 10.0
SAME_PCT = 1.0
_QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
_Z99 = NormalDist().inv_cdf(0.99)
_HINT = "pass a bench/<target>.json that an earlier `leapkit bench` wrote"


def stat_error_factor(stat: Stat) -> float:
    """``q``: the standard error of ``stat`` in units of sigma / sqrt(n), for normal samples."""
    if stat == "mean":
        return 1.0
    p = _QUANTILES.get(stat, 0.99)  # min and max are at least as noisy as p99
    normal = NormalDist()
    return math.sqrt(p * (1 - p)) / normal.pdf(normal.inv_cdf(p))


def spread_ms(r: BenchResult) -> float | None:
    """The spread of ``r``'s samples in ms: cv x mean, at most the normal-equivalent spread of p50..p99."""
    if r.cv is None or r.mean_ms is None:
        return None
    sigma = r.cv * r.mean_ms
    if r.p50_ms is not None and r.p99_ms is not None:
        sigma = min(sigma, max(r.p99_ms - r.p50_ms, 0.0) / _Z99)
    return sigma


def relative_error(r: BenchResult, stat: Stat) -> float | None:
    """The standard error of ``r``'s ``stat`` relative to it; None when the run recorded no cv or iteration count."""
    sigma, value = spread_ms(r), r.stat_ms(stat)
    if sigma is None or not r.iterations or not value:
        return None
    return stat_error_factor(stat) * sigma / math.sqrt(min(r.iterations, EFFECTIVE_SAMPLES)) / value


def classify(change_pct: float, noise_pct: float, max_regression_pct: float) -> Change:
    """The verdict for a change of ``change_pct`` percent with a noise band of +-``noise_pct`` percent."""
    if abs(change_pct) < SAME_PCT:
        return "same"
    if abs(change_pct) <= noise_pct:
        return "within noise"
    if change_pct < 0:
        return "faster"
    return "regressed" if change_pct > max_regression_pct else "slower"


def load_baseline(path: str | Path) -> BenchReport:
    """Read the bench report to compare with.

    Raises:
        ConfigError: the file is missing, not JSON, or not a bench report (one line naming the problem).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--baseline {p}: no such file; {_HINT}")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--baseline {p} is not JSON ({e}); {_HINT}") from e
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ConfigError(f"--baseline {p} has no list of results: it is not a bench report; {_HINT}")
    try:
        report = BenchReport.from_dict(data)
    except RunError as e:
        raise ConfigError(f"--baseline {p} is not a bench report this leapkit reads "
                          f"({str(e).split(';')[0]}); {_HINT}") from e
    report.json_path = p
    return report


def compare(report: BenchReport, baseline: BenchReport, path: str | Path, max_regression_pct: float) -> Comparison:
    """Compare every result of ``report`` with the same result in ``baseline``.

    Args:
        report: this run.
        baseline: the earlier run (:func:`load_baseline`).
        path: where the baseline was read from, as given (recorded).
        max_regression_pct: the slowdown allowed beyond the noise band, in percent.
    """
    stat = report.budget_stat
    before: dict[tuple[str, str, str, int, str | None], list[BenchResult]] = {}
    for b in baseline.results:
        before.setdefault(result_key(b), []).append(b)
    out = Comparison(path=str(path), created=baseline.created, evidence=baseline.evidence, stat=stat,
                     max_regression_pct=max_regression_pct, warnings=environment_differences(report, baseline))
    for r in report.results:
        same = before.get(result_key(r))
        old = same.pop(0) if same else None
        row = _compare_row(r, old, stat, max_regression_pct)
        out.rows.append(row)
        if old is None:
            continue
        out.warnings += setting_differences(r, old)
        if row.noise_pct is not None and row.noise_pct > max_regression_pct:
            out.warnings.append(
                f"{r.label}: the noise band of {stat} (±{row.noise_pct:.1f}%) is wider than the allowed "
                f"{max_regression_pct:g}% regression, which would read as within noise; bench longer (--duration) "
                "or on a quieter machine")
        unknown = [who for who, x in (("this run", r), ("the baseline", old)) if relative_error(x, stat) is None]
        if unknown and row.change_pct is not None:
            out.notes.append(f"{r.label}: {' and '.join(unknown)} recorded no cv or iteration count; its figure "
                             "is taken as exact")
    out.notes += [f"{b.label} (batch {b.batch}) of the baseline was not benched this time"
                  for left in before.values() for b in left]
    if report.evidence == "estimated":
        out.notes.append(f"both are timings of this host, not of {report.target} (evidence estimated): the "
                         f"comparison says whether the model got slower here, not on {report.target}")
    return out


def _compare_row(r: BenchResult, old: BenchResult | None, stat: Stat, max_regression_pct: float) -> RowChange:
    now = r.stat_ms(stat)
    then = old.stat_ms(stat) if old is not None else None
    row = RowChange(label=r.label, runtime=r.runtime, format=r.format, precision=r.precision, batch=r.batch,
                    before_ms=then, now_ms=now, change_pct=None, noise_pct=None,
                    change="new" if old is None else "not compared", run_label=r.run_label)
    if old is None or now is None or then is None or then <= 0:
        return row
    errors = [e for e in (relative_error(r, stat), relative_error(old, stat)) if e is not None]
    row.change_pct = 100.0 * (now / then - 1)
    row.noise_pct = 100.0 * NOISE_K * math.sqrt(sum(e * e for e in errors))
    row.change = classify(row.change_pct, row.noise_pct, max_regression_pct)
    return row


def fingerprint(report: BenchReport) -> dict[str, str | None]:
    """What a comparison should find equal in both runs' machines, by name."""
    env = report.environment
    if env.get("source") == "trtexec":
        device = env.get("fingerprint") or {}
        return {"device": env.get("device"), "TensorRT": env.get("tensorrt"),
                "power mode": (device.get("jetson") or {}).get("power_mode")}
    return {"CPU": env.get("cpu"), "GPU": (env.get("gpu") or {}).get("name"), "TensorRT": env.get("tensorrt"),
            "ONNX Runtime": env.get("onnxruntime"), "torch": env.get("torch"),
            "power mode": (env.get("jetson") or {}).get("power_mode")}


def environment_differences(report: BenchReport, baseline: BenchReport) -> list[str]:
    """One warning per difference between the two runs' evidence and machines (only what both recorded)."""
    out = []
    if report.evidence != baseline.evidence:
        out.append(f"the baseline's evidence is {baseline.evidence}, this run's {report.evidence}: "
                   "the figures come from different places")
    then, now = fingerprint(baseline), fingerprint(report)
    for name, value in now.items():
        old = then.get(name)
        if value and old and value != old:
            out.append(f"another {name} than the baseline's: {value!r} now, {old!r} in the baseline")
    return out


def setting_differences(r: BenchResult, old: BenchResult) -> list[str]:
    """One warning per setting of a result that differs from the baseline's: threads, device, providers."""
    out = []
    for name, now, then in (("threads", r.threads, old.threads), ("device", r.device, old.device),
                            ("providers", r.providers, old.providers), ("torch.compile", r.compiled, old.compiled)):
        if now is not None and then is not None and now != then:
            out.append(f"{r.label}: {name} {now} now, {then} in the baseline")
    return out
