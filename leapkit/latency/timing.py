"""How a latency is measured: the timer, its statistics, CPU thread counts, and the Method record.

The method follows trtexec: warm up for a fixed time, then time a counted number of iterations
(or run for a duration), one synchronous inference at a time, and report min/mean/percentiles/max,
throughput and the coefficient of variation. Thread counts are set explicitly and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from leapkit.errors import ConfigError
from leapkit.records import Record

log = logging.getLogger(__name__)

NOISY_CV = 0.10  # above this the spread says more about the machine than about the model
MIN_ITERATIONS = 10
# --threads auto: each candidate thread count is timed this long (after this warm-up) per format.
PROBE_S, PROBE_WARMUP_S = 0.5, 0.2
TIMER = "time.perf_counter, one synchronous inference per sample"
# More threads than cores only time the scheduler; beyond this many per usable core (or in all) it is a typo.
MAX_THREADS_PER_CORE, MAX_THREADS = 4, 1024

"""ONNX Runtime's execution provider: ``auto`` picks CUDA for GPU targets when this build has it."""


@dataclass
class Method(Record):
    """How every format is measured; bench/<target>.json records it under ``method``.

    Args:
        batch: images per inference.
        threads: CPU threads for torch and ONNX Runtime (the largest candidate with ``--threads auto``).
        warmup_s: warm-up time per format.
        iterations: timed iterations; None runs for ``duration_s``.
        duration_s: timed duration per format when ``iterations`` is None.
        compile: the PyTorch student runs through torch.compile.
        device: where the PyTorch student runs.
        providers: ONNX Runtime's execution providers, best first.
        thread_candidates: with ``--threads auto``, the counts probed per format (the fastest is
            measured); empty: every format uses ``threads``.
    """

    batch: int
    threads: int
    warmup_s: float = 0.5
    iterations: int | None = None
    duration_s: float = 3.0
    compile: bool = False
    device: str = "cpu"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    thread_candidates: tuple[int, ...] = ()
    min_iterations: int = MIN_ITERATIONS
    noisy_cv: float = NOISY_CV
    timer: str = TIMER

    def problems(self) -> list[str]:
        """Every invalid value, each as ``--flag must be ..., got X``; empty when all are valid."""
        p = []
        if self.batch < 1:
            p.append(f"--batch must be >= 1, got {self.batch}")
        if self.threads < 1:
            p.append(f"--threads must be >= 1, got {self.threads}")
        if self.iterations is not None and self.iterations < 1:
            p.append(f"--iterations must be >= 1, got {self.iterations}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            p.append(f"--duration must be a finite number of seconds > 0, got {self.duration_s}")
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            p.append(f"--warmup must be a finite number of seconds >= 0, got {self.warmup_s}")
        return p


def time_runner(
    fn: Callable[[], None], warmup_s: float = 0.5, iterations: int | None = None, duration_s: float = 3.0
) -> list[float]:
    """Per-inference latencies in ms: warm up for ``warmup_s``, then ``iterations`` calls or ``duration_s``.

    At least one warm-up call and :data:`MIN_ITERATIONS` timed calls run whatever the limits.

    Args:
        fn: one synchronous inference (``runner.timed(x)``).
        warmup_s: warm-up time.
        iterations: timed calls; None runs for ``duration_s``.
        duration_s: timed duration when ``iterations`` is None.
    """
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warmup_s:
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if iterations is not None:
            if len(samples) >= iterations:
                break
        elif len(samples) >= MIN_ITERATIONS and time.perf_counter() - start >= duration_s:
            break
    return samples


def latency_stats(samples_ms: Sequence[float], batch: int) -> dict[str, float]:
    """min/mean/p50/p90/p95/p99/max and std in ms, throughput in images/s, cv = std/mean, iterations.

    Args:
        samples_ms: per-inference latencies.
        batch: images per inference (for the throughput).
    """
    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    out = {"min_ms": float(a.min()), "mean_ms": mean}
    for q in (50, 90, 95, 99):
        out[f"p{q}_ms"] = float(np.percentile(a, q))
    out.update(max_ms=float(a.max()), std_ms=std, cv=std / mean if mean > 0 else 0.0, throughput=batch * 1e3 / mean,
               iterations=int(a.size))
    return out


def reset_peak_rss() -> None:
    """Reset the process's peak resident memory to its current size (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float | None:
    """The process's peak resident memory (VmHWM) in MiB, or None where /proc cannot say."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def usable_cores() -> int | None:
    """The CPUs this process may run on (its affinity mask), or None where the OS cannot say."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def auto_thread_candidates(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself: what ``--threads auto`` probes."""
    counts = {cores}
    n = 1
    while n < cores:
        counts.add(n)
        n *= 2
    return tuple(sorted(counts))


def parse_threads(value: int | str | None) -> int | Literal["auto"] | None:
    """``--threads``: a positive integer, ``auto``, or None (the target's).

    Raises:
        ConfigError: anything else.
    """
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(value).strip() != str(n):
        raise ConfigError(f"--threads must be a positive integer or 'auto', got {value!r}")
    return check_threads(n)


def check_threads(n: int, flag: str = "--threads") -> int:
    """A thread count checked against the cores this process may use: a warning above them, an error far above.

    Threads beyond the usable cores share them, so the timings are slower than the target's own and a
    budget can fail for nothing; far beyond (more than MAX_THREADS_PER_CORE per core, or MAX_THREADS) it
    is a typo, refused before any work.

    Raises:
        ConfigError: ``n`` is below 1 or absurdly above the usable cores.
    """
    cores = usable_cores() or os.cpu_count() or 1
    limit = min(MAX_THREADS, MAX_THREADS_PER_CORE * cores)
    if n < 1 or n > limit:
        raise ConfigError(f"{flag} {n} is not a usable thread count here: this process may use {cores} cores; pass "
                          f"{flag} {cores} or fewer (or auto)")
    if n > cores:
        log.warning("%s %d is more than the %d cores this process may use: the threads share them, so the timings "
                    "will be slower than the target's own", flag, n, cores)
    return n
