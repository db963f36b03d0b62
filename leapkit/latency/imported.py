"""The target's own figures: trtexec output read from files (``--from-trtexec``) or fetched over SSH (``--host``).

    report_from_trtexec(imported, profile, budget, ...) -> BenchReport  bench/<target>.json and .md from trtexec runs
    bench_from_trtexec(profile, request)        -> BenchReport   read the files, then the report (evidence imported)
    bench_over_ssh(model, profile, request)     -> BenchReport   build and time on the device, then the report
                                                                 (evidence measured, the host named)

The report has the keys of a local bench: ``p50_ms``..``max_ms`` and ``mean_ms`` are trtexec's
"Latency" (host latency: H2D + GPU compute + D2H; an excerpt without it is judged on its GPU compute
time, ``latency_of`` says which), ``throughput`` images/s (trtexec's qps times the batch), ``qps`` its
queries per second, ``batch_source`` where the batch was read, ``gpu_compute_ms`` its "GPU Compute
Time"; with the export's ONNX known, each run carries the target's latency-model
prediction (:mod:`leapkit.latency.forecast`). The device trtexec and device.json name, the TensorRT
release and the Jetson power mode are checked against the profile; a mismatch is a warning in the
report, and imported figures from another device leave the verdict UNCONFIRMED (a budget is never
judged on another device's log) unless ``allow_other_device``. A log cut inside its performance
summary is said to be, as a warning, or as the error when the statistic to judge is what the cut removed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

from leapkit.deploy.manifest import ExportManifest
from leapkit.device.round_trip import bench_on_host
from leapkit.device.tegrastats import LOG as POWER_LOG
from leapkit.device.tegrastats import MARKS as POWER_MARKS
from leapkit.device.tegrastats import read_power
from leapkit.errors import ConfigError, TrtexecError
from leapkit.latency.artifacts import resolve_model
from leapkit.latency.forecast import GRAPH, Forecaster
from leapkit.latency.records import BenchReport, BenchResult, Budget, Decision, Provenance
from leapkit.latency.render import TRTEXEC_NOTE, write_bench_report
from leapkit.latency.request import BenchRequest
from leapkit.latency.timing import NOISY_CV
from leapkit.latency.verdict import decide, decide_energy, setting_warnings, warnings
from leapkit.paths import require_writable
from leapkit.profiles import TargetProfile
from leapkit.run import CONFIG
from leapkit.trtexec.layers import aggregate_profile, onnx_nodes
from leapkit.trtexec.read import NOT_STATED, TrtexecImport, TrtexecRun, read_trtexec
from leapkit.types import Precision, Stat

log = logging.getLogger(__name__)

EXPORT = "export"


HOST_LATENCY, GPU_COMPUTE = "host latency", "GPU compute time"


def _result(run: TrtexecRun) -> BenchResult:
    """One trtexec run as a bench result (an engine timed by trtexec on the device).

    The statistics are the host latency; a run that printed none (a ``grep`` excerpt of the GPU
    Compute section) is judged on its GPU compute time, and says so in ``latency_of`` and its label.
    """
    gpu_only = not run.has_latency and run.has_gpu_compute
    lat = run.gpu_compute_ms if gpu_only else run.latency_ms
    ran = any(v is not None for v in lat.values())
    label = ", ".join(p for p in (run.label, "GPU compute only" if gpu_only else None) if p) or None
    return BenchResult(
        runtime="tensorrt", format="engine", precision=run.precision or "unknown", batch=run.batch, file=run.source,
        device=run.device, min_ms=lat.get("min"), mean_ms=lat.get("mean"), p50_ms=lat.get("p50"),
        p90_ms=lat.get("p90"), p95_ms=lat.get("p95"), p99_ms=lat.get("p99"), max_ms=lat.get("max"), cv=run.cv,
        throughput=_images_per_s(run), qps=_qps(run), iterations=run.iterations,
        noisy=run.cv > NOISY_CV if run.cv is not None else None, gpu_compute_ms=dict(run.gpu_compute_ms),
        batch_source=run.batch_source or NOT_STATED,
        latency_of=GPU_COMPUTE if gpu_only else HOST_LATENCY, run_label=label,
        status="ok" if ran else "failed: the trtexec output has no latency figures",
    )


def _run_notes(imported: TrtexecImport, results: Sequence[BenchResult]) -> list[str]:
    """What the report says of runs read in part: judged on GPU compute time, throughput not reported."""
    notes = []
    for run, r in zip(imported.runs, results, strict=True):
        if r.latency_of == GPU_COMPUTE:
            notes.append(f"{r.label} ({Path(run.source).name}): the file has no host latency (H2D + GPU compute + "
                         f"D2H), only GPU compute time; judged on GPU compute time, which leaves out the copies")
        if r.status == "ok" and r.throughput is None:
            notes.append(f"{r.label} ({Path(run.source).name}): throughput not reported")
    return notes


def device_names(imported: TrtexecImport) -> list[str]:
    """What names the device the figures come from: its device-tree model, GPU names, trtexec's device."""
    fingerprint = imported.device or {}
    jetson, gpu = fingerprint.get("jetson") or {}, fingerprint.get("gpu") or {}
    names = [jetson.get("model"), fingerprint.get("model"), gpu.get("name"), fingerprint.get("trtexec_device"),
             *(r.device for r in imported.runs)]
    return list(dict.fromkeys(n for n in names if n))


def other_device(imported: TrtexecImport, profile: TargetProfile) -> str | None:
    """The device the figures name when it is not the profile's (``'NVIDIA RTX A5000'``); None when it is, or
    when they name none or the profile has no device pattern."""
    names = device_names(imported)
    if names and profile.device_match and not profile.matches(names):
        return ", ".join(repr(n) for n in names)
    return None


def _device_warnings(imported: TrtexecImport, profile: TargetProfile) -> list[str]:
    """The device, TensorRT release and power mode of the figures against the profile's."""
    names = device_names(imported)
    out = []
    if other_device(imported, profile):
        patterns = " or ".join(repr(p) for p in profile.device_match)
        out.append(f"the trtexec figures name the device {', '.join(repr(n) for n in names)}, which does not match "
                   f"{profile.name} ({patterns}); add the device's device.json (bench_engine.sh writes it) or check "
                   f"--target")
    elif not names:
        out.append(f"the trtexec output names no device; it is taken to be {profile.name} as --target says")
    fingerprint = imported.device or {}
    versions = sorted({r.tensorrt for r in imported.runs if r.tensorrt}) or [fingerprint.get("tensorrt")]
    jetson = fingerprint.get("jetson") or {}
    out += setting_warnings(profile, versions[0], jetson.get("power_mode"),
                            (jetson.get("clocks") or {}).get("clocks_locked"))
    for version in versions[1:]:
        out += setting_warnings(profile, version, None)
    return out


TRUNCATED = "the log ends inside its performance summary (truncated?)"


def _check_stat(results: Sequence[BenchResult], stat: Stat, imported: TrtexecImport) -> None:
    """Raise unless a result has ``stat``: a log cut inside its summary says so, rather than blame an old release."""
    if any(r.stat_ms(stat) is not None for r in results):
        return
    cut = list(dict.fromkeys(run.source for run in imported.runs if run.truncated))
    if cut:
        raise TrtexecError(f"{', '.join(cut)}: {TRUNCATED}, so it has no {stat} latency; pass the whole log (copy "
                           f"it again from the device, or rerun bench_engine.sh there)")
    raise ConfigError(
        f"the trtexec output ({', '.join(imported.sources)}) has no {stat} latency (TensorRT 8.4 and older print "
        f"only percentile 99 unless run with --percentile); pass --stat with one it printed, e.g. --stat p99"
    )


def report_from_trtexec(
    imported: TrtexecImport,
    profile: TargetProfile,
    budget: Budget,
    *,
    evidence: Literal["imported", "measured"],
    out_dir: Path,
    model: str,
    host: str | None = None,
    onnx: Path | None = None,
    allow_other_device: bool = False,
) -> BenchReport:
    """Write bench/<target>.json and .md from trtexec's runs and judge the budget on them.

    Imported figures that name another device than the profile's leave the verdict UNCONFIRMED, with the
    reason, unless ``allow_other_device``.

    Args:
        imported: what :func:`leapkit.trtexec.read.read_trtexec` read.
        profile: the target.
        budget: the latency budget and the statistic judged.
        evidence: ``imported`` for files brought by the user, ``measured`` for a run over SSH.
        out_dir: bench/ goes inside it.
        model: what the report names as the model.
        host: the device's SSH host, for ``measured``.
        onnx: the ONNX model the engine was built from, to place profiled layers in ViT blocks and to
            predict each run's latency with the target's latency model.
        allow_other_device: judge imported figures from another device than the profile's anyway.

    Raises:
        ConfigError: no run has the statistic to judge (nothing is written).
        TrtexecError: the statistic to judge is missing because a log was cut inside its summary.
    """
    stat = budget.stat
    results = [_result(run) for run in imported.runs]
    _check_stat(results, stat, imported)
    forecaster = Forecaster.of(profile)
    shape = forecaster.graph_shape(onnx) if onnx is not None and onnx.is_file() else None
    for r in results:
        forecaster.attach(r, shape, measured_here=True)
    for r in results:
        value = r.stat_ms(stat)
        r.budget_ok = None if value is None else value <= budget.ms
    power_notes = _add_power(results)
    verdict, reason, gated = decide(results, profile, budget.ms, stat, evidence)
    energy = decide_energy(gated, budget.mj, evidence) if budget.mj is not None else None
    other = other_device(imported, profile) if evidence == "imported" else None
    if other and not allow_other_device:  # a budget is never judged on another device's figures
        verdict = "UNCONFIRMED"
        reason = (f"the trtexec figures come from {other}, not {profile.name}: another device's figures do not "
                  f"judge its budget; pass the target's own log (with its device.json), or --allow-other-device to "
                  f"judge them anyway")
        energy = (verdict, reason) if energy is not None else None
        for r in results:
            r.budget_ok = None
    notes = list(dict.fromkeys([
        *(f"{source}: {TRUNCATED}; the figures after the cut are missing"
          for source in dict.fromkeys(run.source for run in imported.runs if run.truncated)),
        *imported.warnings,
        *(f"trtexec ({Path(run.source).name}): {w}" for run in imported.runs for w in run.warnings),
        *_run_notes(imported, results),
        *_device_warnings(imported, profile),
        *warnings(results, {}),
        *power_notes,
    ]))
    for w in notes:
        log.warning(w)
    names = device_names(imported)
    device = ", ".join(names) or "a device the output does not name"
    measured_on = f"{host} ({device})" if host else device
    evidence_reason = (f"timed by trtexec on {host} over SSH" if evidence == "measured"
                       else f"read from {', '.join(imported.sources)}")
    provenance = Provenance(evidence, evidence_reason, measured_on, _environment(imported, host))
    report = BenchReport.of(profile, results, budget, provenance, Decision(verdict, reason, gated, energy),
                            model=model, warnings=notes)
    write_bench_report(report, Path(out_dir) / "bench" / f"{profile.name}.json", _profile_sections(imported, onnx))
    log.info("wrote %s and %s", report.json_path, report.md_path)
    return report


def _add_power(results: Sequence[BenchResult]) -> list[str]:
    """Each result's power from the tegrastats log beside its file (bench_engine.sh's results folder), where that
    folder holds one result; the notes on what the power samples lack."""
    folders: dict[Path, list[BenchResult]] = {}
    for r in results:
        if r.file:
            folders.setdefault(Path(r.file).parent, []).append(r)
    notes = []
    for folder, found in folders.items():
        power = read_power(folder) if len(found) == 1 else None
        if power is None:
            continue
        found[0].add_power(power)
        if power.lines_skipped:
            notes.append(f"tegrastats ({power.source}): {power.lines_skipped} lines in an unknown format skipped")
        if power.mean_w is None:
            notes.append(f"tegrastats ({power.source}): {power.describe()}; no energy per inference")
    return notes


def _environment(imported: TrtexecImport, host: str | None) -> dict[str, Any]:
    """The device the figures come from, as the report's ``environment`` (``source`` says it is trtexec's)."""
    fingerprint = imported.device or {}
    versions = list(dict.fromkeys(r.tensorrt for r in imported.runs if r.tensorrt))
    return {
        "source": "trtexec",
        "host": host or fingerprint.get("host") or fingerprint.get("hostname"),
        "device": ", ".join(device_names(imported)) or None,
        "tensorrt": ", ".join(versions) or fingerprint.get("tensorrt"),
        "sources": list(imported.sources),
        "fingerprint": fingerprint or None,
    }


def _images_per_s(run: TrtexecRun) -> float | None:
    """Images/s, as leapkit's own results report it: trtexec's qps counts engine executions of ``batch``
    images each (explicit batch), except for implicit-batch runs (``--batch``), whose figure is images/s."""
    if run.throughput_qps is None:
        return None
    return run.throughput_qps if run.throughput_unit == "images/s" else run.throughput_qps * run.batch


def _qps(run: TrtexecRun) -> float | None:
    """Queries (engine executions) per second: trtexec's figure, or its images/s over the batch (implicit batch)."""
    if run.throughput_qps is None:
        return None
    return run.throughput_qps / run.batch if run.throughput_unit == "images/s" else run.throughput_qps


def _profile_sections(imported: TrtexecImport, onnx: Path | None) -> list[str]:
    """The per-layer profile per ViT block and per op type, as Markdown; the throughput unit."""
    sections = [f"Note: {TRTEXEC_NOTE}"]
    if imported.profile is None:
        return sections
    nodes = None
    if onnx is not None and onnx.is_file():
        try:
            nodes = onnx_nodes(onnx)
        except Exception as e:  # the grouping is an extra: an unreadable model leaves blocks to the layer names
            log.warning("could not read %s for the layer profile (%s); blocks come from the layer names", onnx, e)
    tables = "\n\n".join(f"{t.title}:\n\n{t.to_markdown()}" for t in aggregate_profile(imported.profile, nodes))
    return [*sections, f"## Per-layer profile\n\nFrom `{imported.profile.source}`.\n\n{tables}"]


# --- where the files come from ----------------------------------------------------------------------------------------


def default_out_dir(paths: Sequence[Path]) -> Path:
    """Where bench/ goes without --out: the run whose export folder holds the first input, else beside it."""
    first = Path(paths[0]).resolve()
    folder = first if first.is_dir() else first.parent
    for parent in (folder, *folder.parents):
        if parent.name == EXPORT and (parent.parent / CONFIG).is_file():
            return parent.parent
    return folder


def _export_of(paths: Sequence[Path]) -> Path | None:
    """The export folder (with its model.onnx) that holds the first input, when there is one."""
    first = Path(paths[0]).resolve()
    for parent in first.parents:
        if (parent / "manifest.json").is_file():
            return parent
    return None


def bench_from_trtexec(profile: TargetProfile, request: BenchRequest) -> BenchReport:
    """Read trtexec's files (``request.from_trtexec``: logs, --exportTimes/--exportProfile JSON, device.json,
    folders) and write the report.

    Figures from another device than the profile's are UNCONFIRMED unless ``request.allow_other_device``.

    Raises:
        ConfigError: an input does not exist.
        TrtexecError: a log has no performance summary, or no file holds timing figures (nothing is written).
    """
    files = [Path(p) for p in request.from_trtexec or ()]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise ConfigError(f"--from-trtexec {', '.join(missing)}: no such file or folder; pass a trtexec log, its "
                          "--exportTimes/--exportProfile JSON, or the results folder bench_engine.sh wrote")
    out_dir = request.out or default_out_dir(files)
    require_writable(out_dir / "bench", "the bench report", "pass --out a folder you can write to")
    # tegrastats' files are read beside the trtexec log they belong to (_add_power), not as trtexec output
    imported = read_trtexec([f for f in files if f.name not in (POWER_LOG, POWER_MARKS)] or files, batch=request.batch)
    export = _export_of(files)
    return report_from_trtexec(
        imported, profile, Budget.of(profile, request.budget_ms, request.stat, request.budget_mj), evidence="imported",
        out_dir=out_dir,
        model=", ".join(map(str, files)), onnx=export / GRAPH if export else None,
        allow_other_device=request.allow_other_device,
    )


def _bundle_batch(manifest: ExportManifest | None) -> int | None:
    """The batch bench_engine.sh times at: the export's optimisation batch (None without a manifest)."""
    batch = manifest.batch.get("opt") if manifest is not None and isinstance(manifest.batch, dict) else None
    return batch if isinstance(batch, int) and batch > 0 else None


def bench_over_ssh(model: str | Path | None, profile: TargetProfile, request: BenchRequest) -> BenchReport:
    """Build, check and time MODEL's bundle on ``request.host`` for each precision (default: the profile's), then
    write the report (evidence measured).

    The device's results are copied to ``export/<target>/results/<precision>/`` (replacing an earlier copy), so
    that ``--from-trtexec`` can read them again later.

    Raises:
        ConfigError: MODEL has no export for the target.
        HostError: the device cannot be reached or lacks what the bundle needs (see
            :func:`leapkit.device.round_trip.bench_on_host`).
        CheckFailed: the engine fails the parity check on the device.
    """
    host = cast(str, request.host)
    precisions = cast(list[Precision], list(request.precisions or [profile.precision]))
    src = resolve_model(model, profile.name)
    export = src.export_dir
    if export is None or (src.target is not None and src.target != profile.name):
        where = f"the export in {export} is for {src.target}" if export else f"{model or 'runs/latest'} has no export"
        raise ConfigError(f"--host needs a deploy bundle for {profile.name}: {where}; run "
                          f"`leapkit export RUN --target {profile.name}` first")
    out_dir = request.out or src.out_dir
    require_writable(out_dir / "bench", "the bench report", "pass --out a folder you can write to")
    require_writable(export / "results", "the device's results", "make the export folder writable")
    merged = TrtexecImport()
    hosts = []
    for precision in precisions:
        results = export / "results" / precision
        shutil.rmtree(results, ignore_errors=True)  # the device's results/<precision> is made afresh too
        run = bench_on_host(export, host, precision, results, profile=profile,
                           ssh_options=request.ssh_options)
        if run.timing_cache_reused:
            log.info("the device's timing cache was reused for the %s build", precision)
        # leapkit made the timing run: the bundle's batch and the engine's precision are known
        part = read_trtexec([results], batch=_bundle_batch(src.manifest))
        for r in part.runs:
            r.precision = r.precision or precision
        merged.runs += part.runs
        merged.profile = merged.profile or part.profile
        merged.device = {**run.device, **(part.device or {})}
        merged.sources += part.sources
        merged.warnings += [*run.warnings, *part.warnings]
        hosts.append(run.host)
    return report_from_trtexec(
        merged, profile, Budget.of(profile, request.budget_ms, request.stat, request.budget_mj), evidence="measured",
        out_dir=out_dir,
        model=str(model) if model is not None else "runs/latest", host=hosts[0] if hosts else host,
        onnx=export / GRAPH,
    )
