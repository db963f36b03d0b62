"""leapkit.deploy.onnx_int8: Q/DQ layouts per runtime, op counts, ORT pre-processing fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import leapkit.deploy as deploy_pkg
from leapkit.data import DigitsDataset
from leapkit.deploy import onnx_int8 as q
from leapkit.deploy.export_data import stack_images
from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.deploy.parity import MIN_COSINE, compare
from leapkit.errors import ExportError
from leapkit.models import create_student
from leapkit.runtimes.base import run_batched
from leapkit.runtimes.ort_runner import OrtRunner
from leapkit.runtimes.torch_runner import TorchRunner

BLOCKS = 4  # the demo student's depth


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return create_student("leapkit_demo_student", 32).eval()


@pytest.fixture(scope="module")
def fp32(student, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("int8") / "model.onnx"
    with quiet_exporters():
        export_onnx(student, path, 32)
    return path


@pytest.fixture(scope="module")
def digits():
    """32 real calibration images (train) and 16 parity images (val)."""
    mean = std = (0.5, 0.5, 0.5)
    calib, _ = stack_images(DigitsDataset("train", 32, mean, std), 32)
    val, _ = stack_images(DigitsDataset("val", 32, mean, std), 16)
    return calib, val


@pytest.fixture(scope="module")
def quantized(fp32, digits) -> dict[str, tuple[Path, dict]]:
    """The fp32 graph quantized in each runtime's layout."""
    out = {}
    for runtime in ("onnxruntime", "tensorrt"):
        dst = fp32.with_name(f"model_int8_{runtime}.onnx")
        with quiet_exporters():
            out[runtime] = dst, q.quantize_int8(fp32, dst, digits[0], runtime=runtime)
    return out


def _matmul_inputs(model: onnx.ModelProto) -> list[tuple[str, list[bool], list[bool]]]:
    """Per MatMul: its name, whether each input comes from a DequantizeLinear, and whether each is a weight."""
    inits = {t.name for t in model.graph.initializer}
    dq = {o: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [
        (n.name, [i in dq for i in n.input], [i in inits or dq.get(i) in inits for i in n.input])
        for n in model.graph.node if n.op_type == "MatMul"
    ]


def _weighted_outputs_quantized(model: onnx.ModelProto) -> int:
    """How many MatMul/Conv outputs feed a QuantizeLinear (TensorRT cannot fuse those)."""
    q_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Conv", "Gemm") and n.output[0] in q_inputs)


def _input_types(model: onnx.ModelProto, op_type: str) -> set[int]:
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input)}
    return {elem[n.input[0]] for n in model.graph.node if n.op_type == op_type}


def test_tensorrt_layout_is_symmetric_qdq_on_weighted_op_inputs_only(quantized, student, digits):
    """The old TensorRT layout also quantized the output of every MatMul/Conv (58 QuantizeLinear nodes in the demo
    student, 25 of them on weighted-op outputs) and left everything else fp32."""
    path, info = quantized["tensorrt"]
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zero_points = [inits[n.input[2]] for n in dq if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert [n for n in dq if n.input[0] in inits and inits[n.input[1]].size > 1], "weights are quantized per channel"
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    matmuls = _matmul_inputs(model)
    assert len(matmuls) == 6 * BLOCKS
    assert all(all(from_dq) for _, from_dq, _ in matmuls), "TensorRT's layout puts Q/DQ on every MatMul input"
    assert sum(not any(is_weight) for _, _, is_weight in matmuls) == 2 * BLOCKS
    # None on their outputs: one Q per activation input of a MatMul/Conv (8 per block, the patch embedding's one).
    assert _weighted_outputs_quantized(model) == 0
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 8 * BLOCKS + 1
    # The rest is fp16 (opset 19: Q/DQ with fp16 scales), LayerNorm and Softmax fp32.
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == q.FP16_QDQ_OPSET
    assert _input_types(model, "MatMul") == {TensorProto.FLOAT16}
    assert _input_types(model, "Erf") == {TensorProto.FLOAT16}
    assert _input_types(model, "LayerNormalization") == {TensorProto.FLOAT}
    assert _input_types(model, "Softmax") == {TensorProto.FLOAT}
    # A LayerNorm's fp32 output is quantized as it is (no Cast to fp16 before its QuantizeLinear).
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    after_norm = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) ==
                  "LayerNormalization"]
    assert len(after_norm) == 2 * BLOCKS and {inits[n.input[1]].dtype for n in after_norm} == {np.dtype(np.float32)}
    facts = info["facts"]
    assert facts["quantized_outputs"] == 0 and facts["quantize_nodes"] == 8 * BLOCKS + 1
    assert facts["compute"]["LayerNormalization"] == {"fp32": 2 * BLOCKS + 1}
    assert facts["compute"]["Softmax"] == {"fp32": BLOCKS} and set(facts["compute"]["Add"]) == {"fp16"}
    assert info["runtime"] == "tensorrt" and info["layout"] == "tensorrt-fp16" and info["high_precision"] == "fp16"
    assert info["activations"] == "int8 symmetric"
    assert info["quantized_ops"] == {"Conv": 1, "MatMul": 24} and info["float_ops"] == {}
    assert info["images"] == 32 and info["method"] == "percentile" and info["format"] == "QDQ"
    # Calibrated on real digits, it stays close to the student on held-out digits.
    val = digits[1]
    stats = compare(run_batched(TorchRunner(student), val), run_batched(OrtRunner(path, threads=1), val))
    assert min(s["cosine_min"] for s in stats.values()) >= 0.999


def test_tensorrt_8_layout_keeps_opset_17_and_fp32(student, digits, tmp_path):
    """TensorRT 8.6's parser documents opsets up to 17: no fp16 Q/DQ there; the rest stays fp32 (built --fp16)."""
    src = tmp_path / "model.onnx"
    with quiet_exporters():
        export_onnx(student, src, 32, opset=17)
        info = q.quantize_int8(src, tmp_path / "model_int8.onnx", digits[0][:8], method="minmax",
                               runtime="tensorrt", tensorrt_major=8)
    model = onnx.load(str(tmp_path / "model_int8.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert info["layout"] == "tensorrt-fp32" and info["high_precision"] == "fp32"
    assert _input_types(model, "MatMul") == {TensorProto.FLOAT} and _weighted_outputs_quantized(model) == 0


def test_int8_layout_per_target():
    assert q.int8_layout("onnxruntime").name == q.int8_layout("openvino").name == "weight-ops"
    assert q.int8_layout("tensorrt", 10).name == "tensorrt-fp16" and q.int8_layout("tensorrt", None).opset == 19
    assert q.int8_layout("tensorrt", 8).name == "tensorrt-fp32" and q.int8_layout("tensorrt", 8).opset is None


def test_onnxruntime_layout_quantizes_only_weight_matmuls(fp32, quantized, student, digits):
    path, info = quantized["onnxruntime"]
    inits = {t.name for t in onnx.load(str(fp32)).graph.initializer}
    attention = {n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul" and not inits & set(n.input)}
    assert len(attention) == 2 * BLOCKS  # q.k^T and attn.v in each block
    model = onnx.load(str(path))
    matmuls = _matmul_inputs(model)
    weight_ones = [from_dq for _, from_dq, is_weight in matmuls if any(is_weight)]
    float_ones = [(name, from_dq) for name, from_dq, is_weight in matmuls if not any(is_weight)]
    assert {name for name, _ in float_ones} == attention
    assert all(not any(from_dq) for _, from_dq in float_ones), "attention MatMuls must stay float"
    assert len(weight_ones) == 4 * BLOCKS and all(all(from_dq) for from_dq in weight_ones)
    # Softmax between the float products stays float too (no QLinearSoftmax fusion possible).
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmax) == BLOCKS and not any(i in dq_out for n in softmax for i in n.input)
    # uint8 activations, int8 weights: what ONNX Runtime's VNNI kernels take.
    q_types = {numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == n.input[2])).dtype
               for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    assert q_types == {np.dtype(np.uint8)}
    assert info["layout"] == "weight-ops" and info["activations"] == "uint8 asymmetric"
    assert info["quantized_ops"] == {"Conv": 1, "MatMul": 16} and info["float_ops"] == {"MatMul": 8}
    # Calibrated on real digits, it stays close to the student on held-out digits.
    val = digits[1]
    stats = compare(run_batched(TorchRunner(student), val), run_batched(OrtRunner(path, threads=1), val))
    assert min(s["cosine_min"] for s in stats.values()) >= MIN_COSINE["int8"]


def test_quantize_int8_unknown_runtime(tmp_path):
    with pytest.raises(ExportError,
                       match="no INT8 layout for runtime 'tflite'; use one of onnxruntime, openvino, tensorrt"):
        q.quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", np.zeros((1, 3, 32, 32), np.float32),
                        runtime="tflite")


def test_layouts_are_typed_records():
    assert all(isinstance(layout, q.QdqLayout) for layout in q.INT8_LAYOUTS.values())
    assert q.INT8_LAYOUTS["weight-ops"].weight_ops_only and not q.INT8_LAYOUTS["tensorrt-fp16"].weight_ops_only
    # The dead `Int8Layout` alias of the former export module is gone from the deploy package.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(deploy_pkg.__path__):
        assert not hasattr(importlib.import_module(f"leapkit.deploy.{info.name}"), "Int8Layout"), info.name


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
    assert q.activation_only_nodes(helper.make_model(graph)) == ["activations"]


def test_int8_falls_back_to_onnx_shape_inference(fp32, tmp_path, monkeypatch, caplog):
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
    calib = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    info = q.quantize_int8(fp32, tmp_path / "model_int8.onnx", calib, method="minmax", runtime="onnxruntime")
    assert calls == [False, True]
    assert info["shape_inference"] == "onnx" and "symbolic shape inference failed" in caplog.text
    assert info["method"] == "minmax"
    assert info["quantized_ops"] == {"Conv": 1, "MatMul": 16} and info["float_ops"] == {"MatMul": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.onnx"]  # no pre-processing leftovers
    onnx.checker.check_model(str(tmp_path / "model_int8.onnx"))
