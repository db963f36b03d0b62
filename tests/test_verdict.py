"""leapkit.latency.verdict: which result is judged, PASS/FAIL and its reason, and the warnings."""

from __future__ import annotations

import pytest

from leapkit.errors import ConfigError
from leapkit.latency.report import BenchResult
from leapkit.latency.verdict import decide, gated_result, stat_key, warnings
from leapkit.profiles import load_target


def result(runtime: str, precision: str, p99: float | None, **kw) -> BenchResult:
    fmt = {"torch": "pytorch", "onnxruntime": "onnx", "tensorrt": "engine"}[runtime]
    status = "ok" if p99 is not None else "failed: RuntimeError: boom"
    return BenchResult(runtime=runtime, format=fmt, precision=precision, batch=1, p99_ms=p99, p50_ms=p99, status=status,
                       **kw)


@pytest.fixture(scope="module")
def x86():
    return load_target("x86-cpu")  # onnxruntime fp32


def test_stat_key():
    assert stat_key("p99") == "p99_ms" and stat_key("mean") == "mean_ms"
    with pytest.raises(ConfigError, match="unknown statistic 'p42'; use one of min, mean, p50"):
        stat_key("p42")


def test_gated_result_prefers_the_targets_runtime_and_precision(x86):
    results = [result("torch", "fp32", 1.0), result("onnxruntime", "int8", 2.0), result("onnxruntime", "fp32", 3.0)]
    assert gated_result(results, x86, "p99").precision == "fp32"
    assert gated_result(results[:2], x86, "p99").precision == "int8"
    assert gated_result(results[:1], x86, "p99").runtime == "torch"
    assert gated_result([result("torch", "fp32", None)], x86, "p99") is None


def test_decide_pass_fail_and_reasons(x86):
    results = [result("torch", "fp32", 1.0), result("onnxruntime", "fp32", 3.0)]
    assert decide(results, x86, 5.0, "p99") == ("PASS", "ONNX fp32 (onnxruntime) p99 3.000 ms <= 5 ms", results[1])
    verdict, reason, _ = decide(results, x86, 2.0, "p99")
    assert verdict == "FAIL" and reason == "ONNX fp32 (onnxruntime) p99 3.000 ms > 2 ms"
    verdict, reason, _ = decide(results[:1], x86, 2.0, "p99")
    assert verdict == "PASS" and reason.endswith("measured with torch, not the target's onnxruntime")
    verdict, reason, gated = decide([result("torch", "fp32", None)], x86, 2.0, "p99")
    assert (verdict, gated) == ("FAIL", None) and reason == "no format ran (PyTorch eager failed: RuntimeError: boom)"


def test_a_format_the_export_failed_fails_the_verdict_whatever_its_latency(x86):
    failed = result("onnxruntime", "fp32", 1.0, export_status="failed: parity: cosine 0.91 < 0.9999")
    verdict, reason, _ = decide([failed], x86, 5.0, "p99")
    assert verdict == "FAIL" and "the export marked it as failed: parity: cosine 0.91" in reason


def test_warnings(x86):
    noisy = result("onnxruntime", "fp32", 1.0, cv=0.5, noisy=True)
    broken = result("torch", "fp32", None)
    out = warnings([noisy, broken], {"load_avg_1m": 9.0, "cpu_affinity": 2})
    assert out == [
        "PyTorch eager: failed: RuntimeError: boom",
        "ONNX fp32: cv 0.50 > 0.1: the machine is too noisy to trust the tail latency",
        "load average 9.0 exceeds the 2 usable cores: other processes competed for the CPU",
    ]
