"""`leapkit bench [MODEL] --target T`: time every format of MODEL and judge the target's latency budget.

    bench(model, target, request | **options) -> BenchReport   the Python API; the options are a
                                                BenchRequest (request.py), checked before anything runs, then one of:
      run_bench(plan) -> BenchReport           time here: resolve, measure, decide, write bench/<target>.*
      bench_from_trtexec(profile, request)     read the target's trtexec output (imported.py)
      bench_over_ssh(model, profile, request)  build and time on the device over SSH (imported.py)
    then, whichever made the report, :func:`conclude`: the comparison with ``baseline`` (regression.py),
    the JUnit file (junit.py), and the checks (exit 1 on a FAIL verdict or a regression)

A budget is judged only on the target's own figures: timings taken here count when this host is
the target (:func:`leapkit.latency.machine.target_match`, evidence ``measured``); elsewhere they
are shown, labelled, and the verdict rests on the lower bound beside them (cost.py, evidence
``estimated``). Each result also carries the target's latency-model prediction (forecast.py), which
is never judged. The verdict is in verdict.py, the records in records.py, their tables in render.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from leapkit.errors import ConfigError
from leapkit.host import cpu_bf16, require_cuda
from leapkit.latency.artifacts import Artifact, ModelSource, require_export, resolve_model
from leapkit.latency.cost import Cost, roofline, torch_cost
from leapkit.latency.forecast import Forecaster
from leapkit.latency.imported import bench_from_trtexec, bench_over_ssh, report_from_trtexec
from leapkit.latency.junit import require_junitparser, write_junit
from leapkit.latency.machine import environment, target_match
from leapkit.latency.measure import measure
from leapkit.latency.records import BenchReport, BenchResult, Budget, Decision, Provenance
from leapkit.latency.regression import DEFAULT_MAX_REGRESSION_PCT, compare, load_baseline
from leapkit.latency.render import write_bench_report
from leapkit.latency.request import BenchRequest
from leapkit.latency.timing import Method, auto_thread_candidates, parse_threads, usable_cores
from leapkit.latency.verdict import choice_reason, decide, runs_on_target, setting_warnings, warnings
from leapkit.paths import require_writable
from leapkit.profiles import TargetProfile, load_target
from leapkit.run import load_student, read_run_config
from leapkit.runtimes.openvino_runner import import_openvino, openvino_installed
from leapkit.runtimes.ort_runner import ort_providers
from leapkit.runtimes.tensorrt_runner import import_tensorrt, tensorrt_ready
from leapkit.threads import torch_threads
from leapkit.types import RUNTIMES, Evidence, OrtProvider, Runtime

__all__ = ["BenchPlan", "BenchRequest", "bench", "bench_from_trtexec", "bench_over_ssh", "conclude",
           "report_from_trtexec", "run_bench"]

log = logging.getLogger(__name__)


@dataclass
class BenchPlan:
    """One benchmark timed here, its options resolved against the target.

    Args:
        model: a run directory, an export folder, an .onnx file or an engine; None is runs/latest.
        profile: the target.
        runtimes: the runtimes asked for; None benches what MODEL has.
        budget: the latency budget and the statistic judged against it.
        precisions: only formats at these precisions; empty: all.
        method: how every format is measured (the PyTorch device among it).
        ort_provider: ONNX Runtime's execution provider choice.
        out_dir: where bench/ goes; None: the run, else next to the model.
    """

    model: str | Path | None
    profile: TargetProfile
    runtimes: list[Runtime] | None
    budget: Budget
    precisions: tuple[str, ...]
    method: Method
    ort_provider: OrtProvider = "auto"
    out_dir: Path | None = None

    @classmethod
    def of(cls, model: str | Path | None, profile: TargetProfile, request: BenchRequest) -> BenchPlan:
        """The plan of a checked request (:meth:`BenchRequest.problems` found nothing)."""
        threads = parse_threads(request.threads)
        candidates = auto_thread_candidates(usable_cores() or os.cpu_count() or 1) if threads == "auto" else ()
        fixed = threads if isinstance(threads, int) else profile.threads or os.cpu_count() or 1
        gpu = profile.family != "cpu" and torch.cuda.is_available()
        method = Method(
            batch=profile.batch if request.batch is None else request.batch,
            threads=max(candidates) if candidates else fixed, warmup_s=request.warmup_s,
            iterations=request.iterations, duration_s=request.duration_s, compile=request.compile,
            device=request.device or ("cuda" if gpu else "cpu"), thread_candidates=candidates,
        )
        wanted = list(dict.fromkeys(request.runtimes or []))
        return cls(
            model=model, profile=profile,
            runtimes=None if not wanted or "all" in wanted else cast(list[Runtime], wanted),
            budget=Budget.of(profile, request.budget_ms, request.stat, request.budget_mj),
            precisions=tuple(request.precisions or ()),
            method=method, ort_provider=request.ort_provider, out_dir=request.out,
        )


def bench(model: str | Path | None = None, target: str | Path | TargetProfile | None = None,
          request: BenchRequest | None = None, **options: Any) -> BenchReport:
    """Benchmark MODEL for a target, write bench/<target>.json and .md, and judge the budget.

    Every option is checked before anything is measured or written. Timed here, the budget is
    judged only when this host is the target; ``from_trtexec`` judges the target's own trtexec
    output instead, ``host`` builds and times the bundle on the device over SSH.

    Args:
        model: a run directory, an export folder, an .onnx file or a TensorRT engine; None is
            runs/latest (its PyTorch student plus its export for the target, or newest export).
        target: profile name, family (``jetson``), YAML path, or a loaded profile; None takes
            the target of MODEL's export (its manifest's ``target``).
        request: the options (:class:`~leapkit.latency.request.BenchRequest`); default: its defaults.
        **options: fields of :class:`~leapkit.latency.request.BenchRequest` (``budget_ms=5``,
            ``runtimes=["onnxruntime"]``, ...), over ``request``.

    Raises:
        ConfigError: bad budget, statistic, runtime or option values, or a bad baseline (nothing is written).
        ModelError: MODEL is not a run, export, ONNX file or engine.
        MissingDependency: a requested runtime is not installed.
        TrtexecError: a trtexec file has no performance summary (nothing is written).
        HostError: the device cannot be reached or lacks what the bundle needs.
        CheckFailed: the verdict is FAIL (or UNCONFIRMED with ``require_measured``), or a result regressed
            against ``baseline``, and ``check`` is set.
    """
    request = replace(request or BenchRequest(), **options)
    problems = request.problems(model, target)
    prior = None
    try:
        prior = load_baseline(request.baseline) if request.baseline is not None else None
    except ConfigError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError("; ".join(problems))
    if request.junit is not None:
        require_junitparser()

    profile = load_target(target if target is not None else _export_target(model))
    if prior is not None and prior.target != profile.name:
        raise ConfigError(f"--baseline {request.baseline} is a bench report for {prior.target}, not {profile.name}; "
                          f"pass an earlier bench/{profile.name}.json")
    if request.from_trtexec:
        report = bench_from_trtexec(profile, request)
    elif request.host:
        report = bench_over_ssh(model, profile, request)
    else:
        report = run_bench(BenchPlan.of(model, profile, request))
    return conclude(report, prior, request)


def conclude(report: BenchReport, baseline: BenchReport | None, request: BenchRequest) -> BenchReport:
    """What follows a written report: compare it with ``baseline`` (writing it again with the comparison), write
    the JUnit file, then check.

    Raises:
        CheckFailed: the verdict is FAIL (or UNCONFIRMED with ``require_measured``), or a result
            regressed, and ``request.check`` is set.
    """
    if baseline is not None:
        allowed = DEFAULT_MAX_REGRESSION_PCT if request.max_regression_pct is None else request.max_regression_pct
        comparison = compare(report, baseline, request.baseline or "", allowed)
        for w in comparison.warnings:
            log.warning("baseline: %s", w)
        report.baseline = comparison
        report.warnings = [*report.warnings, *comparison.warnings]
        write_bench_report(report)
        log.info("against the baseline %s: %s", comparison.path, comparison.counts())
    if request.junit is not None:
        log.info("wrote %s", write_junit(report, Path(request.junit), request.require_measured))
    if request.check:
        report.check(request.require_measured)
    return report


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
        value = r.stat_ms(plan.budget.stat)
        on_target = evidence == "measured" and runs_on_target(r, profile)
        r.budget_ok = value <= plan.budget.ms if on_target and value is not None else None
    notes = warnings(results, env)
    if evidence == "measured":
        trt_ran = any(r.runtime == "tensorrt" and r.status == "ok" for r in results)
        notes += setting_warnings(profile, env.get("tensorrt") if trt_ran else None,
                                  (env.get("jetson") or {}).get("power_mode"))
    for w in notes:
        log.warning(w)
    decision = Decision(*decide(results, profile, plan.budget.ms, plan.budget.stat, evidence))
    report = BenchReport.of(
        profile, results, plan.budget, Provenance(evidence, evidence_reason, host, env), decision,
        model=str(plan.model) if plan.model is not None else "runs/latest", warnings=notes, method=method,
        files=(src.run_dir, src.export_dir),
        choice=choice_reason(results, profile, plan.budget.stat, evidence, decision.gated),
    )
    write_bench_report(report, out_dir / "bench" / f"{profile.name}.json")
    log.info("wrote %s and %s", report.json_path, report.md_path)
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
