"""`leapkit bench [MODEL] --target T`: time every format of MODEL and judge the target's latency budget.

    bench(model, target, ...) -> BenchReport   the Python API, keywords as the CLI flags: every option is
                                                checked before anything runs, then one of:
      run_bench(plan) -> BenchReport           time here: resolve, measure, decide, write bench/<target>.*
      bench_from_trtexec(paths, ...)           read the target's trtexec output (imported.py)
      bench_over_ssh(model, host, ...)         build and time on the device over SSH (imported.py)
    then, whichever made the report: the comparison with ``baseline`` (regression.py), the JUnit file
    (junit.py), and the checks (exit 1 on a FAIL verdict or a regression)

A budget is judged only on the target's own figures: timings taken here count when this host is
the target (:func:`leapkit.latency.machine.target_match`, evidence ``measured``); elsewhere they
are shown, labelled, and the verdict rests on the lower bound beside them (cost.py, evidence
``estimated``). Each result also carries the target's latency-model prediction (forecast.py), which
is never judged. The verdict is in verdict.py, the report and its tables in report.py.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from leapkit import __version__
from leapkit.errors import ConfigError
from leapkit.latency.artifacts import Artifact, ModelSource, require_export, resolve_model
from leapkit.latency.cost import ROOFLINE_NOTE, Cost, roofline, torch_cost
from leapkit.latency.forecast import Forecaster
from leapkit.latency.imported import bench_from_trtexec, bench_over_ssh, report_from_trtexec
from leapkit.latency.junit import require_junitparser, write_junit
from leapkit.latency.machine import environment, target_match
from leapkit.latency.measure import measure
from leapkit.latency.regression import DEFAULT_MAX_REGRESSION_PCT, compare, load_baseline
from leapkit.latency.report import BenchReport, BenchResult
from leapkit.latency.timing import (
    Method,
    auto_thread_candidates,
    parse_threads,
    usable_cores,
)
from leapkit.latency.verdict import choice_reason, decide, runs_on_target, setting_warnings, stat_key, warnings
from leapkit.paths import NotWritable, require_writable, require_writable_file
from leapkit.profiles import TargetProfile, load_target
from leapkit.run import load_student, read_run_config
from leapkit.runtimes import (
    cpu_bf16,
    import_openvino,
    import_tensorrt,
    openvino_installed,
    ort_providers,
    require_cuda,
    tensorrt_ready,
)
from leapkit.threads import torch_threads
from leapkit.types import ORT_PROVIDERS, PRECISIONS, RUNTIMES, Evidence, OrtProvider, Precision, Runtime, Stat

__all__ = ["BenchPlan", "bench", "bench_from_trtexec", "bench_over_ssh", "report_from_trtexec", "run_bench"]

log = logging.getLogger(__name__)


@dataclass
class BenchPlan:
    """Everything one benchmark needs, checked.

    Args:
        model: a run directory, an export folder, an .onnx file or an engine; None is runs/latest.
        profile: the target.
        runtimes: the runtimes asked for; None benches what MODEL has.
        budget_ms: the latency budget.
        budget_source: where the budget came from (``--budget-ms`` or the profile).
        stat: the statistic judged against the budget.
        precisions: only formats at these precisions; empty: all.
        method: how every format is measured (the PyTorch device among it).
        ort_provider: ONNX Runtime's execution provider choice.
        out_dir: where bench/ goes; None: the run, else next to the model.
        check: raise CheckFailed after writing the report when the verdict is FAIL (or UNCONFIRMED
            with ``require_measured``).
        require_measured: an UNCONFIRMED verdict (no figures from the target) fails too.
    """

    model: str | Path | None
    profile: TargetProfile
    runtimes: list[Runtime] | None
    budget_ms: float
    budget_source: str
    stat: Stat
    precisions: tuple[str, ...]
    method: Method
    ort_provider: OrtProvider = "auto"
    out_dir: Path | None = None
    check: bool = True
    require_measured: bool = False


def _number_problems(budget_ms: float | None, method: Method) -> list[str]:
    problems = method.problems()
    valid = isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0
    if budget_ms is not None and not valid:
        problems.insert(0, f"the budget must be a positive number of ms, got {budget_ms!r} (--budget-ms)")
    return problems


def bench(
    model: str | Path | None = None,
    target: str | Path | TargetProfile | None = None,
    runtimes: Sequence[str] | None = None,
    budget_ms: float | None = None,
    stat: Stat | None = None,
    precisions: Sequence[str] | None = None,
    batch: int | None = None,
    threads: int | str | None = None,
    warmup_s: float = 0.5,
    iterations: int | None = None,
    duration_s: float = 3.0,
    compile: bool = False,
    ort_provider: OrtProvider = "auto",
    device: str | None = None,
    out_dir: str | Path | None = None,
    check: bool = True,
    require_measured: bool = False,
    from_trtexec: Sequence[str | Path] | None = None,
    host: str | None = None,
    ssh_options: Sequence[str] = (),
    baseline: str | Path | None = None,
    max_regression_pct: float | None = None,
    junit: str | Path | None = None,
    allow_other_device: bool = False,
) -> BenchReport:
    """Benchmark MODEL for a target, write bench/<target>.json and .md, and judge the budget.

    Every option is checked before anything is measured or written. Timed here, the budget is
    judged only when this host is the target; ``from_trtexec`` judges the target's own trtexec
    output instead, ``host`` builds and times the bundle on the device over SSH.

    Args:
        model: a run directory, an export folder, an .onnx file or a TensorRT engine; None is
            runs/latest (its PyTorch student plus its export for the target, or newest export).
        target: profile name, family (``jetson``), YAML path, or a loaded profile; None takes
            the target of MODEL's export (its manifest's ``target``).
        runtimes: any of torch, onnxruntime, openvino, tensorrt, or ``["all"]``; None benches what MODEL has.
        budget_ms: overrides the profile's latency budget.
        stat: the statistic judged against the budget (default: the profile's, p99).
        precisions: only bench formats at these precisions.
        batch: batch size (default: the profile's).
        threads: CPU threads for torch and ONNX Runtime (default: the profile's, else all cores);
            ``"auto"`` probes 1, 2, 4, ... up to the usable cores for PROBE_S seconds each, per
            format, and measures each format with its fastest count (recorded per result).
        warmup_s: warm-up time per format.
        iterations: timed iterations; when None, run for ``duration_s``.
        duration_s: timed duration per format when ``iterations`` is None.
        compile: run the PyTorch student through torch.compile.
        ort_provider: ONNX Runtime execution provider; auto picks CUDA for GPU targets when present.
        device: device for the PyTorch student (default: cuda when the target is a GPU and one is
            present, else cpu).
        out_dir: where bench/ goes (default: the run, else next to the model; with
            ``from_trtexec``, the run whose export holds the first file, else beside it).
        check: raise CheckFailed after writing the report when the verdict is FAIL.
        require_measured: with ``check``, an UNCONFIRMED verdict (no figures from the target)
            raises CheckFailed too.
        from_trtexec: trtexec logs, --exportTimes/--exportProfile JSON, device.json or folders of
            them, from the target; replaces MODEL.
        host: ``[user@]host[:port]`` of the device: build, check and time MODEL's bundle there.
        ssh_options: extra ssh/scp arguments for ``host`` (``-i KEY``, ``-o Name=value``).
        baseline: an earlier bench/<target>.json of the same target: each result's judged statistic is
            compared with the same result there (:mod:`leapkit.latency.regression`), recorded under
            ``baseline``, and a slowdown beyond ``max_regression_pct`` and the noise fails the check.
        max_regression_pct: the slowdown allowed against ``baseline``, in percent (default 10).
        junit: write the report as JUnit XML to this file too (:mod:`leapkit.latency.junit`).
        allow_other_device: with ``from_trtexec``, judge figures that name another device than the target's
            (otherwise the verdict is UNCONFIRMED).

    Raises:
        ConfigError: bad budget, statistic, runtime or option values, or a bad baseline (nothing is written).
        ModelError: MODEL is not a run, export, ONNX file or engine.
        MissingDependency: a requested runtime is not installed.
        TrtexecError: a trtexec file has no performance summary (nothing is written).
        HostError: the device cannot be reached or lacks what the bundle needs.
        CheckFailed: the verdict is FAIL (or UNCONFIRMED with ``require_measured``), or a result regressed
            against ``baseline``, and ``check`` is set.
    """
    wanted = list(dict.fromkeys(runtimes or []))
    problems = [f"unknown runtime '{r}'; use {', '.join(RUNTIMES)} or all"
                for r in wanted if r not in (*RUNTIMES, "all")]
    if "all" in wanted and len(wanted) > 1:
        problems.append("--runtime all cannot be combined with other --runtime values")
    if ort_provider not in ORT_PROVIDERS:
        problems.append(f"unknown --ort-provider '{ort_provider}'; use {', '.join(ORT_PROVIDERS)}")
    n_threads: int | Literal["auto"] | None = None
    try:
        if stat is not None:
            stat_key(stat)
    except ConfigError as e:
        problems.append(str(e))
    try:
        n_threads = parse_threads(threads)
    except ConfigError as e:
        problems.append(str(e))
    # Explicit values are checked as given: a 0 is an error, not "the target's default".
    given = Method(batch=1 if batch is None else batch, threads=n_threads if isinstance(n_threads, int) else 1,
                   warmup_s=warmup_s, iterations=iterations, duration_s=duration_s)
    problems += _number_problems(budget_ms, given)
    local = {"--runtime": runtimes, "--batch": batch, "--threads": threads, "--iterations": iterations,
             "--compile": compile or None, "--device": device,
             "--ort-provider": ort_provider if ort_provider != "auto" else None}
    if from_trtexec or host:
        flag = "--from-trtexec" if from_trtexec else "--host"
        used = [name for name, value in local.items() if value is not None]
        if used:
            problems.append(f"{', '.join(used)} time MODEL on this machine and do not apply to {flag}")
    if from_trtexec:
        problems += _trtexec_problems(model, target, host, precisions)
    elif allow_other_device:
        problems.append("--allow-other-device applies to --from-trtexec (another device's trtexec output)")
    if host:
        problems += [f"unknown --precision '{p}'; use {', '.join(PRECISIONS)}"
                     for p in precisions or () if p not in PRECISIONS]
    problems += _ci_problems(baseline, max_regression_pct, junit)
    problems += _output_problems(out_dir, junit)
    prior = None
    try:
        prior = load_baseline(baseline) if baseline is not None else None
    except ConfigError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError("; ".join(problems))
    if junit is not None:
        require_junitparser()

    outputs = Outputs(prior, baseline, DEFAULT_MAX_REGRESSION_PCT if max_regression_pct is None else max_regression_pct,
                      Path(junit) if junit is not None else None, check, require_measured)
    profile = load_target(target if target is not None else _export_target(model))
    if prior is not None and prior.target != profile.name:
        raise ConfigError(f"--baseline {baseline} is a bench report for {prior.target}, not {profile.name}; "
                          f"pass an earlier bench/{profile.name}.json")
    if from_trtexec:
        return outputs.conclude(bench_from_trtexec(
            from_trtexec, profile, budget_ms=budget_ms, stat=stat,
            out_dir=Path(out_dir) if out_dir is not None else None, check=False,
            allow_other_device=allow_other_device))
    if host:
        return outputs.conclude(bench_over_ssh(
            model, profile, host, cast(list[Precision], list(precisions or [profile.precision])), budget_ms=budget_ms,
            stat=stat, out_dir=Path(out_dir) if out_dir is not None else None, ssh_options=ssh_options, check=False))
    candidates = auto_thread_candidates(usable_cores() or os.cpu_count() or 1) if n_threads == "auto" else ()
    fixed = n_threads if isinstance(n_threads, int) else profile.threads or os.cpu_count() or 1
    method = Method(
        batch=profile.batch if batch is None else batch, threads=max(candidates) if candidates else fixed,
        warmup_s=warmup_s, iterations=iterations, duration_s=duration_s, compile=compile,
        device=device or ("cuda" if profile.family != "cpu" and torch.cuda.is_available() else "cpu"),
        thread_candidates=candidates,
    )
    plan = BenchPlan(
        model=model, profile=profile, runtimes=None if not wanted or "all" in wanted else cast(list[Runtime], wanted),
        budget_ms=float(profile.latency_budget_ms if budget_ms is None else budget_ms),
        budget_source="--budget-ms" if budget_ms is not None else f"profile {profile.name}",
        stat=stat or profile.budget_stat, precisions=tuple(precisions or ()), method=method, ort_provider=ort_provider,
        out_dir=Path(out_dir) if out_dir is not None else None, check=False, require_measured=require_measured,
    )
    return outputs.conclude(run_bench(plan))


def _ci_problems(baseline: str | Path | None, max_regression_pct: float | None, junit: str | Path | None) -> list[str]:
    """What is wrong with --baseline, --max-regression and --junit, before the baseline is read."""
    problems = []
    if max_regression_pct is not None:
        if baseline is None:
            problems.append("--max-regression applies to a comparison: pass --baseline PREV.json too")
        elif not (math.isfinite(max_regression_pct) and max_regression_pct >= 0):
            problems.append(f"--max-regression must be a finite percentage >= 0, got {max_regression_pct}")
    if junit is not None and Path(junit).is_dir():
        problems.append(f"--junit {junit} is a folder; pass a file name such as reports/latency.xml")
    return problems


def _output_problems(out_dir: str | Path | None, junit: str | Path | None) -> list[str]:
    """--out and --junit where they cannot be written: known before the timing, not after it."""
    problems = []
    try:
        if out_dir is not None:
            require_writable(Path(out_dir) / "bench", "the bench report", "pass --out a folder you can write to")
        if junit is not None and not Path(junit).is_dir():  # a folder is _ci_problems' to report
            require_writable_file(junit, "--junit", "pass --junit a file in a folder you can write to")
    except NotWritable as e:
        problems.append(str(e))
    return problems


@dataclass
class Outputs:
    """What follows a written report: the comparison with the baseline, the JUnit file and the checks.

    Args:
        baseline: the earlier report (None: no comparison).
        baseline_path: where it was read from, as given.
        max_regression_pct: the slowdown allowed against it, in percent.
        junit: the JUnit XML file to write (None: none).
        check: raise CheckFailed on a FAIL verdict or a regression.
        require_measured: an UNCONFIRMED verdict fails too.
    """

    baseline: BenchReport | None
    baseline_path: str | Path | None
    max_regression_pct: float
    junit: Path | None
    check: bool
    require_measured: bool

    def conclude(self, report: BenchReport) -> BenchReport:
        """Compare ``report`` with the baseline (writing it again with the comparison), write the JUnit
        file, then check.

        Raises:
            CheckFailed: the verdict is FAIL (or UNCONFIRMED with ``require_measured``), or a result
                regressed, and ``check`` is set.
        """
        if self.baseline is not None:
            comparison = compare(report, self.baseline, self.baseline_path or "", self.max_regression_pct)
            for w in comparison.warnings:
                log.warning("baseline: %s", w)
            report.baseline = comparison
            report.warnings = [*report.warnings, *comparison.warnings]
            report.write()
            log.info("against the baseline %s: %s", comparison.path, comparison.counts())
        if self.junit is not None:
            log.info("wrote %s", write_junit(report, self.junit, self.require_measured))
        if self.check:
            report.check(self.require_measured)
        return report


def _trtexec_problems(model: str | Path | None, target: object, host: str | None,
                      precisions: Sequence[str] | None) -> list[str]:
    """What cannot go with --from-trtexec: a MODEL, --host, --precision, and a missing --target."""
    problems = []
    if model is not None:
        problems.append("pass either MODEL (timed here) or --from-trtexec FILE (the device's trtexec output), not both")
    if host:
        problems.append("--from-trtexec reads results already made; --host makes them on the device: pass one")
    if precisions:
        problems.append("--precision does not apply to --from-trtexec (trtexec's command line gives the precision)")
    if target is None:
        problems.append("--from-trtexec needs --target T: the device the trtexec output comes from")
    return problems


def _export_target(model: str | Path | None) -> str:
    """The target an export was made for, so that `leapkit bench` alone benches the newest export."""
    target = resolve_model(model).target
    if target is None:
        raise ConfigError(
            "no target given and none recorded by an export; pass --target T (see `leapkit profiles list`)"
        )
    return target


def choose_runtimes(src: ModelSource, runtimes: Sequence[Runtime] | None) -> list[Runtime]:
    """The runtimes to bench: those asked for (each must have something to run), else all MODEL has.

    Without an explicit request, a TensorRT engine is skipped with a warning where TensorRT or a GPU
    is missing, and an OpenVINO IR where openvino is not installed, unless it is all there is.

    Raises:
        ConfigError: a requested runtime has nothing to run in MODEL.
        MissingDependency: TensorRT or OpenVINO is requested (or is all there is) and not installed.
    """
    if not runtimes:
        chosen = [r for r in RUNTIMES if src.has(r)]
        if "openvino" in chosen and not openvino_installed():
            if chosen == ["openvino"]:
                import_openvino("benchmarking an OpenVINO IR")
            log.warning("skipping the OpenVINO IRs: openvino is not installed (pip install 'leapkit[openvino]')")
            chosen.remove("openvino")
        trt_ready = tensorrt_ready()
        if chosen == ["tensorrt"] and not trt_ready:
            import_tensorrt("benchmarking a TensorRT engine")
            require_cuda("a TensorRT engine")
        if "tensorrt" in chosen and not trt_ready:
            log.warning("skipping the TensorRT engine: it needs tensorrt and a CUDA GPU (bench it on the device)")
            chosen.remove("tensorrt")
        return chosen
    need = {"torch": "a run directory with student.safetensors",
            "onnxruntime": "an .onnx file or an export holding one",
            "openvino": "an OpenVINO IR (.xml) or an export holding one (targets whose runtimes include openvino)",
            "tensorrt": "a TensorRT engine (.engine/.plan), built on the device with build_engine.sh"}
    for r in runtimes:
        if not src.has(r):
            where = src.export_dir or src.out_dir
            raise ConfigError(f"--runtime {r} needs {need[r]}; nothing of that kind was found in {where}")
    if "tensorrt" in runtimes:
        import_tensorrt("benchmarking a TensorRT engine")
        require_cuda("--runtime tensorrt")
    if "openvino" in runtimes:
        import_openvino("--runtime openvino")
    return list(runtimes)


def runnable_here(art: Artifact) -> bool:
    """False (with a warning) for an OpenVINO bf16 variant on a CPU without bf16 arithmetic: it would run in fp32."""
    if art.format == "openvino" and art.hint == "bf16" and art.precision == "bf16" and cpu_bf16() is None:
        log.warning("skipping %s bf16: this CPU has no bf16 arithmetic (avx512_bf16 or amx_bf16), OpenVINO would run "
                    "it in fp32; bench it on the target", art.name)
        return False
    return True


def _student_cost(student: nn.Module, img_size: int, method: Method) -> Cost | None:
    """The student's cost at its training resolution; None (with a warning) when it cannot be counted."""
    try:
        with torch_threads(method.threads):
            return torch_cost(student, img_size, method.batch)
    except Exception as e:  # the roofline is an extra: a counter that fails must not stop a latency run
        log.warning("could not count the student's FLOPs (%s); its roofline is left out", e)
        return None


def run_bench(plan: BenchPlan) -> BenchReport:
    """Bench what ``plan`` names, write bench/<target>.json and .md, and judge the budget.

    Raises:
        ConfigError: nothing to bench for the runtimes and precisions asked for.
        ModelError: MODEL is not a run, export, ONNX file or engine.
        MissingDependency: a requested runtime is not installed.
        CheckFailed: the verdict is FAIL and ``plan.check`` is set.
    """
    profile, method = plan.profile, plan.method
    src = resolve_model(plan.model, profile.name)
    out_dir = plan.out_dir or src.out_dir
    require_writable(out_dir / "bench", "the bench report", "pass --out a folder you can write to")
    if plan.runtimes is None:  # what MODEL has: a run must have an export, or its eager time would be judged
        require_export(src, profile.name)
    chosen = choose_runtimes(src, plan.runtimes)
    artifacts = [a for a in src.artifacts if a.runtime in chosen
                 and (not plan.precisions or a.precision in plan.precisions) and runnable_here(a)]
    if not artifacts:
        raise ConfigError(f"nothing to bench in {src.export_dir or src.out_dir} for runtimes {chosen or 'none'} "
                          f"and precisions {list(plan.precisions) or 'any'}")
    if "onnxruntime" in chosen:
        method = replace(method, providers=tuple(ort_providers(plan.ort_provider, gpu_target=profile.family != "cpu")))
    # The student runs at its training resolution (its position embeddings are fixed to it); the
    # exported files run at whatever size they were exported for.
    img_size = profile.resolve_input_size(src.img_size) if src.img_size else None
    student, student_size, cost = None, None, None
    if src.run_dir is not None:
        student, student_size = load_student(src.run_dir), read_run_config(src.run_dir).model.img_size
        cost = _student_cost(student, student_size, method)

    env = environment()
    forecaster = Forecaster.of(profile)
    results: list[BenchResult] = []
    shapes = []
    for art in artifacts:
        log.info("benchmarking %s (%s, %s) for %s", art.name, art.format, art.precision, profile.name)
        size = student_size if art.format == "pytorch" else img_size
        result, used = measure(art, method, size, student, cost)
        result.roofline = roofline(used, profile, art.precision) if used is not None else None
        results.append(result)
        shapes.append(forecaster.shape_for(art, student, size))

    evidence, evidence_reason, host = _evidence(results, profile, env)
    for r, shape in zip(results, shapes, strict=True):  # which results get a forecast depends on the evidence
        forecaster.attach(r, shape, measured_here=evidence == "measured")
    for r in results:
        value = r.stat_ms(plan.stat)
        on_target = evidence == "measured" and runs_on_target(r, profile)
        r.budget_ok = value <= plan.budget_ms if on_target and value is not None else None
    verdict, reason, gated = decide(results, profile, plan.budget_ms, plan.stat, evidence)
    notes = warnings(results, env)
    if evidence == "measured":
        trt_ran = any(r.runtime == "tensorrt" and r.status == "ok" for r in results)
        notes += setting_warnings(profile, env.get("tensorrt") if trt_ran else None,
                                  (env.get("jetson") or {}).get("power_mode"))
    for w in notes:
        log.warning(w)
    report = BenchReport(
        target=profile.name,
        target_description=profile.description,
        model=str(plan.model) if plan.model is not None else "runs/latest",
        source_run=str(src.run_dir) if src.run_dir else None,
        export_dir=str(src.export_dir) if src.export_dir else None,
        input_shape=next((r.input_shape for r in results if r.input_shape), None),
        results=results,
        budget_ms=plan.budget_ms,
        budget_stat=plan.stat,
        budget_source=plan.budget_source,
        evidence=evidence,
        evidence_reason=evidence_reason,
        measured_on=host,
        verdict=verdict,
        verdict_reason=reason,
        gated=gated.label if gated else None,
        choice=choice_reason(results, profile, plan.stat, evidence, gated),
        method=method,
        roofline_note=ROOFLINE_NOTE,
        warnings=notes,
        environment=env,
        leapkit_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    report.write(out_dir / "bench" / f"{profile.name}.json")
    log.info("wrote %s and %s", report.json_path, report.md_path)
    if plan.check:
        report.check(plan.require_measured)
    return report


def _evidence(
    results: Sequence[BenchResult], profile: TargetProfile, env: dict[str, Any]
) -> tuple[Evidence, str, str]:
    """``measured`` when this host is the target and a format ran on its processor, else ``estimated``;
    the reason in one line, and this host."""
    match = target_match(profile, env)
    if not match.is_target:
        return "estimated", f"measured on {match.host}, not on {profile.name}: {match.reason}", match.host
    if not any(runs_on_target(r, profile) and r.status == "ok" for r in results):
        kind = "CPU" if profile.family == "cpu" else "GPU"
        return ("estimated", f"{match.reason}, but no format ran on its {kind}; bench a format that runs there",
                match.host)
    return "measured", match.reason, match.host
