"""leapkit.latency.regression: each result against a baseline, noise-aware, and the baseline file's errors.

The rules are checked on results built here; the comparisons of whole reports use real bench JSONs
(`leapkit bench --from-trtexec` of published trtexec output), with a second JSON written from the
first with scaled figures. The end-to-end CLI runs against a timed run are in test_bench.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from leapkit.errors import ConfigError
from leapkit.latency.bench import bench
from leapkit.latency.records import BenchReport, BenchResult
from leapkit.latency.regression import (
    EFFECTIVE_SAMPLES,
    classify,
    compare,
    load_baseline,
    relative_error,
    stat_error_factor,
)
from leapkit.latency.render import write_bench_report

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/trtexec-samples is absent")
A5000_LOG = SAMPLES / "trt10.3.0-rtxa5000-resnet50-fp16-full.log"  # cv 1.57%, 577 iterations
TIMES = ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")


def result(p50: float, p99: float, cv: float | None, n: int | None, **kw) -> BenchResult:
    """An ONNX fp32 result whose samples have mean p50 (unless ``mean_ms`` is given) and the given spread."""
    fields = dict(runtime="onnxruntime", format="onnx", precision="fp32", batch=1, mean_ms=p50, p50_ms=p50,
                  p99_ms=p99, cv=cv, iterations=n)
    return BenchResult(**{**fields, **kw})


def scaled(data: dict, factor: float, **changes) -> dict:
    """A copy of a bench JSON with every latency multiplied by ``factor`` (and result keys set to ``changes``)."""
    out = json.loads(json.dumps(data))
    for r in out["results"]:
        r.update({k: r[k] * factor for k in TIMES if r.get(k) is not None}, **changes)
    return out


@pytest.fixture
def real_report(tmp_path) -> BenchReport:
    """A real bench report: published TensorRT 10.3 figures (RTX A5000, ResNet-50 fp16, batch 32)."""
    if not SAMPLES.is_dir():
        pytest.skip("../shared/trtexec-samples is absent")
    return bench(target="rtx-4090", from_trtexec=[A5000_LOG], out_dir=tmp_path / "now", check=False)


def test_stat_error_factor_is_the_normal_quantiles_standard_error():
    assert stat_error_factor("mean") == 1.0
    assert stat_error_factor("p50") == pytest.approx(math.sqrt(math.pi / 2), rel=1e-6)  # 1.2533
    assert stat_error_factor("p99") == pytest.approx(3.733, rel=1e-3)
    assert stat_error_factor("max") == stat_error_factor("min") == stat_error_factor("p99")


def test_on_a_machine_whose_cv_is_10_percent_a_3_percent_change_is_within_noise():
    # p99 of normal samples with cv 10% sits 2.33 sigma above the mean
    before, after = result(1.0, 1.233, 0.10, 1000), result(1.03, 1.27, 0.10, 1000)
    band_p99 = 100 * 2 * math.sqrt(2) * relative_error(before, "p99")
    band_p50 = 100 * 2 * math.sqrt(2) * relative_error(before, "p50")
    assert band_p50 == pytest.approx(3.545, abs=0.01) and band_p99 == pytest.approx(8.56, abs=0.02)
    for stat in ("p50", "p99"):
        report, baseline = report_of([after], stat), report_of([before], stat)
        (row,) = compare(report, baseline, "prev.json", 10.0).rows
        assert row.change == "within noise" and row.change_pct == pytest.approx(3.0, abs=0.01), stat
    # the same change on a quiet machine (cv 0.5%) is a real one, under the threshold
    (row,) = compare(report_of([result(1.03, 1.0424, 0.005, 1000)]), report_of([result(1.0, 1.012, 0.005, 1000)]),
                     "prev.json", 10.0).rows
    assert (row.change, row.cell()) == ("slower", "+3.0% slower (±0.5%)")


def test_samples_beyond_the_effective_count_do_not_narrow_the_band():
    few, many = result(1.0, 1.233, 0.1, EFFECTIVE_SAMPLES), result(1.0, 1.233, 0.1, 50 * EFFECTIVE_SAMPLES)
    assert relative_error(few, "p99") == relative_error(many, "p99")
    assert relative_error(result(1.0, 1.233, 0.1, 25), "p99") == pytest.approx(2 * relative_error(few, "p99"))


def test_a_few_stalls_inflate_the_cv_not_the_band():
    """cv 5.5 from one stall among sub-ms samples: p50 and p99 are no noisier for it."""
    stalled = result(0.73, 1.22, 5.5, 200, mean_ms=1.25)
    assert relative_error(stalled, "p99") == pytest.approx(3.733 * (1.22 - 0.73) / 2.3263 / 10 / 1.22, rel=1e-3)
    assert relative_error(result(1.0, 1.2, None, 200), "p99") is None
    assert relative_error(result(1.0, 1.2, 0.1, None), "p99") is None


@pytest.mark.parametrize("change, noise, verdict", [
    (0.5, 20.0, "same"), (-0.9, 0.1, "same"), (3.0, 8.6, "within noise"), (15.0, 20.0, "within noise"),
    (3.0, 0.7, "slower"), (10.0, 2.0, "slower"), (10.1, 2.0, "regressed"), (-5.0, 2.0, "faster"),
])
def test_classify(change, noise, verdict):
    assert classify(change, noise, 10.0) == verdict


def report_of(results: list[BenchResult], stat: str = "p99", **kw) -> BenchReport:
    fields = dict(target="x86-cpu", target_description="", model="m", source_run=None, export_dir=None,
                  input_shape=None, results=results, budget_ms=33.3, budget_stat=stat, budget_source="profile",
                  evidence="measured", evidence_reason="", measured_on="vm", verdict="PASS", verdict_reason="",
                  gated=None, method=None, roofline_note="", warnings=[], environment={}, leapkit_version="0",
                  created="2026-01-01T00:00:00+00:00")
    return BenchReport(**{**fields, **kw})


def test_results_pair_by_runtime_format_precision_and_batch():
    now = [result(1.0, 1.1, 0.01, 500), result(1.0, 1.1, 0.01, 500, batch=8)]
    before = [result(1.0, 1.1, 0.01, 500, batch=8, threads=4), result(2.0, 2.2, 0.01, 500, precision="int8")]
    c = compare(report_of(now), report_of(before), "prev.json", 10.0)
    assert [(r.batch, r.change) for r in c.rows] == [(1, "new"), (8, "same")]
    assert c.row(now[1]) is c.rows[1] and c.counts() == "1 new, 1 same" and c.failure() is None
    assert c.warnings == ["ONNX fp32: threads 1 now, 4 in the baseline"]
    assert c.notes == ["ONNX int8 (batch 1) of the baseline was not benched this time"]


def test_a_missing_figure_is_not_compared_and_unknown_noise_is_said():
    c = compare(report_of([result(1.0, 1.08, None, None)]), report_of([result(1.0, 1.02, 0.1, 100)]), "p.json", 10.0)
    (row,) = c.rows
    assert row.change == "slower" and row.noise_pct == pytest.approx(100 * 2 * relative_error(
        result(1.0, 1.02, 0.1, 100), "p99"))
    assert c.notes == ["ONNX fp32: this run recorded no cv or iteration count; its figure is taken as exact"]
    failed = result(1.0, 1.2, 0.1, 100, status="failed: RuntimeError")
    failed.p99_ms = None
    (row,) = compare(report_of([failed]), report_of([result(1.0, 1.1, 0.1, 100)]), "p.json", 10.0).rows
    assert (row.change, row.cell(), row.now_ms) == ("not compared", "not compared", None)


def test_environment_differences_are_warnings_that_name_them():
    now = report_of([result(1.0, 1.1, 0.01, 500)], environment={"cpu": "AMD EPYC 7763 64-Core Processor",
                                                                 "onnxruntime": "1.24.1", "torch": "2.14.1"})
    before = report_of([result(1.0, 1.1, 0.01, 500)], evidence="estimated",
                       environment={"cpu": "Intel(R) Xeon(R) Platinum 8370C", "onnxruntime": "1.24.1", "torch": None})
    assert compare(now, before, "p.json", 10.0).warnings == [
        "the baseline's evidence is estimated, this run's measured: the figures come from different places",
        "another CPU than the baseline's: 'AMD EPYC 7763 64-Core Processor' now, 'Intel(R) Xeon(R) Platinum 8370C' "
        "in the baseline",
    ]


def test_host_timings_compare_with_a_note():
    now = report_of([result(1.0, 1.1, 0.01, 500)], evidence="estimated", target="jetson-orin-nano")
    c = compare(now, report_of([result(1.0, 1.1, 0.01, 500)], evidence="estimated"), "p.json", 10.0)
    assert c.warnings == [] and c.notes == [
        "both are timings of this host, not of jetson-orin-nano (evidence estimated): the comparison says whether "
        "the model got slower here, not on jetson-orin-nano"]


# ---------------------------------------------------------------- real bench JSONs


@needs_samples
def test_a_real_report_against_a_faster_baseline_regresses(real_report, tmp_path):
    data = json.loads(real_report.json_path.read_text())
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps(scaled(data, 1 / 1.2)))
    c = compare(real_report, load_baseline(prev), prev, 10.0)
    (row,) = c.rows
    assert (row.label, row.change) == ("TensorRT engine fp16", "regressed")
    assert row.change_pct == pytest.approx(20.0) and row.now_ms == pytest.approx(6.44324)
    assert row.noise_pct == pytest.approx(1.55, abs=0.01)  # cv 1.57%, 577 iterations (100 counted)
    assert c.failure() == ("TensorRT engine fp16 p99 6.443 ms vs 5.369 ms in the baseline (+20.0% > 10% allowed; "
                           "noise ±1.6%)")
    assert c.warnings == [] and c.created == data["created"] and c.evidence == "imported"


@needs_samples
def test_a_real_report_within_its_noise_passes(real_report, tmp_path):
    data = json.loads(real_report.json_path.read_text())
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps(scaled(data, 1 / 1.012)))
    (row,) = compare(real_report, load_baseline(prev), prev, 10.0).rows
    assert row.change == "within noise" and row.change_pct == pytest.approx(1.2)
    # the same data from another TensorRT on another GPU: a warning naming each
    other = json.loads(prev.read_text())
    other["environment"].update(tensorrt="10.7.0", device="NVIDIA GeForce RTX 4090")
    prev.write_text(json.dumps(other))
    warnings = compare(real_report, load_baseline(prev), prev, 10.0).warnings
    assert warnings == [
        "another device than the baseline's: 'NVIDIA RTX A5000' now, 'NVIDIA GeForce RTX 4090' in the baseline",
        "another TensorRT than the baseline's: '10.3.0' now, '10.7.0' in the baseline",
    ]


@needs_samples
def test_a_saved_comparison_reads_back(real_report, tmp_path):
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps(scaled(json.loads(real_report.json_path.read_text()), 1.0)))
    real_report.baseline = compare(real_report, load_baseline(prev), prev, 10.0)
    write_bench_report(real_report)
    back = BenchReport.load(real_report.json_path)
    assert back.baseline == real_report.baseline and back.baseline.rows[0].change == "same"
    assert json.loads(real_report.json_path.read_text())["baseline"]["rows"][0]["change_pct"] == 0.0
    assert "vs baseline" in real_report.md_path.read_text()


def test_bad_baseline_files_are_one_line_each(tmp_path):
    def error(text: str | None) -> str:
        path = tmp_path / "prev.json"
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_baseline(path)
        assert "\n" not in str(e.value)
        return str(e.value).replace(str(path), "prev.json")

    hint = "pass a bench/<target>.json that an earlier `leapkit bench` wrote"
    assert error(None) == f"--baseline prev.json: no such file; {hint}"
    assert error("{not json").startswith("--baseline prev.json is not JSON (Expecting property name")
    assert error('{"verdict": "PASS"}') == (f"--baseline prev.json has no list of results: it is not a bench report; "
                                           f"{hint}")
    assert error('{"results": []}').startswith("--baseline prev.json is not a bench report this leapkit reads "
                                               "(BenchReport lacks target, target_description")
    good = report_of([result(1.0, 1.1, 0.01, 500)]).to_dict()
    good["results"][0]["p99_ms"] = "fast"
    assert error(json.dumps(good)) == ("--baseline prev.json is not a bench report this leapkit reads (BenchResult: "
                                       f"results[0].p99_ms must be a number or null, got 'fast'); {hint}")
    good["results"][0].update(p99_ms=1.1, format="tflite")
    assert error(json.dumps(good)).startswith("--baseline prev.json is not a bench report this leapkit reads "
                                              "(BenchResult: results[0].format must be one of ")


def test_two_runs_of_one_engine_pair_by_their_run_label():
    """Two trtexec logs of one engine (end-to-end and --noDataTransfers) share runtime, format, precision, batch."""
    def engine(p99: float, run_label: str | None) -> BenchResult:
        return result(p99, p99, 0.01, 500, runtime="tensorrt", format="engine", precision="fp16",
                      run_label=run_label)

    gpu = "GPU compute only"
    now = [engine(0.5, gpu), engine(1.0, None)]
    c = compare(report_of(now), report_of([engine(1.0, None), engine(0.5, gpu)]), "prev.json", 10.0)
    assert [(r.label, r.run_label, r.change) for r in c.rows] == [
        ("TensorRT engine fp16 (GPU compute only)", gpu, "same"), ("TensorRT engine fp16", None, "same")]
    assert c.row(now[0]) is c.rows[0] and c.row(now[1]) is c.rows[1] and c.notes == []
    # a labelled run the baseline lacks is new, and the baseline's unlabelled run is said to be left out
    c = compare(report_of([engine(1.0, "run 2 of 2")]), report_of([engine(1.0, None)]), "prev.json", 10.0)
    assert [r.change for r in c.rows] == ["new"]
    assert c.notes == ["TensorRT engine fp16 (batch 1) of the baseline was not benched this time"]


def test_a_baseline_with_two_results_of_one_key_says_so_of_the_second():
    """Two baseline results that still pair the same (same label twice) are not dropped without a word."""
    twice = [result(1.0, 1.0, 0.01, 500, run_label="a"), result(2.0, 2.0, 0.01, 500, run_label="a")]
    c = compare(report_of([result(1.0, 1.0, 0.01, 500, run_label="a")]), report_of(twice), "prev.json", 10.0)
    assert [r.change for r in c.rows] == ["same"]
    assert c.notes == ["ONNX fp32 (a) (batch 1) of the baseline was not benched this time"]
