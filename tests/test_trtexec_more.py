"""leapkit.trtexec on what users paste (issue 22): every file of both expected.json sets, figure by figure.

The files are real, published trtexec output in ../shared/trtexec-samples (the first set) and its
more/ folder (the second: READMEs, grep excerpts, a wrapper's [INFO] prefix, exportTimes at batch
32), described in each folder's SOURCES.md with hand-typed figures in expected.json; the tests are
skipped when that folder is absent. Every figure is compared at relative error < 1e-4. The few
inputs the samples lack (a trex metadata sibling, an engine sidecar, a 0 qps throughput) are
written here in the documented layout of the tool that writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from leapkit.errors import TrtexecError
from leapkit.latency.imported import report_from_trtexec
from leapkit.latency.records import Budget
from leapkit.profiles import load_target
from leapkit.trtexec.context import version_line
from leapkit.trtexec.layers import read_profile_json
from leapkit.trtexec.log import read_log
from leapkit.trtexec.read import NOT_STATED, read_trtexec

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
MORE = SAMPLES / "more"
needs_samples = pytest.mark.skipif(not MORE.is_dir(), reason=f"{MORE} is absent")


def _expected(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "expected.json").read_text()) if folder.is_dir() else {}


def _cases() -> list[tuple[Path, dict[str, Any]]]:
    """(file, expectation) for every file of both sets; the first set's single runs in the second's shape."""
    cases = []
    for folder in (SAMPLES, MORE):
        for name, want in _expected(folder).items():
            if name.startswith("_"):
                continue
            if want["summary"] and "runs" not in want:
                want = {"summary": True, "runs": [{k: v for k, v in want.items() if k != "summary"}]}
            cases.append((folder / name, want))
    return cases


CASES = _cases()
# files whose batch nothing in them states (the A100 exportTimes hold timestamps only): leapkit's --batch gives it
BATCH_FROM_COMMAND_LINE = {"trt8.4era-a100-resnet50-fp16-b32-exportTimes.json",
                           "trt8.4era-a100-resnet50-qat-int8-b32-exportTimes.json"}
NO_SUMMARY = {  # the files that truly hold none, and the reason the reader gives
    "trt8.5.2-xavier-nx-lprnet-dumpProfile-nosummary.log": "has no performance summary (a --dumpProfile run without "
                                                           "--separateProfileRun?)",
    "trt10.16.1-h100-mnist-dumpProfile-nosummary.log": "has no performance summary (a --dumpProfile run without "
                                                       "--separateProfileRun?)",
    "trt8.4era-a100-resnet50-fp16-b32-exportProfile.json": "only a layer profile; pass the log or --exportTimes JSON",
    "trt8.4era-a100-resnet50-qat-int8-b32-exportProfile.json": "only a layer profile; pass the log or --exportTimes "
                                                               "JSON",
}


def close(got: float | None, want: float) -> bool:
    return got is not None and abs(got - want) <= 1e-4 * abs(want)


def assert_stats(got: dict[str, float | None], want: dict[str, float | None], what: str) -> None:
    for key, value in want.items():
        assert (got[key] is None) if value is None else close(got[key], value), (what, key, got[key], value)


@needs_samples
def test_both_sets_are_read_whole():
    assert len(CASES) == 5 + 16  # every file of both expected.json files
    assert {p.name for p, want in CASES if not want["summary"]} == set(NO_SUMMARY)


@needs_samples
@pytest.mark.parametrize(("path", "want"), CASES, ids=[p.name for p, _ in CASES])
def test_every_figure(path: Path, want: dict[str, Any]):
    if not want["summary"]:
        with pytest.raises(TrtexecError) as e:
            read_trtexec([path])
        assert NO_SUMMARY[path.name] in str(e.value) and e.value.exit_code == 2 and "\n" not in str(e.value)
        if "layers" in want:
            [profile] = read_profile_json(path.read_text(), path.name)
            assert len(profile.layers) == want["layers"]
        return
    stated = path.name not in BATCH_FROM_COMMAND_LINE
    imported = read_trtexec([path], batch=None if stated else want["runs"][0]["batch"])
    assert len(imported.runs) == len(want["runs"])
    for i, (run, expect) in enumerate(zip(imported.runs, want["runs"], strict=True)):
        what = f"{path.name} run {i + 1}"
        if "throughput_qps" in expect:
            assert close(run.throughput_qps, expect["throughput_qps"]), (what, run.throughput_qps)
        else:
            assert run.throughput_qps is None, what
        if "latency" in expect:
            assert_stats(run.latency_ms, expect["latency"], what)
        else:
            assert not run.has_latency, what  # a GPU-compute-only excerpt
        assert_stats(run.gpu_compute_ms, expect["gpu_compute"], what)
        for key in ("tensorrt", "device", "iterations"):
            if key in expect:
                assert getattr(run, key) == expect[key], (what, key)
        batch = expect.get("batch", "absent")
        if batch is None:  # the file does not state it: assumed 1, and said
            assert run.batch_source is None and run.batch == 1, what
            assert any(w.startswith(f"{path}: {NOT_STATED}") for w in imported.warnings), what
        elif batch != "absent":
            assert run.batch == batch, (what, run.batch)
            # stated by the file, or (batch 1) trtexec's default in a file that states nothing
            assert run.batch_source is not None or batch == 1, what
        if not stated:
            assert run.batch_source == f"--batch {batch} (given to leapkit)"


# --- issue 22, point by point -----------------------------------------------------------------------------------

@needs_samples
def test_batch_32_exporttimes_reports_images_per_second_apart_from_qps(tmp_path, monkeypatch, capsys):
    times = MORE / "trt8.4era-a100-resnet50-fp16-b32-exportTimes.json"
    code, _ = run_cli(["bench", "--from-trtexec", str(times), "--target", "rtx-4090", "--batch", "32", "--out",
                       str(tmp_path)], monkeypatch, capsys)
    assert code == 0
    [res] = json.loads((tmp_path / "bench" / "rtx-4090.json").read_text())["results"]
    assert close(res["qps"], 1155.36) and close(res["throughput"], 1155.36 * 32) and res["batch"] == 32
    assert res["batch_source"] == "--batch 32 (given to leapkit)"
    # without --batch the report says the batch was assumed, in the result and the warnings
    report = report_from_trtexec(read_trtexec([times]), load_target("rtx-4090"), Budget(10.0, "p99", "test"),
                                 evidence="imported", out_dir=tmp_path / "b1", model="m")
    data = json.loads(report.json_path.read_text())
    assert data["results"][0]["batch_source"] == NOT_STATED and data["results"][0]["batch"] == 1
    assert f"{times}: {NOT_STATED}" in data["warnings"] and NOT_STATED in report.md_path.read_text()


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_batch_zero_or_negative_is_exit_2(tmp_path, monkeypatch, capsys, batch):
    log = tmp_path / "trtexec.log"
    log.write_text("=== Performance summary ===\n")
    code, err = run_cli(["bench", "--from-trtexec", str(log), "--target", "rtx-4090", "--batch", batch, "--out",
                         str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and err.strip() == f"error: --batch must be >= 1, got {batch}"
    assert not (tmp_path / "bench").exists()


@needs_samples
def test_batch_from_sibling_files(tmp_path):
    first = read_trtexec([SAMPLES / "trt8.4era-rtx3090-resnet50-fp32-b32-exportTimes.json",
                          SAMPLES / "trt8.4era-rtx3090-resnet50-fp32-b32-exportLayerInfo-detailed.json"]).runs[0]
    assert first.batch == 32 and first.batch_source.endswith("exportLayerInfo-detailed.json (input binding)")
    # trex keeps its parse of the trtexec log beside X.engine.timing.json (layout of NVIDIA's trex examples)
    (tmp_path / "resnet.onnx.engine.timing.json").symlink_to(MORE / "trt8.4era-a100-resnet50-fp16-b32-exportTimes.json")
    (tmp_path / "resnet.onnx.engine.profile.metadata.json").write_text(json.dumps({
        "performance_summary": {"Throughput": 1155.36},
        "inference_options": {"Batch": "Explicit", "Input inference shape": "input.1=32x3x224x224"},
        "device_information": {"Selected Device": "NVIDIA A100 80GB PCIe", "Compute Capability": 8.0}}))
    (tmp_path / "resnet.onnx.engine.build.metadata.json").write_text(json.dumps({
        "build_options": {"Max batch": "explicit batch", "Precision": "FP32+FP16"}}))
    [run] = read_trtexec([tmp_path / "resnet.onnx.engine.timing.json"]).runs
    assert (run.batch, run.precision, run.device) == (32, "fp16", "NVIDIA A100 80GB PCIe")
    assert run.batch_source == str(tmp_path / "resnet.onnx.engine.profile.metadata.json")


@needs_samples
def test_tensorrt_8_0_prints_its_version_as_an_integer():
    [run] = read_trtexec([MORE / "trt8.0.3-gtx1070-mnist-fp16-b4-verbose.log"]).runs
    assert run.tensorrt == "8.0.3" and version_line("8003") == "8.0.3" and version_line("8.6.3") == "8.6.3"
    # the banner's version is never overwritten by the line
    runs, _, _ = read_log("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx\n"
                          "[I] TensorRT version: 8.6.0\n[I] Throughput: 5 qps\n", "x.log")
    assert runs[0].tensorrt == "8.6.1"


def test_wrapper_prefix_and_indented_lines():
    body = ["=== Performance summary ===", "Throughput: 100 qps",
            "Latency: min = 1 ms, max = 3 ms, mean = 2 ms, median = 2 ms, percentile(99%) = 3 ms"]
    for prefix in ("[INFO] [05/27/2023-12:05:31] [I] ", "    ", "  [05/27/2023-12:05:31] [I] ", "[INFO] ",
                   "2023-05-27 12:05:31,123 - bench - INFO - [05/27/2023-12:05:31] [I] ", "> "):
        [run], _, _ = read_log("\n".join(prefix + line for line in body), "x.log")
        assert run.throughput_qps == 100.0 and run.latency_ms["p99"] == 3.0, prefix


@needs_samples
def test_a_grep_excerpt_never_overwrites_a_key_read_before():
    runs = read_trtexec([MORE / "trt7.1-jetson-xavier-agx-googlenet-grepC4-readme-a1965b5.log"]).runs
    assert runs[1].latency_ms["p50"] == 2.00586  # the Enqueue Time median after "--" is not the host median
    assert "enqueue" not in runs[1].other_ms
    # a 7.x key read twice in one section (no separator between): the first is kept, and the reader says so
    text = "[I] GPU Compute\n[I] min: 1 ms\n[I] median: 2 ms\n[I] median: 9 ms\n[I] total compute time: 1 s\n"
    [run], _, notes = read_log(text, "x.log")
    assert run.gpu_compute_ms["p50"] == 2.0 and notes == ["x.log: a second GPU Compute p50 (9 ms) in one section; "
                                                          "the first (2 ms) is kept"]


@needs_samples
def test_gpu_compute_only_excerpts_are_judged_on_gpu_compute_time(tmp_path, monkeypatch, capsys):
    log = MORE / "trt7.1-jetson-xavier-agx-googlenet-grepC4-readme.log"
    code, err = run_cli(["bench", "--from-trtexec", str(log), "--target", "jetson-agx-orin", "--out", str(tmp_path)],
                        monkeypatch, capsys)
    assert code == 0 and "--stat" not in err
    data = json.loads((tmp_path / "bench" / "jetson-agx-orin.json").read_text())
    assert [r["latency_of"] for r in data["results"]] == ["GPU compute time"] * 2
    assert [r["p99_ms"] for r in data["results"]] == [3.87695, 2.00391]
    labels = [r["run_label"] for r in data["results"]]
    assert labels == ["run 1 of 2, GPU compute only", "run 2 of 2, GPU compute only"]
    assert any("only GPU compute time; judged on GPU compute time" in w for w in data["warnings"])


def test_zero_throughput_is_not_reported(tmp_path):
    log = tmp_path / "trt7.log"
    log.write_text("[I] Host Latency\n[I] min: 1 ms (end to end 1.1 ms)\n[I] median: 2 ms (end to end 2.1 ms)\n"
                   "[I] percentile: 3 ms at 99% (end to end 3.1 ms at 99%)\n[I] throughput: 0 qps\n"
                   "[I] walltime: 3 s\n")
    imported = read_trtexec([log])
    assert imported.runs[0].throughput_qps is None
    assert f"{log}: trtexec printed the throughput as 0 qps, which measures nothing; throughput not reported" \
        in imported.warnings
    report = report_from_trtexec(imported, load_target("rtx-4090"), Budget(10.0, "p99", "test"),
                                 evidence="imported", out_dir=tmp_path, model="m")
    assert report.results[0].throughput is None and report.results[0].qps is None
    assert "not reported" in report.md_path.read_text()


@needs_samples
def test_precision_from_the_build_never_from_the_file_name(tmp_path):
    name = "trt8.6.0-rtx3090-mnist-fp32-b4-verbose.log"
    [run] = read_trtexec([MORE / name]).runs  # loads ./model-FP32.plan, which was built with --fp16 elsewhere
    assert run.precision is None and run.batch == 4
    (tmp_path / name).symlink_to(MORE / name)
    (tmp_path / "model-FP32.plan.json").write_text(json.dumps({"engine": "model-FP32.plan", "precision": "fp16"}))
    [run] = read_trtexec([tmp_path / name]).runs  # the sidecar build_engine.sh writes beside the engine
    assert run.precision == "fp16"
    runs, _, _ = read_log("[I] Precision: FP32+INT8\n[I] Load engine: \n[I] Throughput: 5 qps\n", "build.log")
    assert runs[0].precision == "int8"  # the printed options of a log that built its engine


@needs_samples
def test_several_runs_in_one_file_are_told_apart(tmp_path):
    for name, labels in (
        ("trt8.2-jetsonnano-deeplab-edgetpu-fp16-2runs-readme.log",
         ["deeplab-edgetpu_default_argmax_xs.onnx", "deeplab-edgetpu_default_argmax_xs_opt.onnx"]),
        ("trt10.9-rtx4090-yolov9-qat-14summaries-readme.log", [f"run {i} of 14" for i in range(1, 15)]),
    ):
        report = report_from_trtexec(read_trtexec([MORE / name]), load_target("rtx-4090"),
                                     Budget(100.0, "p99", "test"), evidence="imported", out_dir=tmp_path, model="m")
        assert [r.run_label for r in report.results] == labels
        assert len({r.label for r in report.results}) == len(labels)
    batches = [r.label for r in read_trtexec([SAMPLES / "trt7.1-jetson-xavier-resnet50-caffe-int8-7runs.log"]).runs]
    assert batches == [f"batch {b}" for b in (1, 4, 8, 16, 32, 64, 128)]
