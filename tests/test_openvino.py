"""OpenVINO on CPU targets: the runner, the IR variants an export writes, and what bench finds and measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_export import make_run

import leapkit.deploy.export as ex
from leapkit.deploy.manifest import ExportManifest
from leapkit.deploy.parity import MIN_COSINE, compare
from leapkit.latency.artifacts import resolve_model
from leapkit.latency.measure import measure
from leapkit.latency.timing import Method
from leapkit.profiles import target_path
from leapkit.runtimes import OpenVINORunner, OrtRunner, cpu_bf16, run_batched

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    """The x86-cpu profile with OpenVINO as its runtime."""
    data = yaml.safe_load(target_path("x86-cpu").read_text())
    data.update(name="x86-openvino", runtime="openvino", precision="int8")
    path = tmp_path_factory.mktemp("profile") / "x86-openvino.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def exported(profile, tmp_path_factory) -> ex.ExportResult:
    run = make_run(tmp_path_factory.mktemp("openvino") / "run")
    return ex.export(run, target=profile, precision="all", check=False, calib_images=16, parity_images=8,
                     probe_images=60)


def test_export_writes_checked_openvino_irs(exported):
    by_file = {v.file: v for v in exported.variants}
    assert set(by_file) == {"model.onnx", "model_int8.onnx", "model_openvino_fp32.xml", "model_openvino_int8.xml"}
    fp32, int8 = by_file["model_openvino_fp32.xml"], by_file["model_openvino_int8.xml"]
    assert fp32.format == int8.format == "openvino" and fp32.precision == "fp32" and int8.precision == "int8"
    assert fp32.checked_with.endswith("inference precision f32") and int8.checked_with.endswith("precision bf16")
    assert fp32.status == "ok" and fp32.parity["cosine_min"] >= MIN_COSINE["fp32"] and fp32.accuracy["top1"] > 20
    assert int8.parity["images"] == 8 and int8.accuracy is not None
    assert int8.notes[0] == ("non-INT8 layers ran in bf16 here (avx512_bf16)" if cpu_bf16() == "avx512_bf16" else
                             int8.notes[0])
    out = exported.out_dir
    assert fp32.size_bytes == (out / "model_openvino_fp32.xml").stat().st_size + (
        out / "model_openvino_fp32.bin").stat().st_size
    manifest = ExportManifest.load(out)
    assert {"model_openvino_fp32.bin", "model_openvino_int8.bin"} <= set(manifest.files)
    readme = (out / "README.md").read_text()
    assert "compile_model('model_openvino_int8.xml', 'CPU', {'INFERENCE_NUM_THREADS': 2, " \
           "'INFERENCE_PRECISION_HINT': 'bf16'" in readme


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


def test_bench_finds_and_measures_the_irs(exported, profile):
    src = resolve_model(exported.out_dir, "x86-openvino")
    irs = {a.name: a for a in src.artifacts if a.format == "openvino"}
    assert set(irs) == {"model_openvino_fp32.xml", "model_openvino_int8.xml"}
    art = irs["model_openvino_fp32.xml"]
    assert art.runtime == "openvino" and art.precision == "fp32" and art.status == "ok"
    assert art.size_mb == pytest.approx(exported.manifest.variant(art.name).size_bytes / 1e6)
    assert src.has("openvino") and src.has("onnxruntime")
    result, _ = measure(art, Method(batch=1, threads=1, warmup_s=0.05, duration_s=0.2), img_size=32)
    assert result.status == "ok" and result.runtime == "openvino" and result.format == "openvino"
    assert result.input_shape == [1, 3, 32, 32] and result.providers[0].startswith("OpenVINO")
    assert result.p50_ms > 0
    lone = resolve_model(exported.out_dir / "model_openvino_int8.xml")
    assert lone.kind == "openvino" and lone.artifacts[0].precision == "int8"

