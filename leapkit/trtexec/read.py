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
from leapkit.trtexec.exported import DEFAULT_WARMUP_MS, TimesSummary, is_times, load_json_values, summarize_times
from leapkit.trtexec.layers import LayerProfile, read_profile_json
from leapkit.trtexec.log import TrtexecRun, no_summary_error, read_log

__all__ = ["TrtexecImport", "TrtexecRun", "read_trtexec"]

log = logging.getLogger(__name__)

DEVICE_FILE = "device.json"
FOLDER_PATTERNS = ("*.log", "*.log.gz", "*.json", "*.json.gz")
_JSON_START = re.compile(r"\s*(?:\{|\[\s*(?:[{\]]|$))")  # a log line starts "[02/26/2024-..."
_PROFILE_START = re.compile(r'\s*\[\s*\{\s*"count"')


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
            if not found:
                raise TrtexecError(f"{path} holds no trtexec log or JSON (*.log, *.json); pass the results folder "
                                   "bench_engine.sh wrote")
            files += [(p, False) for p in found]
        elif path.is_file():
            files.append((path, True))
        else:
            raise TrtexecError(f"{path} not found; pass a trtexec log, an --exportTimes/--exportProfile JSON or a "
                               "results folder")
    return files


def read_trtexec(paths: Sequence[Path], warmup_ms: float | None = None) -> TrtexecImport:
    """Read trtexec logs, --exportTimes and --exportProfile files, device.json and folders holding them.

    Args:
        paths: files or folders (a folder contributes its ``*.log``, ``*.json`` and gzipped copies).
        warmup_ms: the warm-up of pre-8.5 --exportTimes files; default: the logs' warm-up, else 200 ms.

    Raises:
        TrtexecError: a file is missing or unreadable, a named log has no performance summary, or no
            file holds timing figures.
    """
    out = TrtexecImport()
    times: list[tuple[str, list[dict[str, Any]]]] = []
    profiles: list[LayerProfile] = []  # from --exportProfile files
    tables: list[LayerProfile] = []  # printed in logs
    silent_logs: list[TrtexecError] = []
    for path, named in _expand(paths):
        source = str(path)
        text = _read_text(path)
        if not _JSON_START.match(text):
            runs, table, notes = read_log(text, source)
            if not runs:
                error = no_summary_error(source, text)
                if named:
                    raise error
                silent_logs.append(error)
            out.runs += runs
            out.warnings += notes
            tables += [table] if table else []
        elif path.name == DEVICE_FILE:
            device = load_json_values(text, source)
            if len(device) != 1 or not isinstance(device[0], dict):
                raise TrtexecError(f"{source} is not a device fingerprint (a JSON object); rerun bench_engine.sh")
            out.device = device[0]
        elif _PROFILE_START.match(text):
            profiles += read_profile_json(text, source)
        else:
            values = load_json_values(text, source)
            if values and all(is_times(v) for v in values):
                times += [(source, v) for v in values]
            elif named:
                what = "an --exportLayerInfo file" if any(isinstance(v, dict) and "Layers" in v for v in values) \
                    else "not a trtexec file"
                raise TrtexecError(f"{source} is {what}; pass a trtexec log or its --exportTimes/--exportProfile JSON")
            else:
                log.debug("%s: not a trtexec timing or profile file; skipped", source)
                continue
        out.sources.append(source)
    _add_times(out, times, warmup_ms)
    _add_profile(out, profiles or tables)
    if not out.runs and silent_logs:
        raise silent_logs[0]
    if not out.runs:
        what = "only a layer profile" if out.profile else "no timing figures"
        raise TrtexecError(f"{', '.join(map(str, paths))}: {what}; pass the log or --exportTimes JSON of a trtexec "
                           "timing run too")
    out.warnings += [f"{e}; skipped" for e in silent_logs]
    return out


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
