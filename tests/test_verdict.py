"""leapkit.latency.verdict: which result is judged, PASS/FAIL and its reason, and the warnings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from leapkit.errors import ConfigError
from leapkit.latency.cost import Cost, roofline
from leapkit.latency.records import BenchResult
from leapkit.latency.verdict import (
    choice_reason,
    decide,
    gated_result,
    runs_on_target,
    setting_warnings,
    stat_key,
    version_matches,
    warnings,
)
from leapkit.profiles import load_target


def result(runtime: str, precision: str, p99: float | None, **kw) -> BenchResult:
    fmt = {"torch": "pytorch", "onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "engine"}[runtime]
    status = "ok" if p99 is not None else "failed: RuntimeError: boom"
    return BenchResult(runtime=runtime, format=fmt, precision=precision, batch=1, p99_ms=p99, p50_ms=p99, status=status,
                       **kw)


@pytest.fixture(scope="module")
def x86():
    """ONNX Runtime fp32 alone: a profile without ``runtimes`` and ``choose``, judged as every target was before."""
    return replace(load_target("x86-cpu"), runtimes=(), choose="profile", precisions=("fp32", "int8"))


@pytest.fixture(scope="module")
def fastest():
    return load_target("x86-cpu")  # runtimes [openvino, onnxruntime], choose: fastest


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
    assert (verdict, gated) == ("FAIL", None)
    assert reason == "no format ran on x86-cpu (PyTorch eager failed: RuntimeError: boom)"


def test_a_format_the_export_failed_fails_the_verdict_whatever_its_latency(x86):
    failed = result("onnxruntime", "fp32", 1.0, export_status="failed: parity: cosine 0.91 < 0.9999")
    verdict, reason, _ = decide([failed], x86, 5.0, "p99")
    assert verdict == "FAIL" and "the export marked it as failed: parity: cosine 0.91" in reason


def test_choose_fastest_judges_the_fastest_variant_that_passed(fastest):
    failed = "failed: parity: worst cosine 0.91 < 0.98"
    results = [result("torch", "fp32", 0.5), result("onnxruntime", "fp32", 3.0), result("onnxruntime", "int8", 2.0),
               result("openvino", "fp32", 2.5), result("openvino", "bf16", 1.8),
               result("openvino", "int8", 1.2, export_status=failed)]
    gated = gated_result(results, fastest, "p99")
    assert gated is results[4]  # PyTorch is not a deploy runtime; the failed INT8 IR is not a candidate
    verdict, reason, judged = decide(results, fastest, 33.3, "p99")
    assert (verdict, judged) == ("PASS", gated) and reason == "OpenVINO bf16 (openvino) p99 1.800 ms <= 33.3 ms"
    assert choice_reason(results, fastest, "p99", "measured", judged) == (
        "OpenVINO bf16 (openvino), the fastest by p99 of the 4 variants in openvino, onnxruntime whose export checks "
        "passed (1.800 ms; next ONNX int8 2.000 ms); left out, their export checks failed: OpenVINO int8")
    assert choice_reason(results, replace(fastest, choose="profile"), "p99", "measured", judged) is None


def test_choose_fastest_ties_go_to_the_preferred_runtime_and_failures_still_fail(fastest):
    tie = [result("onnxruntime", "int8", 2.0), result("openvino", "int8", 2.0)]
    assert gated_result(tie, fastest, "p99") is tie[1]
    broken = [result("onnxruntime", "fp32", 1.0, export_status="failed: parity"),
              result("openvino", "int8", 2.0, export_status="failed: accuracy")]
    verdict, reason, gated = decide(broken, fastest, 33.3, "p99")
    assert verdict == "FAIL" and gated is broken[0] and "the export marked it as failed: parity" in reason
    assert choice_reason(broken, fastest, "p99", "measured", gated) == (
        "choose fastest: no variant in openvino, onnxruntime passed its export checks, so ONNX fp32 is judged by the "
        "profile's onnxruntime fp32 rule; left out, their export checks failed: ONNX fp32, OpenVINO int8")
    verdict, reason, _ = decide([result("torch", "fp32", 1.0)], fastest, 2.0, "p99")
    assert reason.endswith("measured with torch, not the target's openvino/onnxruntime")


def test_choose_fastest_away_from_the_target_compares_lower_bounds(fastest):
    results = [bounded("onnxruntime", "fp32", 1.0, 1e9, fastest), bounded("openvino", "int8", 9.0, 1e9, fastest)]
    verdict, reason, gated = decide(results, fastest, 33.3, "p99", "estimated")
    assert verdict == "UNCONFIRMED" and gated is results[1]  # the INT8 peak bounds it lowest; timings are ignored
    assert choice_reason(results, fastest, "p99", "estimated", gated).startswith(
        "OpenVINO int8 (openvino), the fastest by lower bound of the 2 variants in openvino, onnxruntime")


def test_warnings(x86):
    noisy = result("onnxruntime", "fp32", 1.0, cv=0.5, noisy=True)
    broken = result("torch", "fp32", None)
    out = warnings([noisy, broken], {"load_avg_1m": 9.0, "cpu_affinity": 2})
    assert out == [
        "PyTorch eager: failed: RuntimeError: boom",
        "ONNX fp32: cv 0.50 > 0.1: the machine is too noisy to trust the tail latency",
        "load average 9.0 exceeds the 2 usable cores: other processes competed for the CPU",
    ]


@pytest.fixture(scope="module")
def nano():
    return load_target("jetson-orin-nano")  # tensorrt fp16, 33.3 ms


def bounded(runtime: str, precision: str, p99: float | None, flops: float, target) -> BenchResult:
    r = result(runtime, precision, p99)
    r.roofline = roofline(Cost(flops=flops, params=1e6, io_elements=1e5, source="test"), target, precision)
    return r


def test_away_from_the_target_timings_are_never_judged(nano):
    """A CPU's 109 ms for a ViT-Ti was a FAIL on the Orin Nano; 1 ms on a workstation would have been a PASS."""
    for p99 in (1.0, 109.0):
        results = [bounded("onnxruntime", "fp16", p99, 2.5e9, nano)]
        verdict, reason, gated = decide(results, nano, 33.3, "p99", "estimated")
        assert verdict == "UNCONFIRMED" and gated is results[0]
        assert reason == ("ONNX fp16 on jetson-orin-nano: lower bound 0.2441 ms <= 33.3 ms; only a measurement "
                          "on the device can confirm it")
        assert "PASS" not in reason and "FAIL" not in reason


def test_a_lower_bound_over_the_budget_is_a_certain_fail(nano):
    heavy = [bounded("onnxruntime", "fp16", 5.0, 1e12, nano), bounded("torch", "fp32", 4.0, 1e12, nano)]
    verdict, reason, gated = decide(heavy, nano, 33.3, "p99", "estimated")
    assert (verdict, gated) == ("FAIL", heavy[0])  # the target's precision, whatever the host timed
    assert reason == "even the lower bound of ONNX fp16 on jetson-orin-nano, 97.66 ms, exceeds the 33.3 ms budget"
    verdict, reason, _ = decide([result("onnxruntime", "fp16", 1.0)], nano, 33.3, "p99", "estimated")
    assert verdict == "UNCONFIRMED" and "no lower bound" in reason


def test_on_the_target_only_formats_on_its_processor_are_judged(nano, x86):
    cpu_ort, engine = result("onnxruntime", "fp16", 1.0), result("tensorrt", "fp16", 50.0)
    assert not runs_on_target(cpu_ort, nano) and runs_on_target(engine, nano)
    assert runs_on_target(cpu_ort, x86) and not runs_on_target(engine, x86)
    assert runs_on_target(result("onnxruntime", "fp16", 1.0, device="cuda"), nano)
    verdict, reason, gated = decide([cpu_ort, engine], nano, 33.3, "p99", "measured")
    assert (verdict, gated) == ("FAIL", engine) and reason == "TensorRT engine fp16 (tensorrt) p99 50.000 ms > 33.3 ms"


def test_version_and_power_mode_mismatches_are_warnings(nano):
    assert version_matches("10.3", "10.3.0") and version_matches("10.x", "10.7.1")
    assert not version_matches("10.3", "8.5.2") and not version_matches("10.3.0", "10.3")
    assert setting_warnings(nano, "10.3.0", "15W") == []
    assert setting_warnings(nano, None, None) == []
    assert setting_warnings(nano, "8.5.2", "MAXN_SUPER") == [
        "timed with TensorRT 8.5.2, but the profile jetson-orin-nano expects 10.3: engines and their speed differ "
        "between releases",
        "the Jetson ran in power mode MAXN_SUPER, but the profile jetson-orin-nano assumes 15W "
        "(`sudo nvpmodel -m <id>`, see `nvpmodel -q`)",
    ]
