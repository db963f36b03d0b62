"""The budget verdict: which result is judged, PASS or FAIL with its reason, and the warnings beside it.

The verdict judges one result against ``budget_ms`` on ``budget_stat`` (p99 by default): the
result in the target's own runtime and default precision when it was benched, otherwise the
fastest result in the target's runtime, otherwise the fastest result (see :func:`gated_result`).
A format the export marked as failed fails the verdict whatever its latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leapkit.errors import ConfigError
from leapkit.latency.report import BenchResult
from leapkit.latency.timing import NOISY_CV
from leapkit.profiles import TargetProfile
from leapkit.types import STATS, Stat, Verdict


def stat_key(stat: str) -> str:
    """The results key for a budget statistic (``p99`` -> ``p99_ms``).

    Raises:
        ConfigError: ``stat`` is not one of :data:`leapkit.types.STATS`.
    """
    if stat not in STATS:
        raise ConfigError(f"unknown statistic '{stat}'; use one of {', '.join(STATS)}")
    return f"{stat}_ms"


def gated_result(results: Sequence[BenchResult], profile: TargetProfile, stat: Stat) -> BenchResult | None:
    """The result the verdict judges.

    The target's own runtime at its default precision when benched; else the fastest result in the
    target's runtime; else the fastest result of all. Results that did not run are skipped, but a
    failed export (parity) of the chosen format still fails the verdict.

    Args:
        results: every benched format.
        profile: the target.
        stat: the statistic judged.
    """
    ran = [r for r in results if r.stat_ms(stat) is not None]
    if not ran:
        return None
    exact = [r for r in ran if r.runtime == profile.runtime and r.precision == profile.precision]
    same_runtime = [r for r in ran if r.runtime == profile.runtime]
    return min(exact or same_runtime or ran, key=lambda r: r.stat_ms(stat))


def decide(
    results: Sequence[BenchResult], profile: TargetProfile, budget_ms: float, stat: Stat
) -> tuple[Verdict, str, BenchResult | None]:
    """PASS or FAIL, the reason in one line, and the result that was judged (see :func:`gated_result`).

    Args:
        results: every benched format.
        profile: the target.
        budget_ms: the latency budget.
        stat: the statistic judged against it.
    """
    gated = gated_result(results, profile, stat)
    if gated is None:
        failures = "; ".join(f"{r.label} {r.status}" for r in results)
        return "FAIL", f"no format ran ({failures})", None
    value = gated.stat_ms(stat)
    assert value is not None  # gated_result only picks results that ran
    within = value <= budget_ms
    reasons = [f"{gated.label} ({gated.runtime}) {stat} {value:.3f} ms {'<=' if within else '>'} {budget_ms:g} ms"]
    if gated.export_failed:
        reasons.append(f"the export marked it as {gated.export_status}")
    if gated.runtime != profile.runtime:
        reasons.append(f"measured with {gated.runtime}, not the target's {profile.runtime}")
    return ("PASS" if within and not gated.export_failed else "FAIL"), "; ".join(reasons), gated


def warnings(results: Sequence[BenchResult], env: dict[str, Any]) -> list[str]:
    """What makes the figures less trustworthy: formats that failed, export failures, noise, CPU load.

    Args:
        results: every benched format.
        env: the machine's fingerprint (:func:`leapkit.latency.machine.environment`).
    """
    out = [f"{r.label}: {r.status}" for r in results if r.status != "ok"]
    out += [f"{r.label}: the export marked it as {r.export_status}" for r in results if r.export_failed]
    out += [f"{r.label}: cv {r.cv:.2f} > {NOISY_CV}: the machine is too noisy to trust the tail latency"
            for r in results if r.noisy and r.cv is not None]
    load, cores = env.get("load_avg_1m"), env.get("cpu_affinity")
    if load and cores and load > cores:
        out.append(f"load average {load:.1f} exceeds the {cores} usable cores: other processes competed for the CPU")
    return out
