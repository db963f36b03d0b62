"""leapkit export: ONNX graph, fp16/int8 variants, parity, accuracy, bundle, bad input, overwrite."""

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
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

import leapkit.export as ex
from leapkit.cli.main import main
from leapkit.config import resolve_config, save_config
from leapkit.errors import CheckFailed, ConfigError, ExportError
from leapkit.models import create_student
from leapkit.profiles import load_target

SMALL = dict(calib_images=32, parity_images=16, probe_images=200)
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def make_run(root: Path, seed: int = 0) -> Path:
    """A finished demo run without training: the demo config at 32 px and a seeded random student."""
    root.mkdir(parents=True)
    save_config(resolve_config("demo", {"model": {"img_size": 32}}), root / "config.yaml")
    torch.manual_seed(seed)
    save_file(create_student("leapkit_demo_student", 32).state_dict(), str(root / "student.safetensors"))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def exported(run_dir) -> ex.ExportResult:
    """One export of every precision for the default Jetson (TensorRT 10.3: deploy bundle here)."""
    return ex.export(run_dir, target="jetson", precision="all", check=False, **SMALL)


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["leapkit", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def test_bundle_layout_and_manifest(exported, run_dir):
    out = run_dir / "export" / "jetson-orin-nano"
    assert exported.out_dir == out
    latest = run_dir / "export" / "latest"
    assert latest.is_symlink() and str(latest.readlink()) == "jetson-orin-nano"
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".")]
    m = json.loads((out / "manifest.json").read_text())
    for name in ("model.onnx", "model_fp16.onnx", "model_int8.onnx", "README.md", "build_engine.sh", "bench_engine.sh",
                 "check_engine.sh", "check_outputs.py", "reference_input.bin"):
        assert m["files"][name] == ex.sha256(out / name), name
    assert "manifest.json" not in m["files"]
    assert m["input"] == {
        "name": "images", "shape": ["batch", 3, 32, 32], "dtype": "float32", "layout": "NCHW", "mean": [0.5] * 3, "std": [0.5] * 3,
        "preprocessing": "RGB scaled to [0, 1], then (x - mean) / std per channel",
    }
    assert m["opset"] >= 17
    assert m["source_run"] == str(run_dir.resolve())
    assert m["leapkit_version"]
    assert [o["name"] for o in m["outputs"]] == ["tokens", "cls", "patch_tokens"]
    assert [o["shape"] for o in m["outputs"]] == [["batch", 65, 32], ["batch", 32], ["batch", 64, 32]]
    assert m["batch"] == {"min": 1, "opt": 1, "max": 1}
    assert m["calibration"]["images"] == 32
    assert m["target"]["tensorrt"] == "10.3"
    assert any("tensorrt" in line.lower() for line in m["not_run"])


def test_fp32_graph_is_fixed_size_with_dynamic_batch(exported, run_dir):
    path = exported.out_dir / "model.onnx"
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert "Resize" not in ops
    assert ops.count("LayerNormalization") == 2 * 4 + 1  # two per block and the final norm
    (inp,) = model.graph.input
    assert inp.name == "images" and inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ex.ort_session(path)
    student = create_student("leapkit_demo_student", 32).eval()
    from leapkit.models import load_weights

    load_weights(student, run_dir / "student.safetensors")
    for b in (1, 3):
        x = torch.randn(b, 3, 32, 32)
        got = dict(zip(ex.OUTPUT_NAMES, session.run(None, {"images": x.numpy()})))
        with torch.no_grad():
            tokens = student.forward_features(x)
        np.testing.assert_allclose(got["tokens"], tokens.numpy(), atol=1e-4)
        np.testing.assert_allclose(got["cls"], tokens[:, 0].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["patch_tokens"], tokens[:, 1:].numpy(), atol=1e-4)


def test_fp16_keeps_normalisation_and_io_in_fp32(exported):
    model = onnx.load(str(exported.out_dir / "model_fp16.onnx"))
    inits = {t.name: t.data_type for t in model.graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    types.update(inits)
    assert all(t.type.tensor_type.elem_type == TensorProto.FLOAT for t in (*model.graph.input, *model.graph.output))
    matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert matmul_weights and all(inits[w] == TensorProto.FLOAT16 for w in matmul_weights)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert all(types[i] == TensorProto.FLOAT for i in node.input if i), node.name


def test_int8_is_symmetric_qdq(exported):
    model = onnx.load(str(exported.out_dir / "model_int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    zero_points = [inits[n.input[2]] for n in dq if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    per_channel = [n for n in dq if n.input[0] in inits and inits[n.input[1]].size > 1]
    assert per_channel, "weights should be quantized per output channel"
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}


def test_parity_accuracy_and_status(exported):
    by_precision = {v.precision: v for v in exported.variants}
    assert set(by_precision) == {"fp32", "fp16", "int8"}
    assert by_precision["fp32"].parity["cosine_min"] >= 0.9999
    assert by_precision["fp16"].parity["cosine_min"] >= 0.999
    assert by_precision["fp32"].accuracy["drop_top1"] == pytest.approx(0.0, abs=0.5)
    for v in exported.variants:
        p, a = v.parity, v.accuracy
        assert set(p["outputs"]) == {"tokens", "cls", "patch_tokens"}
        assert a["pytorch_top1"] > 20.0  # 10 classes: even random ViT features beat chance
        bad = (not p["passed"]) or a["drop_top1"] > ex.MAX_TOP1_DROP[v.precision]
        assert v.status == ("failed" if bad else "ok"), v
    manifest = exported.manifest
    assert manifest["status"] == ("ok" if exported.passed else "failed")


def test_reference_outputs_reproduce_and_device_checker(exported, tmp_path):
    out = exported.out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    ref = manifest["reference"]
    x = np.fromfile(out / "reference_input.bin", dtype="<f4").reshape(ref["input"]["shape"])
    session = ex.ort_session(out / "model.onnx")
    got = dict(zip(ex.OUTPUT_NAMES, session.run(None, {"images": x})))
    for name, exp in ref["outputs"].items():
        np.testing.assert_allclose(got[name].ravel()[:8], exp["first"], atol=1e-4)
        assert float(np.linalg.norm(got[name])) == pytest.approx(exp["l2"], rel=1e-4)
    # The device-side checker on a trtexec-style --exportOutput file made from ONNX Runtime's outputs.
    dump = [{"name": k, "dimensions": "x".join(map(str, v.shape)), "values": v.ravel().tolist()} for k, v in got.items()]
    (tmp_path / "ok.json").write_text(json.dumps(dump))
    dump[1]["values"] = [v + 0.5 for v in dump[1]["values"]]
    (tmp_path / "bad.json").write_text(json.dumps(dump))
    checker = [sys.executable, str(out / "check_outputs.py")]
    ok = subprocess.run([*checker, str(tmp_path / "ok.json"), str(out / "manifest.json"), "fp32"], capture_output=True, text=True)
    assert ok.returncode == 0 and "PASS" in ok.stdout
    bad = subprocess.run([*checker, str(tmp_path / "bad.json"), str(out / "manifest.json"), "fp32"], capture_output=True, text=True)
    assert bad.returncode == 1 and "cls" in bad.stdout and "MISMATCH" in bad.stdout


def test_scripts_and_readme(exported):
    out = exported.out_dir
    build = (out / "build_engine.sh").read_text()
    assert "--stronglyTyped" in build and "--fp16" not in build
    assert "--minShapes=images:1x3x32x32" in build and "--memPoolSize=workspace:1024M" in build
    for name in ("build_engine.sh", "bench_engine.sh", "check_engine.sh"):
        assert subprocess.run(["bash", "-n", str(out / name)]).returncode == 0, name
    readme = (out / "README.md").read_text()
    assert "## Not run when this bundle was made" in readme and "tensorrt" in readme.lower()
    assert "model_int8.onnx" in readme


def test_summary_table_lists_every_variant(exported):
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(ex.summary_table(exported))
    text = console.export_text()
    assert all(v.file in text for v in exported.variants)


def test_resolve_precisions():
    jetson, cpu = load_target("jetson"), load_target("x86-cpu")
    assert ex.resolve_precisions(None, jetson) == ["fp32", "fp16"]
    assert ex.resolve_precisions("all", cpu) == ["fp32", "int8"]
    assert ex.resolve_precisions(["int8"], jetson) == ["fp32", "int8"]
    with pytest.raises(ExportError, match="precision fp16 is not available for target x86-cpu"):
        ex.resolve_precisions(["fp16"], cpu)
    with pytest.raises(ExportError, match="unknown precision 'bf16'"):
        ex.resolve_precisions(["bf16"], jetson)


def test_convert_fp16_shared_initializer():
    """An initializer used by a LayerNorm (fp32) and an Add (fp16) gets one copy of each type."""
    d = 8
    w = numpy_helper.from_array(np.linspace(-1, 1, d * d, dtype=np.float32).reshape(d, d), "w")
    b = numpy_helper.from_array(np.full(d, 0.1, np.float32), "b")
    g = numpy_helper.from_array(np.ones(d, np.float32), "g")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h2"]),
        helper.make_node("LayerNormalization", ["h2", "g", "b"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", d])], [w, b, g],
    )
    # IR version 10: onnx 1.23's default (14) is more than ONNX Runtime 1.30 can load
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    half = ex.convert_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    types = {t.name: t.data_type for t in half.graph.initializer}
    assert types == {"w__fp16": TensorProto.FLOAT16, "b__fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT, "g": TensorProto.FLOAT}
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((4, d)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-2)


def test_input_size_check_message():
    with pytest.raises(ExportError, match="input size 30 is not divisible by the patch size 4 of s; use 28 or 32"):
        ex.check_input_size(30, 4, "s")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "nope", "--overwrite"], "unknown target 'nope'; known: "),
        (["--target", "x86-cpu", "--precision", "fp16", "--overwrite"],
         "precision fp16 is not available for target x86-cpu (runtime onnxruntime takes fp32, int8)"),
        (["--target", "jetson", "--input-size", "30", "--overwrite"], "input size 30 is not divisible by the patch size 4 of leapkit_demo_student"),
        (["--target", "jetson", "--precision", "bf16", "--overwrite"], "unknown precision 'bf16'"),
        (["--target", "jetson"], "already exists; pass --overwrite to replace it"),
        pytest.param(["--target", "jetson", "--slim", "--overwrite"], "needs the 'onnxslim' package: pip install 'leapkit[slim]'",
                     marks=pytest.mark.skipif(importlib.util.find_spec("onnxslim") is not None, reason="onnxslim is installed")),
    ],
)
def test_cli_bad_input(args, message, exported, run_dir, monkeypatch, capsys):
    before = sorted(p.name for p in (run_dir / "export").iterdir())
    code, err = run_cli(["export", str(run_dir), *args], monkeypatch, capsys)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0, err
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == before


def test_cli_run_without_weights(tmp_path, monkeypatch, capsys):
    run = tmp_path / "unfinished"
    run.mkdir()
    save_config(resolve_config("demo"), run / "config.yaml")
    code, err = run_cli(["export", str(run)], monkeypatch, capsys)
    assert code == 2 and "has no student.safetensors" in err
    assert not (run / "export").exists()


def test_cli_entry_point_unknown_target(run_dir):
    proc = subprocess.run([sys.executable, "-m", "leapkit", "export", str(run_dir), "--target", "nope"], capture_output=True, text=True)
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


def torchscript_export(model, path, img_size, opset=ex.OPSET):
    """The TorchScript exporter: ~100x quicker than torch.export for tests that are not about the graph."""
    import warnings

    axes = {n: {0: "batch"} for n in (ex.INPUT_NAME, *ex.OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ex.Backbone(model).eval(), (torch.zeros(2, 3, img_size, img_size),), str(path), dynamo=False, opset_version=opset,
                          input_names=[ex.INPUT_NAME], output_names=list(ex.OUTPUT_NAMES), dynamic_axes=axes)
    return "torchscript (test)"


def test_parity_failure_is_marked_and_exits_1(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run", seed=1)
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    monkeypatch.setitem(ex.MIN_COSINE, "fp32", 1.5)  # unreachable: every artefact must fail
    with pytest.raises(CheckFailed, match="export for x86-cpu failed its checks: model.onnx"):
        ex.export(run, target="x86-cpu", precision="fp32", **SMALL)
    manifest = run / "export" / "x86-cpu" / "manifest.json"
    m = json.loads(manifest.read_text())
    assert m["status"] == "failed"
    assert [v["status"] for v in m["variants"]] == ["failed"]
    assert m["variants"][0]["parity"]["passed"] is False
    assert not (run / "export" / "x86-cpu" / "build_engine.sh").exists()  # onnxruntime target: no TensorRT scripts
    # Through the CLI, --overwrite replaces the export with the new (again failed) one and exits 1.
    code, err = run_cli(["export", str(run), "--target", "x86-cpu", "--overwrite", "--parity-images", "8", "--probe-images", "100"],
                        monkeypatch, capsys)
    assert code == 1
    assert "failed its checks" in err and "model.onnx" in err and err.strip().count("\n") == 0
    m2 = json.loads(manifest.read_text())
    assert m2["status"] == "failed" and m2["variants"][0]["parity"]["images"] == 8  # the new export, not the old (16)


def test_package_level_api_stays_callable(run_dir):
    import leapkit
    import leapkit.export  # binds leapkit.export to the submodule

    assert leapkit.export.export is ex.export
    with pytest.raises(ConfigError, match="unknown target 'nope'"):
        leapkit.export(run_dir, target="nope")


def test_export_at_another_input_size(tmp_path, monkeypatch):
    """A profile/--input-size resolution other than the training one: pos_embed resampled in PyTorch."""
    run = make_run(tmp_path / "run", seed=2)
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    result = ex.export(run, target="x86-cpu", precision="fp32", input_size=24, **SMALL)
    m = result.manifest
    assert m["input"]["shape"] == ["batch", 3, 24, 24]
    assert m["student"]["trained_img_size"] == 32 and m["student"]["num_patches"] == 36
    assert [o["shape"] for o in m["outputs"]][2] == ["batch", 36, 32]
    assert result.passed and result.variants[0].parity["cosine_min"] >= 0.9999


def test_cli_success_prints_table_and_what_was_not_run(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run", seed=3)
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["leapkit", "export", str(run), "--target", "jetson", "-p", "fp32", "--parity-images", "8",
                                      "--probe-images", "100"])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "model.onnx" in out and "ok" in out
    if not HAS_TRT:
        assert "pip install 'leapkit[trt]'" in out  # rich markup must not eat the extra's brackets
    assert (run / "export" / "latest").resolve() == (run / "export" / "jetson-orin-nano").resolve()


def _matmul_inputs(model: onnx.ModelProto) -> list[tuple[str, list[bool], list[bool]]]:
    """Per MatMul: its name, whether each input comes from a DequantizeLinear, and whether each is a weight."""
    inits = {t.name for t in model.graph.initializer}
    dq = {o: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [
        (n.name, [i in dq for i in n.input], [i in inits or dq.get(i) in inits for i in n.input])
        for n in model.graph.node if n.op_type == "MatMul"
    ]


@pytest.fixture(scope="module")
def cpu_int8(run_dir) -> ex.ExportResult:
    """An INT8 export for the x86-cpu target (runtime onnxruntime)."""
    return ex.export(run_dir, target="x86-cpu", precision="int8", check=False, **SMALL)


def test_cpu_int8_quantizes_only_weight_matmuls(cpu_int8):
    out = cpu_int8.out_dir
    fp32 = onnx.load(str(out / "model.onnx"))
    inits = {t.name for t in fp32.graph.initializer}
    attention = {n.name for n in fp32.graph.node if n.op_type == "MatMul" and not inits & set(n.input)}
    assert len(attention) == 2 * 4  # q.k^T and attn.v in each of the 4 blocks
    matmuls = _matmul_inputs(onnx.load(str(out / "model_int8.onnx")))
    weight_ones = [(name, from_dq) for name, from_dq, is_weight in matmuls if any(is_weight)]
    float_ones = [(name, from_dq) for name, from_dq, is_weight in matmuls if not any(is_weight)]
    assert {name for name, _ in float_ones} == attention
    assert all(not any(from_dq) for _, from_dq in float_ones), "attention MatMuls must stay float"
    assert len(weight_ones) == 4 * 4 and all(all(from_dq) for _, from_dq in weight_ones)
    # Softmax between the float products stays float too (no QLinearSoftmax fusion possible).
    model = onnx.load(str(out / "model_int8.onnx"))
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmax) == 4 and not any(i in dq_out for n in softmax for i in n.input)
    # uint8 activations, int8 weights: what ONNX Runtime's VNNI kernels take.
    q_types = {numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == n.input[2])).dtype
               for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    assert q_types == {np.dtype(np.uint8)}
    calib = json.loads((out / "manifest.json").read_text())["calibration"]
    assert calib["runtime"] == "onnxruntime" and calib["layout"] == "weight-ops"
    assert calib["quantized_ops"] == {"Conv": 1, "MatMul": 16} and calib["float_ops"] == {"MatMul": 8}
    assert calib["activations"] == "uint8 asymmetric"
    (int8,) = [v for v in cpu_int8.variants if v.precision == "int8"]
    assert int8.parity["cosine_min"] >= ex.MIN_COSINE["int8"]


def test_tensorrt_int8_quantizes_every_matmul(exported):
    matmuls = _matmul_inputs(onnx.load(str(exported.out_dir / "model_int8.onnx")))
    assert len(matmuls) == 6 * 4
    assert all(all(from_dq) for _, from_dq, _ in matmuls), "TensorRT's layout puts Q/DQ on every MatMul"
    assert sum(not any(is_weight) for _, _, is_weight in matmuls) == 2 * 4
    calib = exported.manifest["calibration"]
    assert calib["runtime"] == "tensorrt" and calib["layout"] == "all-matmuls"
    assert calib["quantized_ops"] == {"Conv": 1, "MatMul": 24} and calib["float_ops"] == {}


def test_quantize_int8_unknown_runtime(tmp_path):
    with pytest.raises(ExportError, match="no INT8 layout for runtime 'tflite'; use one of onnxruntime, tensorrt"):
        ex.quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", np.zeros((1, 3, 32, 32), np.float32), runtime="tflite")


def test_activation_only_nodes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((4, 4), np.float32), "c")),
         helper.make_node("MatMul", ["x", "w"], ["a"], name="with_init"),
         helper.make_node("MatMul", ["a", "c"], ["b"], name="with_constant"),
         helper.make_node("Transpose", ["b"], ["bt"]),
         helper.make_node("MatMul", ["b", "bt"], ["y"], name="activations")],
        "g", [x], [y], [w])
    assert ex.activation_only_nodes(helper.make_model(graph)) == ["activations"]


def test_int8_falls_back_to_onnx_shape_inference(cpu_int8, tmp_path, monkeypatch, caplog):
    """When ORT's symbolic shape inference breaks on a graph (ORT 1.30 on torch 2.11's export raised
    an IndexError in _infer_Concat), quantization goes on with ONNX shape inference."""
    import onnxruntime.quantization.shape_inference as si

    real = si.quant_pre_process
    calls = []

    def symbolic_fails(src, dst, skip_symbolic_shape=False, **kw):
        calls.append(skip_symbolic_shape)
        if not skip_symbolic_shape:
            Path(dst).write_bytes(b"half-written")
            raise IndexError("list index out of range")
        return real(src, dst, skip_symbolic_shape=True, **kw)

    monkeypatch.setattr(si, "quant_pre_process", symbolic_fails)
    fp32 = cpu_int8.out_dir / "model.onnx"
    size = onnx.load(str(fp32)).graph.input[0].type.tensor_type.shape.dim[2].dim_value
    calib = np.random.default_rng(0).random((8, 3, size, size), dtype=np.float32)
    info = ex.quantize_int8(fp32, tmp_path / "model_int8.onnx", calib, runtime="onnxruntime")
    assert calls == [False, True]
    assert info["shape_inference"] == "onnx" and "symbolic shape inference failed" in caplog.text
    assert info["quantized_ops"] == {"Conv": 1, "MatMul": 16} and info["float_ops"] == {"MatMul": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.onnx"]  # no pre-processing leftovers
    onnx.checker.check_model(str(tmp_path / "model_int8.onnx"))


def test_tensorrt8_target_gets_opset_17(tmp_path):
    """A JetPack 5 device (TensorRT 8.6, whose parser documents opsets <= 17) gets an opset-17 graph."""
    from leapkit.profiles import targets_dir

    text = (targets_dir() / "jetson-orin-nano.yaml").read_text()
    text = text.replace("name: jetson-orin-nano", "name: jetson-orin-nano-jp5")
    text = "\n".join("tensorrt: \"8.6\"" if l.startswith("tensorrt:") else "jetpack: \"5.1.2\"" if l.startswith("jetpack:") else l
                     for l in text.splitlines())
    profile_path = tmp_path / "jetson-orin-nano-jp5.yaml"
    profile_path.write_text(text)
    assert ex.target_opset(load_target(str(profile_path))) == 17
    assert ex.target_opset(load_target("jetson-orin-nano")) == ex.OPSET == 18
    assert ex.target_opset(load_target("x86-cpu")) == ex.OPSET
    result = ex.export(make_run(tmp_path / "run"), target=str(profile_path), precision="fp32", check=False, **SMALL)
    model = onnx.load(str(result.out_dir / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert json.loads((result.out_dir / "manifest.json").read_text())["opset"] == 17
    assert "trtexec" in (result.out_dir / "build_engine.sh").read_text()
