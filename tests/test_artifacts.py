"""leapkit.latency.artifacts: what MODEL names, and the engines built on the device that an export folder holds.

Resolution only: running an engine needs TensorRT and a GPU (tests/test_runtimes.py covers the runner).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import make_run

import leapkit.deploy.export as ex
from leapkit.deploy.graph_precision import precision_from_name
from leapkit.errors import ModelError
from leapkit.latency.artifacts import engine_precision, resolve_model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A real export folder for the default Jetson: fp32 and fp16 ONNX, the manifest and the bundle's scripts."""
    run = make_run(tmp_path_factory.mktemp("artifacts") / "run")
    result = ex.export(run, target="jetson", precision="fp16", check=False, calib_images=8, parity_images=4,
                       probe_images=None)
    return result.out_dir


@pytest.fixture
def bundle(export_dir, tmp_path) -> Path:
    """A copy of the export folder to put engines in, as if they were built on the device."""
    return Path(shutil.copytree(export_dir, tmp_path / "export"))


def engines(folder: Path) -> dict[str, tuple[str, str]]:
    src = resolve_model(folder)
    return {a.name: (a.precision, a.status) for a in src.artifacts if a.format == "engine"}


def test_engines_built_on_the_device_are_found(bundle):
    """build_engine.sh writes the engine and a .json beside it; neither is in manifest.json."""
    assert "model_fp16.engine" not in json.loads((bundle / "manifest.json").read_text())["files"]
    (bundle / "model_fp16.engine").write_bytes(b"engine")
    (bundle / "model_fp16.engine.json").write_text(json.dumps({"engine": "model_fp16.engine", "precision": "fp16",
                                                               "built_by": "build_engine.sh"}))
    (bundle / "model.engine").write_bytes(b"engine")  # built from model.onnx: its .json says fp32
    (bundle / "model.engine.json").write_text(json.dumps({"precision": "fp32"}))
    (bundle / "student.plan").write_bytes(b"engine")  # someone's own engine: nothing says its precision
    (bundle / "yolo_int8.plan").write_bytes(b"engine")
    found = engines(bundle)
    assert found == {"model.engine": ("fp32", "ok"), "model_fp16.engine": ("fp16", "ok"),
                     "student.plan": ("unknown", "ok"), "yolo_int8.plan": ("int8", "ok")}
    src = resolve_model(bundle)
    assert src.kind == "export" and src.has("tensorrt") and src.has("onnxruntime")
    assert [a.name for a in src.artifacts if a.format == "onnx"] == ["model.onnx", "model_fp16.onnx"]


def test_a_failed_device_check_marks_the_engine(bundle):
    (bundle / "model_fp16.engine").write_bytes(b"engine")
    (bundle / "model_fp16.engine.json").write_text(json.dumps({"precision": "fp16"}))
    check = bundle / "results" / "fp16" / "check.json"
    check.parent.mkdir(parents=True)
    check.write_text(json.dumps({"passed": False, "problems": ["cls: 3 non-finite values (nan/inf)"]}))
    ((precision, status),) = engines(bundle).values()
    assert precision == "fp16"
    assert status == "failed: check_engine.sh fp16 on the device: cls: 3 non-finite values (nan/inf)"
    check.write_text(json.dumps({"passed": True, "problems": []}))
    assert engines(bundle) == {"model_fp16.engine": ("fp16", "ok")}


def test_engine_precision_falls_back_to_the_name(tmp_path):
    engine = tmp_path / "net.fp16.engine"
    engine.write_bytes(b"engine")
    assert engine_precision(engine) == "fp16"
    (tmp_path / "net.fp16.engine.json").write_text("not json")
    assert engine_precision(engine) == "fp16"
    (tmp_path / "net.fp16.engine.json").write_text(json.dumps({"precision": "fp8"}))  # not one leapkit knows
    assert engine_precision(engine) == "fp16"
    assert precision_from_name("model.engine") is None


def test_a_lone_engine_file_resolves(tmp_path):
    engine = tmp_path / "model_int8.engine"
    engine.write_bytes(b"engine")
    src = resolve_model(engine)
    assert src.kind == "engine" and [(a.format, a.precision) for a in src.artifacts] == [("engine", "int8")]
    other = tmp_path / "weights.bin"
    other.write_bytes(b"")
    with pytest.raises(ModelError, match="weights.bin is not a model leapkit can bench"):
        resolve_model(other)
