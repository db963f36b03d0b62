"""leapkit.latency.junit: the bench report as JUnit XML, read back with junitparser as CI dashboards read it.

The reports are real: `leapkit bench --from-trtexec` of published trtexec output (the timed runs and
their JUnit files through the CLI are in test_bench.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml, Skipped
from test_regression import A5000_LOG, SAMPLES, scaled

from leapkit.device.tegrastats import LOG as POWER_LOG
from leapkit.device.tegrastats import MARKS as POWER_MARKS
from leapkit.errors import CheckFailed, MissingDependency
from leapkit.latency.bench import bench
from leapkit.latency.junit import require_junitparser, write_junit
from leapkit.latency.records import BenchReport
from leapkit.latency.regression import compare, load_baseline

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/trtexec-samples is absent")
ORIN_LOG = SAMPLES / "trt8.5.2-orin-nano-yolox-fp16-summary.log"
TEGRASTATS = SAMPLES.parent / "tegrastats-samples" / "orin-nano-super-jp6.2.2-hokwangchoi.txt"


def read(path: Path) -> list:
    """The test cases of the one suite in a JUnit file, as junitparser reads them."""
    (suite,) = list(JUnitXml.fromfile(str(path)))
    return list(suite)


def test_a_passing_report_is_one_passing_case_per_format(tmp_path):
    report = bench(target="jetson-orin-nano", from_trtexec=[ORIN_LOG], out_dir=tmp_path)
    path = write_junit(report, tmp_path / "reports" / "latency.xml")
    xml = JUnitXml.fromfile(str(path))
    (suite,) = list(xml)
    assert suite.name == "leapkit bench jetson-orin-nano" and (suite.tests, suite.failures, suite.skipped) == (1, 0, 0)
    assert {p.name: p.value for p in suite.properties()} == {
        "target": "jetson-orin-nano", "evidence": "imported", "verdict": "PASS", "budget": "p99 <= 33.3 ms"}
    (case,) = list(suite)
    assert (case.name, case.classname, case.is_passed) == ("TensorRT engine fp16", "leapkit.bench.jetson-orin-nano",
                                                           True)
    assert case.system_out.startswith("TensorRT engine fp16 (tensorrt, batch 1): p50 10.797 ms, p90 10.933 ms, "
                                      "p99 10.974 ms")


def test_a_missed_budget_is_a_failure_with_the_numbers(tmp_path):
    report = bench(target="rtx-4090", from_trtexec=[A5000_LOG], budget_ms=5, out_dir=tmp_path, check=False,
                   allow_other_device=True)  # an A5000's log: judged only when asked
    (case,) = read(write_junit(report, tmp_path / "latency.xml"))
    (failure,) = case.result
    assert isinstance(failure, Failure) and failure.type == "budget"
    assert failure.message == ("budget FAIL on rtx-4090 (evidence imported): TensorRT engine fp16 (tensorrt) p99 "
                               "6.443 ms > 5 ms")


def test_a_regression_is_a_failure_with_the_numbers_beside_the_budget(tmp_path):
    report = bench(target="rtx-4090", from_trtexec=[A5000_LOG], budget_ms=5, out_dir=tmp_path, check=False,
                   allow_other_device=True)  # an A5000's log: judged only when asked
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps(scaled(json.loads(report.json_path.read_text()), 1 / 1.25)))
    report.baseline = compare(report, load_baseline(prev), prev, 10.0)
    (case,) = read(write_junit(report, tmp_path / "latency.xml"))
    assert [(f.type, f.message) for f in case.result] == [
        ("budget", "budget FAIL on rtx-4090 (evidence imported): TensorRT engine fp16 (tensorrt) p99 6.443 ms > 5 ms"),
        ("regression", "regression: TensorRT engine fp16 p99 6.443 ms vs 5.155 ms in the baseline (+25.0% > 10% "
                       "allowed; noise ±1.6%)"),
    ]
    assert case.system_out.endswith("; vs baseline: +25.0% regressed (±1.6%)")


def unconfirmed(tmp_path: Path) -> BenchReport:
    """A real report, relabelled as timed away from the target (the figures are left alone)."""
    report = bench(target="jetson-orin-nano", from_trtexec=[ORIN_LOG], out_dir=tmp_path)
    report.evidence, report.verdict = "estimated", "UNCONFIRMED"
    report.evidence_reason = "measured on vm, not on jetson-orin-nano: nothing on vm matches 'Jetson Orin Nano'"
    report.verdict_reason = "TensorRT engine fp16 on jetson-orin-nano: lower bound 0.24 ms <= 33.3 ms"
    return report


def test_unconfirmed_is_skipped_with_the_reason_unless_a_measurement_is_required(tmp_path):
    report = unconfirmed(tmp_path)
    (case,) = read(write_junit(report, tmp_path / "latency.xml"))
    (skipped,) = case.result
    assert isinstance(skipped, Skipped) and case.is_skipped
    assert skipped.message == ("budget UNCONFIRMED on jetson-orin-nano: measured on vm, not on jetson-orin-nano: "
                               "nothing on vm matches 'Jetson Orin Nano'; TensorRT engine fp16 on jetson-orin-nano: "
                               "lower bound 0.24 ms <= 33.3 ms")
    (case,) = read(write_junit(report, tmp_path / "latency.xml", require_measured=True))
    (failure,) = case.result
    assert failure.type == "budget" and failure.message.startswith(
        "budget UNCONFIRMED on jetson-orin-nano and --require-measured is set: measured on vm")


def test_no_format_that_ran_is_a_budget_case_of_its_own(tmp_path):
    report = bench(target="jetson-orin-nano", from_trtexec=[ORIN_LOG], out_dir=tmp_path)
    r = report.results[0]
    r.status, r.p99_ms = "failed: the trtexec output has no latency figures", None
    report.verdict, report.gated = "FAIL", None
    report.verdict_reason = "no format ran on jetson-orin-nano (TensorRT engine fp16 failed: ...)"
    engine, budget = read(write_junit(report, tmp_path / "latency.xml"))
    assert engine.is_skipped and engine.result[0].message.startswith("TensorRT engine fp16 did not run: failed")
    assert budget.name == "budget" and budget.result[0].message.startswith("budget FAIL on jetson-orin-nano")


def test_junitparser_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "junitparser", None)
    with pytest.raises(MissingDependency, match=r"^--junit FILE needs the 'junitparser' package: pip install "
                                                r"'leapkit\[ci\]'$"):
        require_junitparser()


def with_power(tmp_path: Path) -> Path:
    """A results folder as bench_engine.sh leaves it: a Jetson's trtexec log, tegrastats' lines and marks."""
    if not TEGRASTATS.is_file():
        pytest.skip(f"tegrastats sample not found at {TEGRASTATS}")
    results = tmp_path / "results" / "fp16"
    results.mkdir(parents=True)
    shutil.copyfile(ORIN_LOG, results / "trtexec.log")
    shutil.copyfile(TEGRASTATS, results / POWER_LOG)
    (results / POWER_MARKS).write_text("idle_end 10 1.0\ninference_start 12 2.0\ninference_end 40 3.0\n"
                                       "timing_end 40 3.1\n")
    return results


def test_a_missed_energy_budget_fails_the_file_as_it_fails_the_command(tmp_path):
    """The latency budget passes and the energy budget does not: `leapkit bench` exits 1, so the XML fails."""
    report = bench(target="jetson-orin-nano", from_trtexec=[with_power(tmp_path)], budget_mj=1, out_dir=tmp_path,
                   check=False)
    assert (report.verdict, report.energy_verdict) == ("PASS", "FAIL")
    with pytest.raises(CheckFailed, match="energy verdict FAIL"):
        report.check()
    engine, energy = read(write_junit(report, tmp_path / "latency.xml"))
    assert engine.is_passed and energy.name == "energy" and energy.classname == "leapkit.bench.jetson-orin-nano"
    (failure,) = energy.result
    assert isinstance(failure, Failure) and failure.type == "energy"
    assert failure.message == f"energy FAIL on jetson-orin-nano (evidence imported): {report.energy_verdict_reason}"
    assert failure.message.startswith("energy FAIL on jetson-orin-nano (evidence imported): TensorRT engine fp16 ")
    (suite,) = list(JUnitXml.fromfile(str(tmp_path / "latency.xml")))
    assert (suite.tests, suite.failures) == (2, 1)
    assert {p.name: p.value for p in suite.properties()}["energy budget"] == "1 mJ per inference"


def test_an_energy_budget_met_is_a_passing_case(tmp_path):
    report = bench(target="jetson-orin-nano", from_trtexec=[with_power(tmp_path)], budget_mj=10_000,
                   out_dir=tmp_path)
    assert report.energy_verdict == "PASS"
    engine, energy = read(write_junit(report, tmp_path / "latency.xml"))
    assert engine.is_passed and energy.is_passed and energy.name == "energy"
    assert energy.system_out == f"energy PASS: {report.energy_verdict_reason}"


def test_an_unconfirmed_energy_budget_is_skipped_unless_a_measurement_is_required(tmp_path):
    """No tegrastats beside the log: no energy per inference, UNCONFIRMED; --require-measured exits 1 on it."""
    report = bench(target="jetson-orin-nano", from_trtexec=[ORIN_LOG], budget_mj=50, out_dir=tmp_path)
    assert (report.verdict, report.energy_verdict) == ("PASS", "UNCONFIRMED")
    engine, energy = read(write_junit(report, tmp_path / "latency.xml"))
    (skipped,) = energy.result
    assert engine.is_passed and isinstance(skipped, Skipped)
    assert skipped.message == f"energy UNCONFIRMED on jetson-orin-nano: {report.energy_verdict_reason}"
    with pytest.raises(CheckFailed, match="energy verdict UNCONFIRMED"):
        report.check(require_measured=True)
    engine, energy = read(write_junit(report, tmp_path / "latency.xml", require_measured=True))
    (failure,) = energy.result
    assert engine.is_passed and failure.type == "energy" and failure.message == (
        f"energy UNCONFIRMED on jetson-orin-nano and --require-measured is set: {report.energy_verdict_reason}")


def test_without_an_energy_budget_there_is_no_energy_case(tmp_path):
    report = bench(target="jetson-orin-nano", from_trtexec=[with_power(tmp_path)], out_dir=tmp_path)
    assert report.energy_verdict is None
    assert [c.name for c in read(write_junit(report, tmp_path / "latency.xml"))] == ["TensorRT engine fp16"]
