"""Read trtexec's results: its logs, ``--exportTimes`` and ``--exportProfile`` JSON, and a device fingerprint.

    read_trtexec(paths) -> TrtexecImport (one TrtexecRun per timing run, the layer profile, the device)

A log gives one :class:`TrtexecRun` per timing run (:mod:`leapkit.trtexec.log`). An
``--exportTimes`` file is summarised as trtexec would print it (:mod:`leapkit.trtexec.exported`)
and is a run of its own only when no log is given: beside a log it fills the coefficient of
variation of the run with the same number of timed queries, since the log's summary is what
trtexec printed. The layer profile comes from an ``--exportProfile`` file, else from a profile
table printed in a log (:mod:`leapkit.trtexec.layers`). ``device.json`` (the fingerprint
``bench_engine.sh`` writes) is recognised by its name. A folder contributes its ``*.log`` and
``*.json`` files (gzipped or not); files there that are not trtexec's are skipped.

A run's batch and precision come from its own log where it states them, else from the files beside
it (:mod:`leapkit.trtexec.sidecars`: an ``--exportLayerInfo`` file, trex's metadata, device.json,
the engine's sidecar), else from ``batch`` (leapkit's ``--batch``); a batch nothing states is 1, with
the warning "batch not stated, assumed 1: pass --batch N". Runs of the same precision are labelled
apart (by batch, engine or file, else "run 2 of 14").
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leapkit.errors import TrtexecError
from leapkit.records import Record
from leapkit.trtexec.context import flags
from leapkit.trtexec.exported import DEFAULT_WARMUP_MS, TimesSummary, is_times, load_json_values, summarize_times
from leapkit.trtexec.layers import LayerProfile, read_profile_json
from leapkit.trtexec.log import TrtexecRun, no_summary_error, read_log
from leapkit.trtexec.sidecars import RunFacts, engine_sidecar, is_sidecar, sidecar_facts, trex_siblings

__all__ = ["TrtexecImport", "TrtexecRun", "read_trtexec"]

log = logging.getLogger(__name__)

DEVICE_FILE = "device.json"
FOLDER_PATTERNS = ("*.log", "*.log.gz", "*.json", "*.json.gz")
_JSON_START = re.compile(r"\s*(?:\{|\[\s*(?:[{\]]|$))")  # a log line starts "[02/26/2024-..."
_PROFILE_START = re.compile(r'\s*\[\s*\{\s*"count"')
NOT_STATED = "batch not stated, assumed 1: pass --batch N"


@dataclass
class TrtexecImport(Record):
    """Everything read from trtexec's files.

    Args:
        runs: the timing runs, in file order.
        profile: the per-layer profile (an --exportProfile file, else a log's profile table).
        device: the device fingerprint (device.json) when one was given.
        sources: the files read.
        warnings: what the reader noticed (non-finite values, files not used, failed runs).
    """

    runs: list[TrtexecRun] = field(default_factory=list)
    profile: LayerProfile | None = None
    device: dict[str, Any] | None = None
    sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise TrtexecError(f"cannot read {path} ({type(e).__name__}: {e}); pass a readable trtexec file") from e
    return data.decode("utf-8", errors="replace")


def _expand(paths: Sequence[Path]) -> list[tuple[Path, bool]]:
    """Files to read, each with whether it was named explicitly (a folder's unknown JSON is skipped)."""
    files: list[tuple[Path, bool]] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted({p for pattern in FOLDER_PATTERNS for p in path.glob(pattern) if p.is_file()})
            if not found:  # bench_engine.sh's results/ itself: one folder per precision
                found = sorted({p for pattern in FOLDER_PATTERNS for p in path.glob(f"*/{pattern}") if p.is_file()})
            if not found:
                raise TrtexecError(f"{path} holds no trtexec log or JSON (*.log, *.json), nor do its subfolders; pass "
                                   "the results folder bench_engine.sh wrote")
            files += [(p, False) for p in found]
        elif path.is_file():
            files.append((path, True))
        else:
            raise TrtexecError(f"{path} not found; pass a trtexec log, an --exportTimes/--exportProfile JSON or a "
                               "results folder")
    return files


def read_trtexec(paths: Sequence[Path], warmup_ms: float | None = None, batch: int | None = None) -> TrtexecImport:
    """Read trtexec logs, --exportTimes and --exportProfile files, device.json and folders holding them.

    Args:
        paths: files or folders (a folder contributes its ``*.log``, ``*.json`` and gzipped copies).
        warmup_ms: the warm-up of pre-8.5 --exportTimes files; default: the logs' warm-up, else 200 ms.
        batch: the images per query of runs whose files do not state it (leapkit's ``--batch``).

    Raises:
        TrtexecError: a file is missing or unreadable, a named log has no performance summary, or no
            file holds timing figures.
    """
    out = TrtexecImport()
    times: list[tuple[str, list[dict[str, Any]]]] = []
    profiles: list[LayerProfile] = []  # from --exportProfile files
    tables: list[LayerProfile] = []  # printed in logs
    silent_logs: list[TrtexecError] = []
    facts: list[RunFacts] = []  # what files beside the figures say of the runs
    layer_infos: list[TrtexecError] = []
    files = _expand(paths)
    named_files = {p.resolve() for p, _ in files}
    files += [(p, False) for p, _ in list(files) for p in trex_siblings(p) if p.resolve() not in named_files]
    for path, named in files:
        source = str(path)
        text = _read_text(path)
        if not _JSON_START.match(text):
            runs, table, notes = read_log(text, source)
            if not runs:
                error = no_summary_error(source, text)
                if named:
                    raise error
                silent_logs.append(error)
            for run in runs:
                _apply(run, engine_sidecar(run.command, path))
            out.runs += runs
            out.warnings += notes
            tables += [table] if table else []
        elif path.name == DEVICE_FILE:
            device = load_json_values(text, source)
            if len(device) != 1 or not isinstance(device[0], dict):
                raise TrtexecError(f"{source} is not a device fingerprint (a JSON object); rerun bench_engine.sh")
            out.device = device[0]
            facts += [f for f in [sidecar_facts({"run": device[0].get("run")}, source)] if f]
        elif _PROFILE_START.match(text):
            profiles += read_profile_json(text, source)
        else:
            values = load_json_values(text, source)
            if values and all(is_times(v) for v in values):
                times += [(source, v) for v in values]
            elif len(values) == 1 and is_sidecar(values[0]):
                facts += [f for f in [sidecar_facts(values[0], source)] if f]
                if named and "Layers" in values[0]:
                    layer_infos.append(TrtexecError(
                        f"{source} is an --exportLayerInfo file; pass a trtexec log or its --exportTimes/"
                        "--exportProfile JSON (the layer information only adds the batch)"))
            elif named:
                raise TrtexecError(f"{source} is not a trtexec file; pass a trtexec log or its --exportTimes/"
                                   "--exportProfile JSON")
            else:
                log.debug("%s: not a trtexec timing or profile file; skipped", source)
                continue
        out.sources.append(source)
    _add_times(out, times, warmup_ms)
    _add_profile(out, profiles or tables)
    if not out.runs and (silent_logs or layer_infos):
        raise (silent_logs or layer_infos)[0]
    if not out.runs:
        what = "only a layer profile" if out.profile else "no timing figures"
        raise TrtexecError(f"{', '.join(map(str, paths))}: {what}; pass the log or --exportTimes JSON of a trtexec "
                           "timing run too")
    out.warnings += [f"{e}; skipped" for e in silent_logs]
    for run in out.runs:
        for fact in facts:
            _apply(run, fact)
    _given_batch(out, batch)
    _label(out.runs)
    return out


def _apply(run: TrtexecRun, facts: RunFacts | None) -> None:
    """Fill what the run's own file does not say from another file (device.json only for its own engine)."""
    engine = flags(run.command or "").get("--loadEngine")
    if facts is None or (facts.engine and engine and Path(facts.engine).name != Path(engine).name):
        return
    if run.batch_source is None and facts.batch:
        run.batch, run.batch_source = facts.batch, facts.source
        if facts.implicit and run.kind == "summary":
            run.throughput_unit = "images/s"
    run.precision = run.precision or facts.precision
    run.device = run.device or facts.device


def _given_batch(out: TrtexecImport, batch: int | None) -> None:
    """leapkit's ``--batch`` for runs whose files do not state one; the warning for runs still without."""
    unstated: dict[str, int] = {}
    for run in out.runs:
        if run.batch_source is None and batch is not None:
            run.batch, run.batch_source = batch, f"--batch {batch} (given to leapkit)"
        elif run.batch_source is None:
            unstated[run.source] = unstated.get(run.source, 0) + 1
        elif batch is not None and run.batch != batch:
            out.warnings.append(f"{run.source}: the file states batch {run.batch} ({run.batch_source}); "
                                f"--batch {batch} is not used for it")
    out.warnings += [f"{source}: {NOT_STATED}" + (f" ({n} runs)" if n > 1 else "") for source, n in unstated.items()]


def _label(runs: list[TrtexecRun]) -> None:
    """Label runs that share a precision apart: by what differs among them (batch, engine, file), else by position."""
    per_file: dict[str, list[TrtexecRun]] = {}
    for run in runs:
        per_file.setdefault(run.source, []).append(run)
    groups: dict[str | None, list[TrtexecRun]] = {}
    for run in runs:
        groups.setdefault(run.precision, []).append(run)
    for group in groups.values():
        if len(group) < 2:
            continue
        describe = [lambda r: f"batch {r.batch}" if r.batch_source else "batch not stated",
                    lambda r: Path(_engine(r)).name if _engine(r) else "",
                    lambda r: Path(r.source).name]
        varying = [d for d in describe if len({d(r) for r in group}) > 1]
        labels = [", ".join(p for p in (d(r) for d in varying) if p) for r in group]
        for run, label in zip(group, labels, strict=True):
            if labels.count(label) > 1:
                mine = per_file[run.source]
                position = f"run {mine.index(run) + 1} of {len(mine)}"
                label = f"{label}, {position}" if label else position
            run.label = label or None


def _engine(run: TrtexecRun) -> str:
    given = flags(run.command or "")
    return given.get("--loadEngine") or given.get("--saveEngine") or given.get("--onnx") or ""


def _add_times(out: TrtexecImport, times: list[tuple[str, list[dict[str, Any]]]], warmup_ms: float | None) -> None:
    """Times files become runs when no log was given; beside logs they fill the cv of the run they match."""
    logged = [r for r in out.runs if r.kind == "summary"]
    warmups = {r.warmup_ms for r in logged if r.warmup_ms is not None}
    warmup = warmup_ms if warmup_ms is not None else warmups.pop() if len(warmups) == 1 else DEFAULT_WARMUP_MS
    for i, (source, records) in enumerate(times):
        same = [j for j, (s, _) in enumerate(times) if s == source]
        label = source if len(same) == 1 else f"{source} (array {same.index(i) + 1})"
        summary = summarize_times(records, label, warmup)
        if summary.dropped:
            out.warnings.append(f"{label}: {summary.dropped} queries with a non-finite time left out")
        if not logged:
            out.runs.append(_times_run(label, summary))
            continue
        match = [r for r in logged if r.iterations == summary.iterations]
        if len(match) == 1:
            match[0].cv = match[0].cv if match[0].cv is not None else summary.cv
        else:
            out.warnings.append(f"{label}: its {summary.iterations} timed queries match no single log run; not used")


def _times_run(source: str, s: TimesSummary) -> TrtexecRun:
    return TrtexecRun(source=source, latency_ms=s.latency_ms, gpu_compute_ms=s.gpu_compute_ms,
                      throughput_qps=s.throughput_qps, cv=s.cv, iterations=s.iterations, other_ms=s.other_ms,
                      walltime_s=s.walltime_s, warmup_queries=s.warmups or None, kind="times")


def _add_profile(out: TrtexecImport, profiles: list[LayerProfile]) -> None:
    if profiles:
        out.profile = profiles[0]
    if len(profiles) > 1:
        out.warnings.append(f"{len(profiles)} layer profiles given; {out.profile.source} is used")
