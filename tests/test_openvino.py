"""OpenVINO on CPU targets: the runner, the IR variants an export writes (bf16 among them), and what bench finds,
measures and judges."""

from __future__ import annotations

import ctypes
import json
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml
from helpers import make_run, run_cli

import leapkit.deploy.export as ex
from leapkit.deploy.manifest import ExportManifest
from leapkit.deploy.parity import MIN_COSINE, compare
from leapkit.deploy.progress import Steps
from leapkit.host import cpu_bf16
from leapkit.latency.artifacts import resolve_model
from leapkit.latency.bench import bench
from leapkit.latency.measure import measure
from leapkit.latency.timing import Method
from leapkit.profiles import target_path
from leapkit.runtimes.base import run_batched
from leapkit.runtimes.openvino_runner import OpenVINORunner
from leapkit.runtimes.ort_runner import OrtRunner
from leapkit.runtimes.signal_stack import SignalStack

pytest.importorskip("openvino")

BF16 = cpu_bf16()
FAST = dict(warmup_s=0.0, iterations=5, threads=1)


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    """The x86-cpu profile with OpenVINO as its runtime (and ONNX Runtime beside it)."""
    data = yaml.safe_load(target_path("x86-cpu").read_text())
    data.update(name="x86-openvino", runtime="openvino", precision="int8")
    path = tmp_path_factory.mktemp("profile") / "x86-openvino.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class CountingSteps(Steps):
    """Steps that remember how many were announced as the total and how many were done."""

    seen: ClassVar[list[tuple[int, int]]] = []

    def __exit__(self, *exc) -> None:
        CountingSteps.seen.append((self.total, self.finished))
        super().__exit__(*exc)

    def done(self) -> None:
        self.finished = getattr(self, "finished", 0) + 1
        super().done()


@pytest.fixture(scope="module")
def exported(profile, tmp_path_factory) -> ex.ExportResult:
    run = make_run(tmp_path_factory.mktemp("openvino") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ex, "Steps", CountingSteps)
        return ex.export(run, target=profile, precision="all", check=False, calib_images=16, parity_images=8,
                         probe_images=60)


def test_export_writes_checked_openvino_irs(exported):
    variants = {(v.file, v.precision): v for v in exported.variants}
    irs = {("model_openvino_fp32.xml", "fp32"), ("model_openvino_int8.xml", "int8")}
    bf16 = {("model_openvino_fp32.xml", "bf16")} if BF16 else set()
    assert set(variants) == {("model.onnx", "fp32"), ("model_int8.onnx", "int8")} | irs | bf16
    fp32, int8 = variants["model_openvino_fp32.xml", "fp32"], variants["model_openvino_int8.xml", "int8"]
    assert fp32.format == int8.format == "openvino"
    assert fp32.checked_with.endswith("inference precision f32") and int8.checked_with.endswith("precision bf16")
    assert (fp32.inference_precision, int8.inference_precision) == ("f32", "bf16")
    assert fp32.status == "ok" and fp32.parity["cosine_min"] >= MIN_COSINE["fp32"] and fp32.accuracy["top1"] > 20
    assert int8.parity["images"] == 8 and int8.accuracy is not None
    assert int8.notes[0] == ("non-INT8 layers ran in bf16 here (avx512_bf16)" if BF16 == "avx512_bf16" else
                             int8.notes[0])
    out = exported.out_dir
    assert fp32.size_bytes == (out / "model_openvino_fp32.xml").stat().st_size + (
        out / "model_openvino_fp32.bin").stat().st_size
    manifest = ExportManifest.load(out)
    assert {"model_openvino_fp32.bin", "model_openvino_int8.bin"} <= set(manifest.files)
    onnx_entry = next(v for v in json.loads((out / "manifest.json").read_text())["variants"] if v["format"] == "onnx")
    assert "inference_precision" not in onnx_entry  # written for OpenVINO variants only
    readme = (out / "README.md").read_text()
    assert "compile_model('model_openvino_int8.xml', 'CPU', {'INFERENCE_NUM_THREADS': 2, " \
           "'INFERENCE_PRECISION_HINT': 'bf16'" in readme
    assert "## Running it with OpenVINO" in readme and "## Running it with ONNX Runtime" in readme
    assert "judges the budget on the fastest one whose checks passed, among openvino, onnxruntime" in readme


def test_the_export_counts_its_steps_right(exported):
    total, done = CountingSteps.seen[-1]
    assert total == done


@pytest.mark.skipif(BF16 is None, reason="this CPU has no bf16 arithmetic")
def test_bf16_is_the_fp32_ir_with_the_bf16_hint_gated_like_fp16(exported):
    bf16 = exported.manifest.variant("model_openvino_fp32.xml", "bf16")
    assert bf16.format == "openvino" and bf16.inference_precision == "bf16"
    assert bf16.checked_with.endswith("inference precision bf16")
    assert bf16.parity["min_cosine_required"] == MIN_COSINE["fp16"] == 0.999 and bf16.parity["passed"]
    assert bf16.notes[0] == f"the fp32 IR run with the bf16 inference precision hint ({BF16})"
    # The probe is gated like fp16's (1 point); on 30 validation images of a random student one image is 3.3 points.
    drop = bf16.accuracy["drop_top1"]
    assert bf16.accuracy["max_drop_top1"] == 1.0 and bf16.status == ("ok" if drop <= 1.0 else "failed")
    assert [n.split(":")[0] for n in bf16.notes[1:]] == ([] if drop <= 1.0 else ["accuracy"])
    assert exported.manifest.variant("model_openvino_fp32.xml").precision == "fp32"  # the first entry of the file
    assert "| model_openvino_fp32.xml | openvino | bf16 |" in (exported.out_dir / "README.md").read_text()
    runner = OpenVINORunner(exported.out_dir / "model_openvino_fp32.xml", threads=1, hint="bf16")
    assert "(bf16, 1 threads)" in runner.providers[0]


def test_runner_reads_the_hint_and_matches_onnxruntime(exported):
    out = exported.out_dir
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    ir = OpenVINORunner(out / "model_openvino_fp32.xml", threads=1)
    assert ir.hint == "f32" and ir.config["INFERENCE_NUM_THREADS"] == 1 and ir.runtime == "openvino"
    assert "f32" in ir.providers[0] and "1 threads" in ir.providers[0]
    assert OpenVINORunner(out / "model_openvino_int8.xml", threads=1).hint == "bf16"
    stats = compare(run_batched(OrtRunner(out / "model.onnx", 1), x, 2), run_batched(ir, x, 2))  # 2, 2, 1
    assert min(s["cosine_min"] for s in stats.values()) > 0.99999
    assert ir.input_shape(3) == [3, 3, 32, 32]
    run = ir.timed(x[:1])
    run()
    ir.close()


@pytest.mark.skipif(sys.platform != "linux", reason="sigaltstack is read through Linux's libc")
def test_the_runner_gives_the_thread_back_its_signal_stack(exported):
    """OpenVINO's CPU plugin leaves its own, later unmapped, alternate signal stack on the compiling thread."""
    libc = ctypes.CDLL(None)  # the C library the process has loaded
    seen: list[tuple] = []

    def in_a_fresh_thread() -> None:  # a new thread starts without an alternate signal stack
        def stack() -> tuple:
            st = SignalStack()
            libc.sigaltstack(None, ctypes.byref(st))
            return st.ss_sp, st.ss_flags, st.ss_size

        seen.append(stack())
        ir = OpenVINORunner(exported.out_dir / "model_openvino_fp32.xml", threads=1)
        x = np.zeros((1, 3, 32, 32), np.float32)
        ir(x)
        ir.timed(x)()
        ir.close()
        seen.append(stack())

    thread = threading.Thread(target=in_a_fresh_thread)
    thread.start()
    thread.join()
    assert len(seen) == 2 and seen[0] == seen[1], seen


def test_bench_finds_and_measures_the_irs(exported, profile):
    src = resolve_model(exported.out_dir, "x86-openvino")
    irs = {(a.name, a.precision): a for a in src.artifacts if a.format == "openvino"}
    assert set(irs) == {("model_openvino_fp32.xml", "fp32"), ("model_openvino_int8.xml", "int8")} | (
        {("model_openvino_fp32.xml", "bf16")} if BF16 else set())
    art = irs["model_openvino_fp32.xml", "fp32"]
    assert art.runtime == "openvino" and art.hint == "f32" and art.status == "ok"
    assert art.size_mb == pytest.approx(exported.manifest.variant(art.name).size_bytes / 1e6)
    assert src.has("openvino") and src.has("onnxruntime")
    result, _ = measure(art, Method(batch=1, threads=1, warmup_s=0.05, duration_s=0.2), img_size=32)
    assert result.status == "ok" and result.runtime == "openvino" and result.format == "openvino"
    assert result.input_shape == [1, 3, 32, 32] and result.providers[0].startswith("OpenVINO")
    assert result.p50_ms > 0 and result.label == "OpenVINO fp32"
    lone = resolve_model(exported.out_dir / "model_openvino_int8.xml")
    assert lone.kind == "openvino" and lone.artifacts[0].precision == "int8" and lone.artifacts[0].hint is None


def test_cli_bench_of_an_exported_ir(exported, tmp_path, monkeypatch, capsys):
    """`leapkit bench model_openvino_fp32.xml --target x86-cpu` runs OpenVINO and labels its row."""
    code, err = run_cli(["bench", str(exported.out_dir / "model_openvino_fp32.xml"), "--target", "x86-cpu", "-n", "5",
                         "--warmup", "0", "--threads", "1", "--budget-ms", "100000", "--out", str(tmp_path)],
                        monkeypatch, capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "bench" / "x86-cpu.json").read_text())
    (r,) = data["results"]
    assert (r["runtime"], r["format"], r["precision"], r["status"]) == ("openvino", "openvino", "fp32", "ok")
    assert r["providers"][0].startswith("OpenVINO") and "(f32, 1 threads)" in r["providers"][0]
    assert data["verdict"] == "PASS" and data["gated"] == "OpenVINO fp32"
    assert data["choice"].startswith("OpenVINO fp32 (openvino), the fastest by p99 of the 1 variant in openvino, "
                                     "onnxruntime whose export checks passed")
    md = (tmp_path / "bench" / "x86-cpu.md").read_text()
    assert "| OpenVINO fp32 | fp32 | openvino | ok |" in md and f"**Judged:** {data['choice']}." in md
    assert "openvino 20" in md  # the environment line names OpenVINO's version
    assert data["environment"]["openvino"] and data["environment"]["bf16"] == BF16


def test_bench_of_the_export_judges_the_fastest_variant_that_passed(exported, profile, tmp_path):
    report = bench(exported.out_dir, profile, budget_ms=1e6, out_dir=tmp_path, **FAST)
    labels = [r.label for r in report.results]
    expected = ["ONNX fp32", "ONNX int8", "OpenVINO fp32", *(["OpenVINO bf16"] if BF16 else []), "OpenVINO int8"]
    assert labels == expected
    by_label = {r.label: r for r in report.results}
    if BF16:
        assert "(bf16, 1 threads)" in by_label["OpenVINO bf16"].providers[0]
    passed = [r for r in report.results if not r.export_failed]
    fastest = min(passed, key=lambda r: (r.p99_ms, ("openvino", "onnxruntime").index(r.runtime)))
    assert report.gated == fastest.label and report.verdict == "PASS"
    assert report.choice.startswith(f"{fastest.label} ({fastest.runtime}), the fastest by p99 of the {len(passed)} "
                                    f"variants in openvino, onnxruntime whose export checks passed")
