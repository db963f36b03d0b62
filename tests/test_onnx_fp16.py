"""leapkit.deploy.onnx_fp16: fp16 weights and arithmetic, fp32 inputs, outputs, normalisations and softmax."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from leapkit.deploy.onnx_fp16 import FP32_OPS, convert_fp16
from leapkit.deploy.onnx_graph import check_graph, export_onnx, output_shapes, quiet_exporters
from leapkit.deploy.parity import MIN_COSINE, compare
from leapkit.errors import ExportError
from leapkit.models import create_student
from leapkit.planning.shape import of_model
from leapkit.runtimes.ort_runner import OrtRunner


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def student_fp16(tmp_path_factory):
    torch.manual_seed(0)
    student = create_student("leapkit_demo_student", 32).eval()
    folder = tmp_path_factory.mktemp("fp16")
    with quiet_exporters():
        export_onnx(student, folder / "model.onnx", 32)
    onnx.save(convert_fp16(onnx.load(str(folder / "model.onnx"))), str(folder / "model_fp16.onnx"))
    check_graph(folder / "model_fp16.onnx", output_shapes(of_model(student, 32)))
    return folder


def test_fp16_keeps_normalisation_and_io_in_fp32(student_fp16):
    model = onnx.load(str(student_fp16 / "model_fp16.onnx"))
    inits = {t.name: t.data_type for t in model.graph.initializer}
    values = (*model.graph.value_info, *model.graph.input, *model.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update(inits)
    assert all(t.type.tensor_type.elem_type == TensorProto.FLOAT for t in (*model.graph.input, *model.graph.output))
    matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert matmul_weights and all(inits[w] == TensorProto.FLOAT16 for w in matmul_weights)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert node.op_type in FP32_OPS
            assert all(types[i] == TensorProto.FLOAT for i in node.input if i), node.name


def test_fp16_graph_matches_fp32(student_fp16):
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = OrtRunner(student_fp16 / "model.onnx", threads=1)(x)
    got = OrtRunner(student_fp16 / "model_fp16.onnx", threads=1)(x)
    assert min(s["cosine_min"] for s in compare(ref, got).values()) >= MIN_COSINE["fp16"]


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
    half = convert_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    types = {t.name: t.data_type for t in half.graph.initializer}
    assert types == {"w__fp16": TensorProto.FLOAT16, "b__fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT,
                     "g": TensorProto.FLOAT}
    x = np.random.default_rng(0).standard_normal((4, d)).astype(np.float32)
    ref = session(model).run(None, {"x": x})[0]
    got = session(half).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-2)


def test_convert_fp16_rejects_custom_domains():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    with pytest.raises(ExportError, match="fp16 conversion does not support com.microsoft::Gelu"):
        convert_fp16(model)
