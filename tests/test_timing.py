"""leapkit.latency.timing: the timer, its statistics, thread counts and the Method record.

Latencies are never asserted on (the CI machine is shared); only their consistency is.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from leapkit.errors import ConfigError
from leapkit.latency.timing import (
    MIN_ITERATIONS,
    Method,
    auto_thread_candidates,
    latency_stats,
    parse_threads,
    peak_rss_mb,
    time_runner,
)


def test_latency_stats():
    samples = list(range(1, 101))  # 1..100 ms
    s = latency_stats(samples, batch=4)
    assert s["min_ms"] == 1 and s["max_ms"] == 100 and s["mean_ms"] == pytest.approx(50.5)
    assert s["p50_ms"] == pytest.approx(np.percentile(samples, 50))
    assert s["p99_ms"] == pytest.approx(np.percentile(samples, 99))
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["cv"] == pytest.approx(np.std(samples, ddof=1) / 50.5)
    assert s["throughput"] == pytest.approx(4 * 1000 / 50.5)
    assert s["iterations"] == 100


def test_time_runner_counts_iterations_and_warms_up():
    calls = []
    samples = time_runner(lambda: calls.append(1), warmup_s=0.0, iterations=7)
    assert len(samples) == 7 and len(calls) == 8  # one warm-up call at least
    samples = time_runner(lambda: None, warmup_s=0.0, iterations=None, duration_s=1e-6)
    assert len(samples) == MIN_ITERATIONS


def test_thread_candidates_and_parsing():
    assert auto_thread_candidates(1) == (1,)
    assert auto_thread_candidates(2) == (1, 2)
    assert auto_thread_candidates(6) == (1, 2, 4, 6)
    assert auto_thread_candidates(8) == (1, 2, 4, 8)
    assert parse_threads("auto") == "auto" and parse_threads(None) is None
    assert parse_threads("3") == 3 and parse_threads(2) == 2
    for bad in ("0", "-1", "many", "2.5", 0):
        with pytest.raises(ConfigError, match="--threads must be a positive integer or 'auto'"):
            parse_threads(bad)


def test_method_problems_name_every_bad_value():
    assert Method(batch=1, threads=1).problems() == []
    problems = Method(batch=0, threads=0, warmup_s=-1.0, iterations=0, duration_s=0.0).problems()
    assert problems == [
        "--batch must be >= 1, got 0",
        "--threads must be >= 1, got 0",
        "--iterations must be >= 1, got 0",
        "--duration must be a finite number of seconds > 0, got 0.0",
        "--warmup must be a finite number of seconds >= 0, got -1.0",
    ]
    # an infinite duration would never end, a NaN warm-up compares false to everything
    assert len(Method(batch=1, threads=1, duration_s=math.inf, warmup_s=math.nan).problems()) == 2


def test_method_round_trips_with_the_keys_bench_json_records():
    method = Method(batch=2, threads=4, thread_candidates=(1, 2, 4), providers=("CPUExecutionProvider",))
    data = method.to_dict()
    assert list(data) == ["batch", "threads", "warmup_s", "iterations", "duration_s", "compile", "device", "providers",
                          "thread_candidates", "min_iterations", "noisy_cv", "timer"]
    assert data["thread_candidates"] == [1, 2, 4] and Method.from_dict(data) == method


def test_peak_rss_is_read_on_linux():
    rss = peak_rss_mb()
    assert rss is None or rss > 0
