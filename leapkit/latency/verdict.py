"""The budget verdict: which result is judged, PASS, FAIL or UNCONFIRMED with its reason, and the warnings.

A budget is judged only on the target's own figures (evidence ``measured`` or ``imported``): the
verdict compares one result with ``budget_ms`` on ``budget_stat`` (p99 by default), the result in
the target's own runtime and default precision when it was benched, otherwise the fastest result
in the target's runtime, otherwise the fastest result (see :func:`gated_result`). A target whose
profile says ``choose: fastest`` is judged on the fastest result whose export checks passed, among
its runtimes and precisions, and :func:`choice_reason` says so in one line. A format the export
marked as failed fails the verdict whatever its latency.

Away from the target (evidence ``estimated``) another machine's timings are never judged: the
verdict is UNCONFIRMED, unless even the lower bound on the target (:mod:`leapkit.latency.cost`)
exceeds the budget, which is a certain FAIL.

An energy budget (mJ per inference) is judged the same way on the same result
(:func:`decide_energy`): PASS or FAIL on the energy from the device's own tegrastats samples (mean
board power x mean latency / batch, the board's whole draw, not the part above idle), UNCONFIRMED
where no power was sampled or the figures are not the target's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from leapkit.errors import ConfigError
from leapkit.latency.records import BenchResult
from leapkit.latency.timing import NOISY_CV
from leapkit.profiles import TargetProfile
from leapkit.types import STATS, Evidence, Stat, Verdict


def stat_key(stat: str) -> str:
    """The results key for a budget statistic (``p99`` -> ``p99_ms``).

    Raises:
        ConfigError: ``stat`` is not one of :data:`leapkit.types.STATS`.
    """
    if stat not in STATS:
        raise ConfigError(f"unknown statistic '{stat}'; use one of {', '.join(STATS)}")
    return f"{stat}_ms"


def runs_on_target(r: BenchResult, profile: TargetProfile) -> bool:
    """Whether ``r`` ran on the kind of processor the target deploys on (its GPU, or its CPU)."""
    on_gpu = r.runtime == "tensorrt" or (r.device or "").startswith("cuda")
    return not on_gpu if profile.family == "cpu" else on_gpu


def choice_pool(results: Sequence[BenchResult], profile: TargetProfile) -> list[BenchResult]:
    """What a target that chooses the fastest variant chooses among: its runtimes and precisions, export checks
    passed."""
    return [r for r in results
            if r.runtime in profile.deploy_runtimes and r.precision in profile.precisions and not r.export_failed]


def _preferred(
    results: Sequence[BenchResult], profile: TargetProfile, key: Callable[[BenchResult], float]
) -> BenchResult | None:
    """The smallest ``key`` of the target's choice pool (``choose: fastest``; ties go to the preferred runtime), else
    of the target's runtime at its precision, else of its runtimes, else of any."""
    if not results:
        return None
    pool = choice_pool(results, profile) if profile.choose == "fastest" else []
    if pool:
        order = profile.deploy_runtimes
        return min(pool, key=lambda r: (key(r), order.index(r.runtime)))
    exact = [r for r in results if r.runtime == profile.runtime and r.precision == profile.precision]
    same_runtime = [r for r in results if r.runtime in profile.deploy_runtimes]
    return min(exact or same_runtime or results, key=key)


def gated_result(results: Sequence[BenchResult], profile: TargetProfile, stat: Stat) -> BenchResult | None:
    """The result the verdict judges.

    With ``choose: fastest``: the fastest result whose export checks passed, among the target's
    runtimes and precisions. Otherwise (or when none passed): the target's own runtime at its default
    precision when benched; else the fastest result in the target's runtimes; else the fastest result
    of all. Results that did not run are skipped, but a failed export (parity) of the chosen format
    still fails the verdict.

    Args:
        results: every benched format.
        profile: the target.
        stat: the statistic judged.
    """
    ran = [r for r in results if r.stat_ms(stat) is not None]
    return _preferred(ran, profile, lambda r: r.stat_ms(stat) or 0.0)


def decide(
    results: Sequence[BenchResult], profile: TargetProfile, budget_ms: float, stat: Stat,
    evidence: Evidence = "measured",
) -> tuple[Verdict, str, BenchResult | None]:
    """The verdict, its reason in one line, and the result that was judged.

    Args:
        results: every benched format.
        profile: the target.
        budget_ms: the latency budget.
        stat: the statistic judged against it.
        evidence: where the figures come from; ``estimated`` judges only the lower bound.
    """
    if evidence == "estimated":
        return decide_on_bound(results, profile, budget_ms)
    judged = [r for r in results if runs_on_target(r, profile)]
    gated = gated_result(judged, profile, stat)
    if gated is None:
        failures = "; ".join(f"{r.label} {r.status}" for r in judged or results)
        return "FAIL", f"no format ran on {profile.name} ({failures})", None
    value = gated.stat_ms(stat)
    assert value is not None  # gated_result only picks results that ran
    within = value <= budget_ms
    reasons = [f"{gated.label} ({gated.runtime}) {stat} {value:.3f} ms {'<=' if within else '>'} {budget_ms:g} ms"]
    if gated.export_failed:
        reasons.append(f"the export marked it as {gated.export_status}")
    if gated.runtime not in profile.deploy_runtimes:
        reasons.append(f"measured with {gated.runtime}, not the target's {'/'.join(profile.deploy_runtimes)}")
    return ("PASS" if within and not gated.export_failed else "FAIL"), "; ".join(reasons), gated


def choice_reason(
    results: Sequence[BenchResult], profile: TargetProfile, stat: Stat, evidence: Evidence, gated: BenchResult | None
) -> str | None:
    """Why ``gated`` is the judged result, in one line, for a target that chooses the fastest variant; else None.

    Args:
        results: every benched format.
        profile: the target.
        stat: the statistic judged.
        evidence: ``estimated`` compares lower bounds, the others ``stat``.
        gated: :func:`decide`'s result.
    """
    if profile.choose != "fastest" or gated is None:
        return None
    if evidence == "estimated":
        what = "lower bound"
        ran = [r for r in results if r.roofline is not None]

        def key(r: BenchResult) -> float:
            return r.roofline.estimate_ms if r.roofline else math.inf
    else:
        what = stat
        ran = [r for r in results if runs_on_target(r, profile) and r.stat_ms(stat) is not None]

        def key(r: BenchResult) -> float:
            return r.stat_ms(stat) or 0.0
    runtimes = ", ".join(profile.deploy_runtimes)
    pool = sorted(choice_pool(ran, profile), key=key)
    failed = [r.label for r in ran if r.runtime in profile.deploy_runtimes and r.export_failed]
    left_out = f"; left out, their export checks failed: {', '.join(failed)}" if failed else ""
    if not any(r is gated for r in pool):
        return (f"choose fastest: no variant in {runtimes} passed its export checks, so {gated.label} is judged "
                f"by the profile's {profile.runtime} {profile.precision} rule{left_out}")
    runner_up = next((r for r in pool if r is not gated), None)
    then = f"; next {runner_up.label} {key(runner_up):.3f} ms" if runner_up else ""
    return (f"{gated.label} ({gated.runtime}), the fastest by {what} of the {len(pool)} variant"
            f"{'s' if len(pool) != 1 else ''} in {runtimes} whose export checks passed ({key(gated):.3f} ms{then})"
            f"{left_out}")


def decide_on_bound(
    results: Sequence[BenchResult], profile: TargetProfile, budget_ms: float
) -> tuple[Verdict, str, BenchResult | None]:
    """Away from the target: FAIL when even the lower bound exceeds the budget (or the export failed the
    format), else UNCONFIRMED. The result is chosen as in :func:`gated_result`, by its bound.

    Args:
        results: every benched format (their timings are not looked at).
        profile: the target.
        budget_ms: the latency budget.
    """
    bounded = [r for r in results if r.roofline is not None]
    gated = _preferred(bounded, profile, lambda r: r.roofline.estimate_ms if r.roofline else 0.0)
    if gated is None or gated.roofline is None:
        return "UNCONFIRMED", f"no lower bound for {profile.name} could be computed; bench on the device", None
    bound = gated.roofline.estimate_ms
    where = f"{gated.label}{' fp32' if gated.format == 'pytorch' else ''} on {profile.name}"
    if bound > budget_ms:
        return "FAIL", f"even the lower bound of {where}, {bound:.4g} ms, exceeds the {budget_ms:g} ms budget", gated
    if gated.export_failed:
        return "FAIL", f"{where}: the export marked it as {gated.export_status}", gated
    return ("UNCONFIRMED",
            f"{where}: lower bound {bound:.4g} ms <= {budget_ms:g} ms; only a measurement on the device can confirm it",
            gated)


def decide_energy(gated: BenchResult | None, budget_mj: float, evidence: Evidence) -> tuple[Verdict, str]:
    """The energy verdict on the result the latency verdict judged, and its reason in one line.

    Args:
        gated: :func:`decide`'s result.
        budget_mj: the energy budget per inference.
        evidence: ``estimated`` figures are never judged.
    """
    if evidence == "estimated":
        return "UNCONFIRMED", ("energy is judged only on power sampled on the device, and these timings come from "
                               "another machine; bench with --host, or --from-trtexec on the results folder")
    if gated is None:
        return "UNCONFIRMED", "no result ran, so no energy per inference to judge"
    if gated.energy_mj is None:
        why = gated.power.describe() if gated.power else ("no tegrastats samples came with its figures (tegrastats "
                                                          "runs on a Jetson, in bench_engine.sh)")
        return "UNCONFIRMED", f"{gated.label}: {why}"
    power = gated.power
    assert power is not None and power.mean_w is not None  # energy_mj is computed from them
    within = gated.energy_mj <= budget_mj
    return ("PASS" if within else "FAIL"), (
        f"{gated.label} {gated.energy_mj:.4g} mJ per inference {'<=' if within else '>'} {budget_mj:g} mJ (mean "
        f"board power {power.mean_w:.2f} W x mean latency {gated.mean_ms:.4g} ms / batch {gated.batch})")


def version_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` (``10.3.0``) is the ``expected`` release (``10.3``, ``10.x``)."""
    want, have = expected.split("."), actual.split(".")
    return len(have) >= len(want) and all(w in ("x", h) for w, h in zip(want, have, strict=False))


def setting_warnings(
    profile: TargetProfile, tensorrt: str | None, power_mode: str | None, clocks_locked: bool | None = None
) -> list[str]:
    """The device's TensorRT release, power mode and clocks against the profile's, one warning per mismatch.

    Args:
        profile: the target.
        tensorrt: the TensorRT version the figures were timed with (None: not recorded).
        power_mode: the Jetson's nvpmodel mode name (None: not recorded, or not a Jetson).
        clocks_locked: whether jetson_clocks held the clocks at their maximum (None: not recorded).
    """
    out = []
    if profile.tensorrt and tensorrt and not version_matches(profile.tensorrt, tensorrt):
        out.append(f"timed with TensorRT {tensorrt}, but the profile {profile.name} expects {profile.tensorrt}: "
                   "engines and their speed differ between releases")
    if profile.power_modes and power_mode and power_mode not in profile.power_modes:
        out.append(f"the Jetson ran in power mode {power_mode}, but the profile {profile.name} assumes "
                   f"{' or '.join(profile.power_modes)} (`sudo nvpmodel -m <id>`, see `nvpmodel -q`)")
    if clocks_locked is False:
        out.append("the Jetson's clocks were not locked (`sudo jetson_clocks` was not run): the GPU and memory clocks "
                   "followed the load, so latency and power vary more between runs")
    return out


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
