"""leapkit.trtexec (read, log, exported, layers): reading trtexec's logs and JSON files.

The fixture tests read the published trtexec outputs in ../shared/trtexec-samples (described, with
the figures a reader must extract, in its SOURCES.md and expected.json); they are skipped when that
folder is absent. The edge cases the samples lack (nan/inf tokens, unescaped names) are synthetic
inputs written here in trtexec's documented layout.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from leapkit.errors import LeapkitError, TrtexecError
from leapkit.trtexec.exported import load_json_values, percentile_index, summarize_times, trtexec_stats
from leapkit.trtexec.layers import (
    LayerProfile,
    LayerTime,
    aggregate_profile,
    classify,
    layer_groups,
    onnx_nodes,
    read_profile_json,
)
from leapkit.trtexec.log import precision_of, read_log, tensorrt_version
from leapkit.trtexec.read import read_trtexec

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent")
EXPECTED = json.loads((SAMPLES / "expected.json").read_text()) if SAMPLES.is_dir() else {}

S1 = "trt8.5.2-orin-nano-yolox-fp16-summary.log"
S2 = "trt8.5.2-xavier-nx-lprnet-dumpProfile-nosummary.log"
S3 = "trt8.6.3-rtx3090-resnet-cifar10-int8-verbose-full.log.gz"
S4 = "trt8.2.5-a100class-mobilenetv2-qat-int8-full.log"
S5 = "trt10.3.0-rtxa5000-resnet50-fp16-full.log"
S6_TIMES = "trt8.4era-rtx3090-resnet50-fp32-b32-exportTimes.json"
S7 = "trt7.1-jetson-xavier-resnet50-caffe-int8-7runs.log"
S7_TIMES = "trt7.1-jetson-xavier-resnet50-int8-b1-exportTimes.json"
S8 = "trt7.x-jetson-unknown-resnet50-caffe-int8-7runs.log"


def close(got: float | None, want: float) -> bool:
    return got is not None and abs(got - want) <= 1e-4 * abs(want)


def assert_stats(got: dict[str, float | None], want: dict[str, float | None]) -> None:
    for key, value in want.items():
        assert (got[key] is None) if value is None else close(got[key], value), (key, got[key], value)


def one_run(name: str):
    imp = read_trtexec([SAMPLES / name])
    assert len(imp.runs) == 1
    return imp.runs[0]


# --- the figures of expected.json, for every sample listed there ---------------------------------------------

@needs_samples
@pytest.mark.parametrize("name", sorted(k for k in EXPECTED if not k.startswith("_")))
def test_expected_figures(name):
    want = EXPECTED[name]
    if not want["summary"]:
        with pytest.raises(TrtexecError) as e:
            read_trtexec([SAMPLES / name])
        assert str(e.value) == (
            f"{SAMPLES / name} has no performance summary (a --dumpProfile run without --separateProfileRun?); "
            "rerun bench_engine.sh or pass the log of a timing run")
        assert e.value.exit_code == 2 and "\n" not in str(e.value)
        return
    run = one_run(name)
    assert close(run.throughput_qps, want["throughput_qps"])
    assert_stats(run.latency_ms, want["latency"])
    assert_stats(run.gpu_compute_ms, want["gpu_compute"])
    assert set(run.latency_ms) == set(run.gpu_compute_ms) == {"min", "mean", "p50", "p90", "p95", "p99", "max"}
    for key in ("tensorrt", "device"):
        if key in want:
            assert getattr(run, key) == want[key]


# --- the further figures SOURCES.md lists, sample by sample --------------------------------------------------

@needs_samples
def test_sample1_bare_summary_without_header_or_device():
    run = one_run(S1)
    assert run.tensorrt == "8.5.2"  # from the closing banner [TensorRT v8502]
    assert run.device is None and run.iterations is None and run.warnings == []
    assert run.precision == "fp16" and run.batch == 1 and run.throughput_unit == "qps"
    assert close(run.other_ms["enqueue"]["min"], 1.1098) and close(run.other_ms["enqueue"]["p50"], 1.19873)
    assert close(run.other_ms["h2d"]["mean"], 0.316446) and close(run.other_ms["d2h"]["mean"], 0.29821)
    assert close(run.walltime_s, 3.0348) and close(run.gpu_total_s, 3.02418)


@needs_samples
def test_sample2_profile_table_of_a_dumpprofile_run():
    runs, profile, _ = read_log((SAMPLES / S2).read_text(), S2)
    assert runs == []
    assert profile.iterations == 320 and len(profile.layers) == 28
    assert profile.total == LayerTime(name="Total", total_ms=3076.04, avg_ms=9.6126, median_ms=8.9061, percent=100.0)
    largest = max(profile.layers, key=lambda layer: layer.total_ms)
    assert largest == LayerTime(name="{ForeignNode[lstm_W...Max_reduce_min]}", total_ms=2162.68, avg_ms=6.7584,
                                median_ms=6.1180, percent=70.3)


@needs_samples
def test_sample3_verbose_gz_log():
    run = one_run(S3)  # gzip-compressed; [V] lines repeat "Throughput:" and "Total Host Walltime:"
    assert (run.warmup_queries, run.warmup_ms, run.iterations) == (1105, 200.0, 16847)
    assert close(run.walltime_s, 3.00053) and close(run.gpu_total_s, 2.96238)
    assert close(run.cv, 0.567383) and run.precision == "int8" and run.batch == 1
    assert len(run.warnings) == 1 and "coefficient of variance = 56.7383%" in run.warnings[0]


@needs_samples
def test_sample4_trt82_one_percentile_and_end_to_end():
    run = one_run(S4)
    assert_stats(run.other_ms["end_to_end"], {"min": 4.64392, "max": 5.64146, "mean": 4.71364, "p50": 4.70197,
                                              "p90": None, "p95": None, "p99": 4.88013})
    assert (run.warmup_queries, run.iterations) == (63, 976)
    assert close(run.walltime_s, 3.0073) and close(run.gpu_total_s, 1.57787)
    assert run.batch == 64  # explicit batch, from the input binding's dimensions
    assert [w.split(" rather")[0] for w in run.warnings] == [
        "Throughput may be bound by Enqueue Time", "Throughput may be bound by host-to-device transfers for the inputs"]
    assert run.warnings[1].endswith("Add --noDataTransfers flag to disable data transfers.")  # the hint line joined


@needs_samples
def test_sample5_trt10():
    run = one_run(S5)
    assert (run.warmup_queries, run.iterations) == (40, 577)
    assert close(run.walltime_s, 3.01593) and close(run.gpu_total_s, 3.00973)
    assert close(run.cv, 0.0157058) and run.precision == "fp16" and run.batch == 32


SAMPLE7 = {  # batch: qps; GPU compute min, mean, median, p99, max; host latency mean
    1: (318.785, 3.00146, 3.05402, 3.03919, 3.41711, 5.56586, 3.1141),
    4: (595.253, 6.46692, 6.53921, 6.51056, 7.60083, 7.9213, 6.68767),
    8: (700.443, 11.0374, 11.1332, 11.0895, 12.8194, 13.0796, 11.3869),
    16: (717.65, 19.7776, 21.7143, 21.8337, 26.8062, 28.5728, 22.2499),
    32: (775.89, 37.1985, 40.2826, 37.782, 60.0398, 60.0398, 41.1955),
    64: (848.189, 72.0087, 73.6501, 72.633, 87.292, 87.292, 75.4019),
    128: (508.664, 225.217, 247.86, 247.036, 270.469, 270.469, 251.512),
}
SAMPLE8 = {
    1: (18.0758, 55.0791, 55.2468, 55.2111, 57.4766, 57.4766, 55.3094),
    4: (20.0093, 199.02, 199.649, 199.573, 201.991, 201.991, 199.901),
    8: (21.3609, 373.242, 374.004, 373.68, 376.966, 376.966, 374.51),
    16: (22.3395, 713.122, 715.215, 715.649, 717.336, 717.336, 716.216),
    32: (23.453, 1360.1, 1362.41, 1362.37, 1364.81, 1364.81, 1364.43),
    64: (24.7251, 2577.87, 2584.38, 2587.59, 2587.68, 2587.68, 2588.45),
    128: (24.7792, 5151.77, 5157.54, 5155.22, 5165.62, 5165.62, 5165.61),
}


@needs_samples
@pytest.mark.parametrize(("name", "table"), [(S7, SAMPLE7), (S8, SAMPLE8)], ids=["sample7", "sample8"])
def test_trt7_logs_one_run_per_batch(name, table):
    runs = read_trtexec([SAMPLES / name]).runs
    assert [r.batch for r in runs] == list(table)
    for run, (qps, lo, mean, median, p99, hi, host_mean) in zip(runs, table.values(), strict=True):
        assert close(run.throughput_qps, qps) and run.throughput_unit == "images/s"
        assert_stats(run.gpu_compute_ms, {"min": lo, "mean": mean, "p50": median, "p99": p99, "max": hi,
                                          "p90": None, "p95": None})
        assert close(run.latency_ms["mean"], host_mean)
        assert run.tensorrt is None and run.device is None and run.precision == "int8"


@needs_samples
def test_trt7_counts_images_so_queries_are_divided_by_the_batch():
    b1, b4 = read_trtexec([SAMPLES / S7]).runs[:2]
    assert_stats(b1.latency_ms, {"min": 3.05505, "max": 5.60945, "p99": 3.4563})
    assert_stats(b1.other_ms["end_to_end"], {"min": 3.06653, "max": 5.61841, "p99": 3.47168})
    assert close(b1.walltime_s, 3.00516) and close(b1.gpu_total_s, 2.92575)
    assert (b1.iterations, b1.warmup_queries) == (958, 55)
    assert b4.iterations == 1792 // 4
    assert read_trtexec([SAMPLES / S8]).runs[1].iterations == 17  # "68 queries" at batch 4


# --- --exportTimes: trtexec's statistics recomputed ------------------------------------------------------------

@needs_samples
def test_sample6_times_with_warmup_records():
    [records] = load_json_values((SAMPLES / S6_TIMES).read_text(), S6_TIMES)
    s = summarize_times(records, S6_TIMES)
    assert (s.iterations, s.warmups, s.legacy_keys) == (248, 15, False)
    assert_stats(s.gpu_compute_ms, {"min": 12.0986, "max": 12.7928, "mean": 12.1952, "p50": 12.1682, "p99": 12.7775})
    assert s.latency_ms == s.gpu_compute_ms  # data transfers disabled
    assert close(s.walltime_s, 3.024773) and close(s.throughput_qps, 81.9895)


@needs_samples
def test_sample7_times_trt7_keys_match_the_log():
    [records] = load_json_values((SAMPLES / S7_TIMES).read_text(), S7_TIMES)
    s = summarize_times(records, S7_TIMES)
    assert (s.iterations, s.warmups, s.legacy_keys) == (958, 55, True)
    assert_stats(s.gpu_compute_ms, {"min": 3.00146, "max": 5.56586, "mean": 3.05402, "p50": 3.03919, "p99": 3.41711})
    assert_stats(s.latency_ms, {"min": 3.05505, "max": 5.60945, "mean": 3.1141})
    assert_stats(s.other_ms["end_to_end"], {"min": 3.06653, "max": 5.61841})
    assert close(s.throughput_qps, 318.785) and close(s.walltime_s, 3.00516)  # the log's figures


@needs_samples
def test_times_beside_a_log_fill_the_cv_of_the_matching_run():
    imp = read_trtexec([SAMPLES / S7, SAMPLES / S7_TIMES])
    assert len(imp.runs) == 7 and imp.warnings == []
    assert imp.runs[0].cv == pytest.approx(0.0432768, rel=1e-4) and imp.runs[1].cv is None
    only = read_trtexec([SAMPLES / S7_TIMES]).runs
    assert [r.kind for r in only] == ["times"] and close(only[0].gpu_compute_ms["p50"], 3.03919)


# --- --exportProfile --------------------------------------------------------------------------------------------

@needs_samples
@pytest.mark.parametrize(("name", "count", "layers", "total_ms", "zero", "median"), [
    ("trt8.6.3-rtx3090-resnet-cifar10-int8-exportProfile.json", 13386, 39, 2582.39, 7, True),
    ("trt8.4era-rtx3090-resnet50-fp32-b32-exportProfile.json", 1, 103, 12.399744, 31, True),
    ("trt7.1-jetson-xavier-resnet50-int8-b1-exportProfile.json", 1013, 58, 3071.34298, 0, False),
    ("trtUNK-unknowngpu-detr-r50-int8-exportProfile.json", 641, 840, 2667.59, 340, True),
], ids=["sample3", "sample6", "sample7", "sample9"])
def test_profile_totals(name, count, layers, total_ms, zero, median):
    [p] = read_profile_json((SAMPLES / name).read_text(), name)
    assert p.iterations == count and len(p.layers) == layers
    assert close(sum(layer.total_ms for layer in p.layers), total_ms)
    assert sum(layer.total_ms == 0 for layer in p.layers) == zero
    assert all((layer.median_ms is not None) == median for layer in p.layers)
    assert sum(layer.percent for layer in p.layers) == pytest.approx(100.0, abs=1e-3)
    blocks, ops = layer_groups(p)
    per_iteration = sum(g.ms for g in ops.values())
    assert sum(g.ms for g in blocks.values()) == pytest.approx(per_iteration)
    assert sum(g.layers for g in ops.values()) == layers
    if count == 641:
        assert close(per_iteration, 4.1616)


# --- folders, device.json and files that are not trtexec's -----------------------------------------------------

@needs_samples
def test_results_folder(tmp_path):
    folder = tmp_path / "results" / "fp16"
    folder.mkdir(parents=True)
    (folder / "trtexec.log").symlink_to(SAMPLES / S5)
    (folder / "profile.json").symlink_to(SAMPLES / "trt8.6.3-rtx3090-resnet-cifar10-int8-exportProfile.json")
    (folder / "device.json").write_text(json.dumps({"model": "NVIDIA Jetson Orin Nano", "tensorrt": "10.3.0"}))
    (folder / "check.json").write_text(json.dumps({"passed": True}))  # the parity check: not trtexec's, skipped
    (folder / "profile.log").symlink_to(SAMPLES / S2)  # a run without a summary beside a timing run
    imp = read_trtexec([folder])
    assert len(imp.runs) == 1 and imp.runs[0].device == "NVIDIA RTX A5000"
    assert imp.device == {"model": "NVIDIA Jetson Orin Nano", "tensorrt": "10.3.0"}
    assert imp.profile.iterations == 13386
    assert sorted(Path(s).name for s in imp.sources) == ["device.json", "profile.json", "profile.log", "trtexec.log"]
    assert imp.warnings == [f"{folder / 'profile.log'} has no performance summary (a --dumpProfile run without "
                            "--separateProfileRun?); rerun bench_engine.sh or pass the log of a timing run; skipped"]


@needs_samples
def test_files_that_hold_no_timing_figures(tmp_path):
    with pytest.raises(TrtexecError, match=r"exportLayerInfo-detailed.json is an --exportLayerInfo file; pass a"):
        read_trtexec([SAMPLES / "trt8.4era-rtx3090-resnet50-fp32-b32-exportLayerInfo-detailed.json"])
    with pytest.raises(TrtexecError, match=r"exportProfile.json: only a layer profile; pass the log or "
                                           r"--exportTimes JSON of a trtexec timing run too"):
        read_trtexec([SAMPLES / "trtUNK-unknowngpu-detr-r50-int8-exportProfile.json"])


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(TrtexecError, match=r"nope.log not found; pass a trtexec log, an --exportTimes"):
        read_trtexec([tmp_path / "nope.log"])
    with pytest.raises(TrtexecError, match=r"holds no trtexec log or JSON \(\*.log, \*.json\), nor do its subf"):
        read_trtexec([tmp_path])
    assert issubclass(TrtexecError, LeapkitError) and TrtexecError("x").exit_code == 2


@needs_samples
def test_the_results_folder_itself_reads_each_precisions_folder(tmp_path):
    """bench_engine.sh writes results/<precision>/trtexec.log: results/ itself is a folder of those folders."""
    for precision in ("fp16", "int8"):
        (tmp_path / "results" / precision).mkdir(parents=True)
        shutil.copy(SAMPLES / S1, tmp_path / "results" / precision / "trtexec.log")
    (tmp_path / "results" / "notes").mkdir()
    imported = read_trtexec([tmp_path / "results"])
    assert [Path(s).parent.name for s in imported.sources] == ["fp16", "int8"]
    assert [run.latency_ms["p99"] for run in imported.runs] == [10.9744, 10.9744]


# --- synthetic edge cases in trtexec's documented layout -------------------------------------------------------

TS = "[05/01/2026-10:00:03] "
CMD = "trtexec --loadEngine=model_fp16.engine --shapes=images:8x3x224x224"
NAN_LOG = "\n".join([
    f"&&&& RUNNING TensorRT.trtexec [TensorRT v110100] [b106] # {CMD}",
    f"{TS}[I] Selected Device: Orin",
    f"{TS}[I] TensorRT version: 11.1.0",
    f"{TS}[I] [TRT] Total Host Persistent Memory: 103552",
    f"{TS}[I] === Performance summary ===",
    f"{TS}[I] Throughput: inf qps",
    f"{TS}[I] Latency: min = 0 ms, max = 1.23457e+06 ms, mean = nan ms, median = 3 ms, percentile(90%) = -nan ms, "
    "percentile(95%) = 1e-05 ms, percentile(99%) = 4.5 ms",
    f"{TS}[W] * GPU compute time is unstable, with coefficient of variance = inf%.",
    f"{TS}[W]   If not already in use, locking GPU clock frequency may improve the stability.",
    f"{TS}[I] GPU Compute Time: min = 2 ms, max = 4 ms, mean = 2.5 ms, median = 2.25 ms, percentile(99%) = 3.9 ms",
    f"{TS}[I] Total Host Walltime: 3 s",
    f"{TS}[V] Throughput: the observed throughput computed by dividing the number of queries by the walltime.",
    f"{TS}[V] Latency: min = 99 ms, max = 99 ms, mean = 99 ms, median = 99 ms",
    f"&&&& PASSED TensorRT.trtexec [TensorRT v110100] [b106] # {CMD}",
])


def test_summary_with_nan_inf_exponents_and_interleaved_warning(tmp_path):
    path = tmp_path / "trtexec.log"
    path.write_text(NAN_LOG)
    imp = read_trtexec([path])
    [run] = imp.runs
    assert run.latency_ms == {"min": 0.0, "mean": None, "p50": 3.0, "p90": None, "p95": 1e-05, "p99": 4.5,
                              "max": 1234570.0}
    assert run.gpu_compute_ms == {"min": 2.0, "mean": 2.5, "p50": 2.25, "p90": None, "p95": None, "p99": 3.9,
                                  "max": 4.0}
    assert run.throughput_qps is None and run.cv is None and run.walltime_s == 3.0
    # a loaded engine's file name is no evidence of its precision (issue 22: model-FP32.plan built with --fp16)
    assert (run.tensorrt, run.device, run.precision, run.batch) == ("11.1.0", "Orin", None, 8)
    assert run.warnings == ["GPU compute time is unstable, with coefficient of variance = inf%. If not already in use, "
                            "locking GPU clock frequency may improve the stability."]
    assert imp.warnings == [f"{path}: trtexec printed {what} as {token}; recorded as null" for what, token in (
        ("Throughput", "inf"), ("Latency mean", "nan"), ("Latency p90", "-nan"),
        ("coefficient of variance", "inf"))]


def test_warning_written_to_stderr_after_the_closing_banner_stays_with_its_run():
    banner, *body, closing = NAN_LOG.replace("inf%", "2.5%").splitlines()
    warnings = [line for line in body if "[W]" in line]
    runs, _, _ = read_log("\n".join([banner, *(b for b in body if b not in warnings), closing, *warnings]), "x.log")
    assert runs[0].cv == pytest.approx(0.025) and runs[0].warnings[0].startswith("GPU compute time is unstable")


def test_gzipped_log_and_a_failed_run_without_summary(tmp_path):
    path = tmp_path / "trtexec.log.gz"
    path.write_bytes(gzip.compress(NAN_LOG.encode()))
    assert read_trtexec([path]).runs[0].device == "Orin"
    failed = tmp_path / "failed.log"
    failed.write_text("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=m.engine\n"
                      "[05/01/2026-10:00:00] [E] Error opening engine file: m.engine\n"
                      "&&&& FAILED TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=m.engine\n")
    with pytest.raises(TrtexecError, match=r"failed.log has no performance summary \(trtexec FAILED before timing; "
                                           r"see the log's \[E\] lines\)"):
        read_trtexec([failed])


def profile_line(name: str, total: str, avg: str, median: str, percent: str) -> str:
    """One layer as trtexec writes it: the name unescaped, numbers as iostream prints them."""
    return (f', {{ "name" : "{name}", "timeMs" : {total}, "averageMs" : {avg}, "medianMs" : {median}, '
            f'"percentage" : {percent} }}')


PROFILE_JSON = "\n".join([
    "[",
    '  { "count" : 10 }',
    profile_line("/blocks.0/attn/qkv/MatMul + /blocks.0/attn/Add", "2", "0.2", "0.2", "nan"),
    profile_line('my "quoted" layer \\ with backslash', "1.5", "0.15", "0.1", "-nan"),
    profile_line("{ForeignNode[/blocks.1/norm1/LayerNormalization.../blocks.2/mlp/fc2/Add]}", "6", "0.6", "0.6", "60"),
    profile_line("Reformatting CopyNode for Input Tensor 0 to /blocks.0/attn/qkv/MatMul", "0.5", "0.05", "0.05", "5"),
    "]",
])


def test_profile_with_bare_nan_and_unescaped_quotes():
    [p] = read_profile_json(PROFILE_JSON, "profile.json")
    assert p.iterations == 10 and len(p.layers) == 4
    assert p.layers[0].percent is None and p.layers[1].percent is None and p.layers[2].percent == 60.0
    assert p.layers[1].name == 'my "quoted" layer \\ with backslash'
    assert p.layers[1] == LayerTime(name=p.layers[1].name, total_ms=1.5, avg_ms=0.15, median_ms=0.1)


def test_profile_json_reformatted_by_a_tool_is_read_as_json():
    text = json.dumps([{"count": 3}, {"name": "a", "timeMs": 3, "averageMs": 1, "percentage": 100}], indent=4)
    [p] = read_profile_json(text.replace("100", "NaN"), "p.json")
    assert p.iterations == 3 and p.layers == [LayerTime(name="a", total_ms=3.0, avg_ms=1.0)]


def test_times_with_nan_tokens_and_concatenated_arrays(tmp_path):
    def record(t: float, compute: str) -> str:
        return (f'{{ "startEnqMs" : {t}, "endEnqMs" : {t + 0.1}, "startH2dMs" : {t}, "endH2dMs" : {t}, '
                f'"startComputeMs" : {t}, "endComputeMs" : {t + 1}, "startD2hMs" : {t + 1}, "endD2hMs" : {t + 1}, '
                f'"h2dMs" : 0, "computeMs" : {compute}, "d2hMs" : 0, "latencyMs" : {compute} }}')

    first = "[\n  " + "\n, ".join(record(300 + i, c) for i, c in enumerate(["1", "2", "nan", "3"])) + "\n]\n"
    second = "[\n  " + "\n, ".join(record(400 + i, c) for i, c in enumerate(["5", "-nan", "7"])) + "\n]\n"
    path = tmp_path / "times.json"
    path.write_text(first + second)
    imp = read_trtexec([path])
    assert [r.source for r in imp.runs] == [f"{path} (array 1)", f"{path} (array 2)"]
    assert imp.runs[0].gpu_compute_ms["p50"] == 2.0 and imp.runs[0].iterations == 4
    assert imp.runs[1].gpu_compute_ms["mean"] == 6.0
    assert imp.runs[0].throughput_qps == pytest.approx(4 / 4 * 1000)  # 4 queries from 300 ms to 304 ms
    assert imp.warnings == [f"{path} (array 1): 1 queries with a non-finite time left out",
                            f"{path} (array 2): 1 queries with a non-finite time left out",
                            f"{path} (array 1): batch not stated, assumed 1: pass --batch N",
                            f"{path} (array 2): batch not stated, assumed 1: pass --batch N"]


def test_trtexec_statistics_rules():
    s = trtexec_stats([4.0, 1.0, 3.0, 2.0])
    assert (s["min"], s["mean"], s["p50"], s["max"]) == (1.0, 2.5, 2.5, 4.0)  # median: mean of the two middles
    assert trtexec_stats([3.0, 1.0, 2.0])["p50"] == 2.0
    # float32 as in C++: (1 - 0.99f) * 100 = 0.99999 -> int 0, so p99 of 1..100 is the maximum
    assert percentile_index(100, 99) == 99 and trtexec_stats([float(i) for i in range(1, 101)])["p99"] == 100.0
    assert percentile_index(958, 99) == 948 and percentile_index(1, 90) == 0
    assert all(v is None for v in trtexec_stats([]).values())


def test_versions_and_precisions():
    assert [tensorrt_version(v) for v in ("8502", "8205", "8603", "100300", "110100")] == [
        "8.5.2", "8.2.5", "8.6.3", "10.3.0", "11.1.0"]
    assert precision_of("trtexec --onnx=m.onnx --int8 --fp16") == "int8"
    assert precision_of("trtexec --onnx=m.onnx --best") == "int8"
    assert precision_of("trtexec --loadEngine=model_fp16.engine --useCudaGraph") is None  # not from the name
    assert precision_of("trtexec --loadEngine=model.engine") is None
    assert precision_of("trtexec --onnx=model.onnx --saveEngine=model.engine") == "fp32"
    assert precision_of("trtexec --onnx=model.onnx --stronglyTyped") is None


# --- the per-block and per-op aggregation ----------------------------------------------------------------------

def test_block_and_op_from_fused_layer_names():
    assert classify("/blocks.3/attn/qkv/MatMul + /blocks.3/attn/Add") == ("block 3", "MatMul")
    assert classify("{ForeignNode[/blocks.0/norm1/LayerNormalization.../blocks.11/mlp/fc2/Add]}") == (
        "blocks 0-11", "fused")
    assert classify("PWN(/model/blocks.10/mlp/act/Div, PWN(/model/blocks.10/mlp/act/Erf))") == (
        "block 10", "pointwise")
    assert classify("Reformatting CopyNode for Input Tensor 0 to /blocks.2/attn/MatMul") == ("block 2", "reformat")
    assert classify("/model/blocks.12/mlp/fc1/MatMul_output_0_clone_1") == ("block 12", "MatMul")
    assert classify("/q/Constant_2_output_0 + /model/blocks.1/attn/proj/Conv") == ("block 1", "Conv")
    # leapkit's dynamo exporter names carry no block: the op comes from the name, the block is unknown
    assert classify("node_MatMul_12 + node_linear") == ("unknown", "MatMul")
    assert classify("node_layer_norm_3") == ("unknown", "LayerNormalization")


def _vit_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def node(op: str, name: str, scope: str | None, inputs: list[str], output: str):
        n = helper.make_node(op, inputs, [output], name=name)
        if scope is not None:
            p = n.metadata_props.add()
            p.key, p.value = "namespace", scope
        return n

    block = ": leapkit.models.Backbone/model.blocks: torch.nn.Sequential/model.blocks.{}: timm.Block/x: aten.x"
    nodes = [node("MatMul", "node_MatMul_12", block.format(0), ["x", "w"], "a"),
             node("Add", "node_linear", block.format(0), ["a", "b"], "c"),
             node("Cast", "cast_layer_norm_1__to_fp16", None, ["c"], "d"),
             node("LayerNormalization", "node_layer_norm_1", block.format(1), ["d", "s", "b2"], "e"),
             node("LayerNormalization", "node_layer_norm_8", ": leapkit.models.Backbone/model.norm: x", ["e"], "y")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_blocks_from_the_onnx_models_node_metadata(tmp_path):
    nodes = onnx_nodes(_vit_onnx(tmp_path / "model.onnx"))
    assert (nodes["node_MatMul_12"].block, nodes["node_layer_norm_8"].block) == (0, None)
    assert nodes["cast_layer_norm_1__to_fp16"].block == 1  # borrowed from node_layer_norm_1
    profile = LayerProfile(source="p", iterations=4, layers=[
        LayerTime(name="node_MatMul_12 + node_linear", total_ms=4.0, avg_ms=1.0),
        LayerTime(name="cast_layer_norm_1__to_fp16 + node_layer_norm_1", total_ms=2.0, avg_ms=0.5),
        LayerTime(name="node_layer_norm_8", total_ms=1.0, avg_ms=None),  # from total / iterations
        LayerTime(name="{ForeignNode[node_MatMul_12...node_layer_norm_1]}", total_ms=1.0, avg_ms=0.25),
    ])
    by_block, by_op = aggregate_profile(profile, nodes)
    assert by_block.rows == [["block 0", "1", "1.0000", "50.0%"], ["blocks 0-1", "1", "0.2500", "12.5%"],
                             ["block 1", "1", "0.5000", "25.0%"], ["outside blocks", "1", "0.2500", "12.5%"]]
    assert by_op.rows == [["MatMul", "1", "1.0000", "50.0%"], ["LayerNormalization", "2", "0.7500", "37.5%"],
                          ["fused", "1", "0.2500", "12.5%"]]
    assert "block from the ONNX model's node metadata" in by_block.to_markdown()
    assert aggregate_profile(profile)[0].rows == [["unknown", "4", "2.0000", "100.0%"]]


def test_onnx_nodes_refuses_a_file_that_is_not_onnx(tmp_path):
    pytest.importorskip("onnx")
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    with pytest.raises(TrtexecError, match=r"model.onnx is not a readable ONNX model \(\w+\); pass the bundle's"):
        onnx_nodes(bad)
