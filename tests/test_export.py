"""leapkit export end to end: the folder, the manifest contract, checks that fail, bad input, overwrite, the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import make_run, run_cli, torchscript_export
from onnx import TensorProto, numpy_helper

import leapkit.deploy.export as ex
from leapkit.cli.main import main
from leapkit.config import resolve_config, save_config
from leapkit.deploy.manifest import ExportManifest, sha256
from leapkit.deploy.onnx_fp16 import convert_fp16
from leapkit.deploy.onnx_graph import OPSET
from leapkit.deploy.onnx_int8 import FP16_QDQ_OPSET
from leapkit.deploy.parity import MAX_TOP1_DROP, MIN_COSINE
from leapkit.deploy.plan import resolve_precisions
from leapkit.deploy.summary import variants_table
from leapkit.errors import CheckFailed, ExportError
from leapkit.models import create_student, load_weights
from leapkit.profiles import load_target
from leapkit.runtimes.ort_runner import OrtRunner

SMALL = dict(calib_images=32, parity_images=16, probe_images=200)
HAS_TRT = importlib.util.find_spec("tensorrt") is not None

# The keys export/<target>/manifest.json has always had; bench, check_outputs.py and CI jobs read them.
MANIFEST_KEYS = {
    "format_version", "leapkit_version", "created", "status", "source_run", "target", "student", "exporter", "opset",
    "opsets", "input", "outputs", "batch", "variants", "engines", "calibration", "parity_data", "thresholds",
    "reference", "not_run", "files", "sizes", "int8",
}
VARIANT_KEYS = {"precision", "format", "file", "size_bytes", "status", "checked_with", "parity", "accuracy", "notes"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def exported(run_dir) -> ex.ExportResult:
    """One export of every precision for the default Jetson (TensorRT 10.3: deploy bundle here)."""
    return ex.export(run_dir, target="jetson", precision="all", check=False, **SMALL)




def broken_fp16(model, *args, **kwargs):
    """A genuinely wrong fp16 graph: every 2-D fp16 weight gets noise of half its own scale."""
    half = convert_fp16(model, *args, **kwargs)
    rng = np.random.default_rng(0)
    for t in half.graph.initializer:
        if t.data_type == TensorProto.FLOAT16 and len(t.dims) == 2:
            w = numpy_helper.to_array(t).astype(np.float32)
            noisy = w + rng.standard_normal(w.shape).astype(np.float32) * 0.5 * (np.abs(w).mean() + 1e-3)
            t.CopyFrom(numpy_helper.from_array(noisy.astype(np.float16), t.name))
    return half


def test_bundle_layout_and_manifest(exported, run_dir):
    out = run_dir / "export" / "jetson-orin-nano"
    assert exported.out_dir == out
    latest = run_dir / "export" / "latest"
    assert latest.is_symlink() and str(latest.readlink()) == "jetson-orin-nano"
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".")]
    m = json.loads((out / "manifest.json").read_text())
    assert set(m) == MANIFEST_KEYS
    assert all(set(v) == VARIANT_KEYS for v in m["variants"])
    for name in ("model.onnx", "model_fp16.onnx", "model_int8.onnx", "README.md", "build_engine.sh", "bench_engine.sh",
                 "check_engine.sh", "check_outputs.py", "reference_input_b1_0.bin", "reference_tokens.npy",
                 "reference_probe.npz", "calibration_cache.json"):
        assert m["files"][name] == sha256(out / name), name
        assert m["sizes"][name] == (out / name).stat().st_size, name
    assert "manifest.json" not in m["files"]
    assert m["input"] == {
        "name": "images", "shape": ["batch", 3, 32, 32], "dtype": "float32", "layout": "NCHW", "mean": [0.5] * 3,
        "std": [0.5] * 3, "preprocessing": "RGB scaled to [0, 1], then (x - mean) / std per channel",
    }
    assert m["opset"] == OPSET
    # The int8 graph holds fp16 Q/DQ (opset 19) for TensorRT 10.
    assert m["opsets"] == {"model.onnx": OPSET, "model_fp16.onnx": OPSET, "model_int8.onnx": FP16_QDQ_OPSET}
    assert m["source_run"] == str(run_dir.resolve())
    assert m["leapkit_version"]
    assert [o["name"] for o in m["outputs"]] == ["tokens", "cls", "patch_tokens"]
    assert [o["shape"] for o in m["outputs"]] == [["batch", 65, 32], ["batch", 32], ["batch", 64, 32]]
    assert m["student"] == {"model": "leapkit_demo_student", "trained_img_size": 32, "img_size": 32, "patch_size": 4,
                            "embed_dim": 32, "num_prefix_tokens": 1, "num_patches": 64,
                            "params": m["student"]["params"]}
    assert m["batch"] == {"min": 1, "opt": 1, "max": 1}
    assert m["calibration"]["images"] == 32 and m["calibration"]["split"] == "train"
    assert m["target"] == {"name": "jetson-orin-nano", "family": "jetson", "runtime": "tensorrt", "precision": "fp16",
                           "tensorrt": "10.3", "jetpack": "6.2", "latency_budget_ms": 33.3}
    assert m["thresholds"] == {"min_cosine": MIN_COSINE, "max_top1_drop": MAX_TOP1_DROP}
    assert any("tensorrt" in line.lower() for line in m["not_run"])
    assert set(m["reference"]["tolerance"]) == {"fp32", "fp16", "int8"}
    # The record reads back what was written, field for field.
    assert ExportManifest.load(out).to_dict() == m


def test_fp32_graph_reproduces_the_run_student(exported, run_dir):
    path = exported.out_dir / "model.onnx"
    model = onnx.load(str(path))
    assert "Resize" not in [n.op_type for n in model.graph.node]
    (inp,) = model.graph.input
    assert inp.name == "images" and inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    runner = OrtRunner(path)
    student = create_student("leapkit_demo_student", 32).eval()
    load_weights(student, run_dir / "student.safetensors")
    for b in (1, 3):
        x = torch.randn(b, 3, 32, 32)
        got = runner(x.numpy())
        with torch.no_grad():
            tokens = student.forward_features(x)
        np.testing.assert_allclose(got["tokens"], tokens.numpy(), atol=1e-4)
        np.testing.assert_allclose(got["cls"], tokens[:, 0].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["patch_tokens"], tokens[:, 1:].numpy(), atol=1e-4)


def test_every_variant_is_checked(exported):
    by_precision = {v.precision: v for v in exported.variants}
    assert set(by_precision) == {"fp32", "fp16", "int8"}
    assert by_precision["fp32"].parity["cosine_min"] >= 0.9999
    assert by_precision["fp16"].parity["cosine_min"] >= 0.999
    assert by_precision["fp32"].accuracy["drop_top1"] == pytest.approx(0.0, abs=0.5)
    for v in exported.variants:
        assert set(v.parity["outputs"]) == {"tokens", "cls", "patch_tokens"}
        assert v.parity["images"] == 16 and v.parity["min_cosine_required"] == MIN_COSINE[v.precision]
        assert v.accuracy["pytorch_top1"] > 20.0  # 10 classes: even random ViT features beat chance
        assert v.accuracy["max_drop_top1"] == MAX_TOP1_DROP[v.precision]
        assert v.checked_with.startswith("onnxruntime")
    assert exported.manifest.status == ("ok" if exported.passed else "failed")


def test_export_applies_the_targets_int8_layout(exported):
    calib = exported.manifest.calibration
    assert calib["runtime"] == "tensorrt" and calib["layout"] == "tensorrt-fp16" and calib["high_precision"] == "fp16"
    assert calib["method"] == "percentile" and calib["cache"] == "miss" and calib["split"] == "train"
    steps = exported.manifest.int8.steps
    assert steps[0].moved == [] and steps[0].quantized_ops == {"Conv": 1, "MatMul": 24}
    # Error per block of the strict graph: the patch embedding, each block, the final outputs.
    names = [e.name for e in exported.manifest.int8.blocks]
    assert names == ["patch_embed", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "tokens", "cls", "patch_tokens"]
    readme = (exported.out_dir / "README.md").read_text()
    assert "## INT8" in readme and exported.manifest.int8.blocks_table().to_markdown() in readme


def test_reference_outputs_reproduce_the_exported_graph(exported):
    """The bundle's reference (raw inputs per trtexec run, PyTorch's outputs as .npy) is what the fp32 graph gives;
    tests/test_check_outputs.py holds the device-side comparison."""
    out = exported.out_dir
    ref = json.loads((out / "manifest.json").read_text())["reference"]
    runner = OrtRunner(out / "model.onnx")
    outputs = {name: np.load(out / spec["file"]) for name, spec in ref["outputs"].items()}
    assert {len(v) for v in outputs.values()} == {max(i for r in ref["runs"] for i in r["images"]) + 1} and len(
        outputs["tokens"]) >= 8
    for run in ref["runs"]:
        x = np.fromfile(out / run["file"], dtype="<f4").reshape(len(run["images"]), 3, 32, 32)
        got = runner(x)
        for name, expected in outputs.items():
            np.testing.assert_allclose(got[name], expected[run["images"]], atol=1e-4, rtol=1e-4)


def test_scripts_and_readme(exported):
    out = exported.out_dir
    build = (out / "build_engine.sh").read_text()
    assert "--stronglyTyped" in build and "--fp16" not in build
    assert "--minShapes=images:1x3x32x32" in build and "--memPoolSize=workspace:1024" in build
    for name in ("build_engine.sh", "bench_engine.sh", "check_engine.sh"):
        assert subprocess.run(["bash", "-n", str(out / name)]).returncode == 0, name
    readme = (out / "README.md").read_text()
    assert "## Not run when this bundle was made" in readme and "tensorrt" in readme.lower()
    assert variants_table(exported.manifest).to_markdown() in readme  # the same table as the terminal's
    assert "model_int8.onnx" in readme and "TensorRT 10.3 (JetPack 6.2)" in readme


def test_summary_table_lists_every_variant(exported):
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(variants_table(exported.manifest, title="export").to_rich())
    text = console.export_text()
    assert all(v.file in text for v in exported.variants)
    markdown = variants_table(exported.manifest).to_markdown()
    assert markdown.count("\n") == 1 + len(exported.variants) and "| model_fp16.onnx | onnx | fp16 |" in markdown
    assert len({line.count("|") - line.count("\\|") for line in markdown.splitlines()}) == 1  # one column count


def test_resolve_precisions():
    jetson, cpu = load_target("jetson"), load_target("x86-cpu")
    assert resolve_precisions(None, jetson) == ("fp32", "fp16")
    assert resolve_precisions("all", cpu) == resolve_precisions(None, cpu) == ("fp32", "bf16", "int8")
    assert resolve_precisions(["int8"], jetson) == ("fp32", "int8")
    with pytest.raises(ExportError, match="precision fp16 is not available for target x86-cpu"):
        resolve_precisions(["fp16"], cpu)
    with pytest.raises(ExportError, match=r"precision bf16 is not available for target jetson-orin-nano \(runtime "
                                          r"tensorrt takes fp32, fp16, int8\)"):
        resolve_precisions(["bf16"], jetson)
    with pytest.raises(ExportError, match="unknown precision 'fp8'; use fp32, fp16, bf16, int8 or all"):
        resolve_precisions(["fp8"], jetson)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "nope", "--overwrite"], "unknown target 'nope'; known: "),
        (["--target", "x86-cpu", "--precision", "fp16", "--overwrite"],
         "precision fp16 is not available for target x86-cpu (runtimes openvino, onnxruntime take fp32, bf16, int8)"),
        (["--target", "jetson", "--input-size", "30", "--overwrite"],
         "input size 30 is not divisible by the patch size 4 of leapkit_demo_student"),
        (["--target", "jetson", "--precision", "bf16", "--overwrite"],
         "precision bf16 is not available for target jetson-orin-nano (runtime tensorrt takes fp32, fp16, int8)"),
        (["--target", "jetson", "--calibration", "kl", "--overwrite"],
         "'kl' is not one of 'percentile', 'entropy', 'minmax'"),
        (["--target", "jetson", "--int8-fallback", "maybe", "--overwrite"], "'maybe' is not one of"),
        (["--target", "jetson"], "already exists; pass --overwrite to replace it"),
        pytest.param(["--target", "jetson", "--slim", "--overwrite"],
                     "needs the 'onnxslim' package: pip install 'leapkit[slim]'",
                     marks=pytest.mark.skipif(importlib.util.find_spec("onnxslim") is not None,
                                              reason="onnxslim is installed")),
        pytest.param(["--target", "jetson", "--build-engine", "--overwrite"],
                     "building a TensorRT engine (--build-engine) needs the 'tensorrt' package: "
                     "pip install 'leapkit[trt]'",
                     marks=pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")),
    ],
)
def test_cli_bad_input(args, message, exported, run_dir, monkeypatch, capsys):
    before = sorted(p.name for p in (run_dir / "export").iterdir())
    manifest = (run_dir / "export" / "jetson-orin-nano" / "manifest.json").read_bytes()
    code, err = run_cli(["export", str(run_dir), *args], monkeypatch, capsys)
    assert code == 2
    assert message in " ".join(err.replace("│", " ").split())  # click's own errors come boxed over several lines
    if "--calibration" not in args and "--int8-fallback" not in args:
        assert err.strip().count("\n") == 0, err
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == before
    assert (run_dir / "export" / "jetson-orin-nano" / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize("kwargs,message", [
    (dict(calib_images=0), "--calibration-images and --parity-images must be >= 1"),
    (dict(parity_images=0), "--calibration-images and --parity-images must be >= 1"),
    (dict(calib_method="kl"), "unknown calibration method 'kl'; use percentile, entropy, minmax"),
    (dict(batch=0), "batch must be >= 1, got 0; pass --batch N"),
])
def test_api_bad_numbers_write_nothing(kwargs, message, exported, run_dir):
    manifest = (run_dir / "export" / "jetson-orin-nano" / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match=message):
        ex.export(run_dir, target="jetson", overwrite=True, **kwargs)
    assert (run_dir / "export" / "jetson-orin-nano" / "manifest.json").read_bytes() == manifest
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".")]


def test_cli_run_without_weights(tmp_path, monkeypatch, capsys):
    run = tmp_path / "unfinished"
    run.mkdir()
    save_config(resolve_config("demo"), run / "config.yaml")
    code, err = run_cli(["export", str(run)], monkeypatch, capsys)
    assert code == 2 and "has no student.safetensors" in err
    assert not (run / "export").exists()


def test_cli_entry_point_unknown_target(run_dir):
    proc = subprocess.run([sys.executable, "-m", "leapkit", "export", str(run_dir), "--target", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown target 'nope'" in proc.stderr and "jetson-orin-nano" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_failed_rebuild_keeps_the_old_export(exported, run_dir, monkeypatch):
    manifest = run_dir / "export" / "jetson-orin-nano" / "manifest.json"
    before = manifest.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(ex, "export_onnx", boom)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        ex.export(run_dir, target="jetson", overwrite=True, **SMALL)
    assert manifest.read_bytes() == before
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".")]


def test_a_wrong_variant_fails_the_export_and_exits_1(tmp_path, monkeypatch, capsys):
    """A variant that really computes something else (noisy fp16 weights) fails under the real thresholds."""
    run = make_run(tmp_path / "run", seed=1)
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    monkeypatch.setattr(ex, "convert_fp16", broken_fp16)
    with pytest.raises(CheckFailed, match=r"export for jetson-orin-nano failed its checks: model_fp16.onnx \(parity: "
                                          r"worst cosine 0\.\d+ < 0\.999"):
        ex.export(run, target="jetson", precision="fp16", **SMALL)
    manifest = run / "export" / "jetson-orin-nano" / "manifest.json"
    m = json.loads(manifest.read_text())
    assert m["status"] == "failed"
    assert [(v["file"], v["status"]) for v in m["variants"]] == [("model.onnx", "ok"), ("model_fp16.onnx", "failed")]
    fp16 = m["variants"][1]
    assert fp16["parity"]["passed"] is False and fp16["parity"]["cosine_min"] < MIN_COSINE["fp16"]
    assert "Status: **failed**" in (manifest.parent / "README.md").read_text()
    # Through the CLI, --overwrite replaces the export with the new (again failed) one and exits 1.
    code, err = run_cli(["export", str(run), "--target", "jetson", "-p", "fp16", "--overwrite", "--parity-images", "8",
                         "--probe-images", "100"], monkeypatch, capsys)
    assert code == 1
    assert "failed its checks" in err and "model_fp16.onnx" in err and err.strip().count("\n") == 0
    m2 = json.loads(manifest.read_text())
    assert m2["status"] == "failed" and m2["variants"][1]["parity"]["images"] == 8  # the new export, not the old (16)


def test_package_level_api_is_the_export_function(run_dir):
    code = (
        "import leapkit, leapkit.deploy.export as d\n"
        "assert leapkit.export is d.export\n"
        "from leapkit.errors import ConfigError\n"
        "try:\n"
        f"    leapkit.export({str(run_dir)!r}, target='nope')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "unknown target 'nope'" in proc.stdout


def test_export_at_another_input_size(tmp_path, monkeypatch):
    """A profile/--input-size resolution other than the training one: pos_embed resampled in PyTorch."""
    run = make_run(tmp_path / "run", seed=2)
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    result = ex.export(run, target="x86-cpu", precision="fp32", input_size=24, **SMALL)
    m = result.manifest
    assert m.input.shape == ["batch", 3, 24, 24] and m.input.img_size == 24
    assert m.student["trained_img_size"] == 32 and m.student["num_patches"] == 36
    assert [o["shape"] for o in m.outputs][2] == ["batch", 36, 32]
    assert result.passed and result.variants[0].parity["cosine_min"] >= 0.9999
    assert not (result.out_dir / "build_engine.sh").exists()  # onnxruntime target: no TensorRT scripts
    assert "## Running it" in (result.out_dir / "README.md").read_text()


def test_cli_success_prints_table_and_what_was_not_run(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run", seed=3)
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["leapkit", "export", str(run), "--target", "jetson", "-p", "fp32",
                                      "--parity-images", "8", "--probe-images", "100", "--calib-method", "minmax"])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "model.onnx" in out and "ok" in out and "export for jetson-orin-nano" in out
    if not HAS_TRT:
        assert "pip install 'leapkit[trt]'" in out  # rich markup must not eat the extra's brackets
    assert (run / "export" / "latest").resolve() == (run / "export" / "jetson-orin-nano").resolve()


def test_tensorrt8_target_gets_opset_17(tmp_path):
    """A JetPack 6.0 device (TensorRT 8.6, whose parser documents opsets <= 17) gets an opset-17 graph."""
    from leapkit.profiles import targets_dir

    lines = (targets_dir() / "jetson-orin-nano.yaml").read_text().replace("name: jetson-orin-nano", "name: orin-jp60")
    lines = "\n".join('tensorrt: "8.6"' if line.startswith("tensorrt:") else 'jetpack: "6.0"'
                      if line.startswith("jetpack:") else line for line in lines.splitlines())
    profile_path = tmp_path / "orin-jp60.yaml"
    profile_path.write_text(lines)
    result = ex.export(make_run(tmp_path / "run"), target=str(profile_path), precision="fp32", check=False, **SMALL)
    model = onnx.load(str(result.out_dir / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert json.loads((result.out_dir / "manifest.json").read_text())["opset"] == 17
    assert "trtexec" in (result.out_dir / "build_engine.sh").read_text()
    assert "TensorRT 8.6 is weakly typed" in (result.out_dir / "README.md").read_text()
