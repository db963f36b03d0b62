"""trtexec's JSON files as Python values, and its timing statistics recomputed from ``--exportTimes``.

trtexec writes JSON through C++ iostreams: a non-finite float is a bare ``nan``, ``-nan`` or ``inf``
token (``nan(ind)`` from MSVC), which strict JSON rejects, and some benchmark scripts append one
array per run to the same file. :func:`load_json_values` reads both.

An ``--exportTimes`` file holds one record per query. Before TensorRT 8.5 it also holds the warm-up
queries; their compute starts before the warm-up time (200 ms unless ``--warmUp`` says otherwise)
and are dropped here as trtexec drops them. TensorRT 7.x labels its fields In/Out and swaps them:
``startEnqMs`` holds the start of the host-to-device copy. The statistics follow trtexec's own
rules (:func:`trtexec_stats`), so a figure recomputed from the file matches the printed summary.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leapkit.errors import TrtexecError

STAT_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max")
PERCENTILES = (90.0, 95.0, 99.0)
DEFAULT_WARMUP_MS = 200.0

# a JSON string (skipped) or a bare non-finite token outside strings
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\w.])(-?)(nan|inf(?:inity)?)(?:\([a-z]*\))?(?![\w.])', re.IGNORECASE)


def _json_token(m: re.Match[str]) -> str:
    if m.group(2) is None:
        return m.group(0)
    if m.group(2).lower() == "nan":
        return "NaN"
    return "-Infinity" if m.group(1) else "Infinity"


def load_json_values(text: str, source: str) -> list[Any]:
    """Every JSON value in ``text``, in order, with trtexec's bare nan/inf tokens accepted.

    Args:
        text: the file's text; several concatenated values are allowed.
        source: the file name, for the error message.

    Raises:
        TrtexecError: the text is not JSON even so.
    """
    text = _TOKEN.sub(_json_token, text)
    decoder, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise TrtexecError(
                f"{source} is not valid JSON ({e.msg} at line {e.lineno}); pass the file trtexec wrote, unedited"
            ) from e
        values.append(value)


def percentile_index(n: int, p: float) -> int:
    """trtexec's percentile index into ``n`` sorted values: no interpolation, float32 arithmetic as in C++."""
    frac = np.float32(1) - np.float32(p) / np.float32(100)
    return max(n - 1 - int(frac * np.float32(n)), 0)


def trtexec_stats(values: Sequence[float], percentiles: Sequence[float] = PERCENTILES) -> dict[str, float | None]:
    """min, mean, p50 (the median), the ``percentiles`` and max of ``values`` by trtexec's rules.

    The median is the middle value, or the mean of the two middle values; a percentile is
    ``sorted[max(n - 1 - int((1 - p / 100) * n), 0)]``. Keys are :data:`STAT_KEYS`; a percentile not
    asked for is None.
    """
    s = sorted(values)
    n = len(s)
    out: dict[str, float | None] = dict.fromkeys(STAT_KEYS)
    if not n:
        return out
    out.update(min=s[0], max=s[-1], mean=math.fsum(s) / n,
               p50=s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)
    for p in percentiles:
        if f"p{p:g}" in out:
            out[f"p{p:g}"] = s[percentile_index(n, p)]
    return out


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Population standard deviation over the mean, as a fraction (trtexec prints it as a percentage)."""
    if not values:
        return None
    mean = math.fsum(values) / len(values)
    return statistics.pstdev(values) / mean if mean > 0 else None


def is_times(value: Any) -> bool:
    """Whether a JSON value is an ``--exportTimes`` array (its records carry ``computeMs``)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "computeMs" in value[0]


@dataclass
class TimesSummary:
    """The figures trtexec would print for one ``--exportTimes`` array.

    Args:
        iterations: timed queries (after the warm-up).
        warmups: records dropped as warm-up (pre-8.5 files only).
        latency_ms: host latency (``latencyMs``) statistics.
        gpu_compute_ms: GPU compute (``computeMs``) statistics.
        other_ms: ``h2d``, ``d2h`` and (8.0-8.2, 7.x) ``end_to_end`` statistics.
        throughput_qps: timed queries per second of walltime.
        walltime_s: last device-to-host end minus first timed host-to-device start.
        cv: GPU compute coefficient of variation, a fraction.
        legacy_keys: the file uses TensorRT 7.x key names.
        dropped: records left out for a non-finite time.
    """

    iterations: int
    warmups: int
    latency_ms: dict[str, float | None]
    gpu_compute_ms: dict[str, float | None]
    other_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    throughput_qps: float | None = None
    walltime_s: float | None = None
    cv: float | None = None
    legacy_keys: bool = False
    dropped: int = 0


def summarize_times(records: list[dict[str, Any]], source: str,
                    warmup_ms: float = DEFAULT_WARMUP_MS) -> TimesSummary:
    """trtexec's summary recomputed from the records of one ``--exportTimes`` array.

    Args:
        records: the array's records, in file order.
        source: the file name, for messages.
        warmup_ms: trtexec's warm-up time; records whose compute starts earlier are warm-up queries.

    Raises:
        TrtexecError: a record lacks a timing key, or no query follows the warm-up.
    """
    legacy = "startInMs" in records[0]
    first_key, last_key = ("startEnqMs", "endOutMs") if legacy else ("startH2dMs", "endD2hMs")
    transfer_keys = {"h2d": "inMs" if legacy else "h2dMs", "d2h": "outMs" if legacy else "d2hMs",
                     "end_to_end": "endToEndMs"}
    needed = ("startComputeMs", "computeMs", "latencyMs", first_key, last_key)
    bad = next((i for i, r in enumerate(records) if not all(isinstance(r.get(k), (int, float)) for k in needed)), None)
    if bad is not None:
        raise TrtexecError(f"{source}: query {bad} lacks one of {', '.join(needed)}; pass the --exportTimes file "
                           "trtexec wrote, unedited")
    # trtexec keeps every query from the first one whose compute starts after the warm-up
    start = next((i for i, r in enumerate(records) if r["startComputeMs"] >= warmup_ms), None)
    if start is None:
        raise TrtexecError(f"{source} has no query after the {warmup_ms:g} ms warm-up; rerun trtexec for longer")
    timed = records[start:]
    finite = [r for r in timed if math.isfinite(r["computeMs"]) and math.isfinite(r["latencyMs"])]
    compute = [float(r["computeMs"]) for r in finite]
    other = {name: trtexec_stats([float(r[key]) for r in finite if math.isfinite(r.get(key, math.nan))])
             for name, key in transfer_keys.items() if key in records[0]}
    wall_ms = timed[-1][last_key] - timed[0][first_key]
    ok = math.isfinite(wall_ms) and wall_ms > 0
    return TimesSummary(
        iterations=len(timed), warmups=start,
        latency_ms=trtexec_stats([float(r["latencyMs"]) for r in finite]), gpu_compute_ms=trtexec_stats(compute),
        other_ms=other, throughput_qps=len(timed) / wall_ms * 1000 if ok else None,
        walltime_s=wall_ms / 1000 if ok else None, cv=coefficient_of_variation(compute), legacy_keys=legacy,
        dropped=len(timed) - len(finite),
    )
