"""leapkit.deploy.onnx_graph: the fp32 graph of the student, its checks and the facts describing it."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from leapkit.deploy import onnx_graph as g
from leapkit.errors import ExportError
from leapkit.models import create_student
from leapkit.planning.shape import of_model
from leapkit.profiles import load_target
from leapkit.runtimes.ort_runner import OrtRunner
from leapkit.runtimes.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return create_student("leapkit_demo_student", 32).eval()


@pytest.fixture(scope="module")
def fp32(student, tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    with g.quiet_exporters():
        exporter = g.export_onnx(student, path, 32)
    return path, exporter


def test_export_onnx_dynamo_graph(student, fp32):
    path, exporter = fp32
    assert exporter.startswith("torch.onnx.export(dynamo=True)")
    model = g.check_graph(path, g.output_shapes(of_model(student, 32)))
    ops = [n.op_type for n in model.graph.node]
    assert "Resize" not in ops
    assert ops.count("LayerNormalization") == 2 * 4 + 1  # two per block and the final norm
    assert g.default_opset(path) == g.OPSET
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got, ref = OrtRunner(path, threads=1)(x), TorchRunner(student)(x)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-4)


def test_export_onnx_falls_back_to_torchscript(student, tmp_path, monkeypatch, caplog):
    real = torch.onnx.export

    def no_dynamo(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("cannot trace\nmore")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    exporter = g.export_onnx(student, tmp_path / "m.onnx", 32, opset=17)
    assert exporter.startswith("torch.onnx.export(dynamo=False)")
    assert "torch.export could not trace the student (RuntimeError: cannot trace)" in caplog.text
    g.check_graph(tmp_path / "m.onnx", g.output_shapes(of_model(student, 32)))


def test_graph_shapes(student):
    shape = of_model(student, 24)
    assert (shape.patch_size, shape.grid, shape.patches, shape.prefix_tokens) == (4, 6, 36, 1)
    assert g.input_shape(shape) == ["batch", 3, 24, 24]
    assert g.output_shapes(shape) == {
        "tokens": ["batch", 37, 32], "cls": ["batch", 32], "patch_tokens": ["batch", 36, 32]
    }
    assert "row-major 6x6 grid order" in g.output_descriptions(shape)["patch_tokens"]


def test_check_graph_rejects_wrong_shapes_and_resize(fp32, tmp_path):
    path, _ = fp32
    message = r"model.onnx: output cls has shape \['batch', 32\], expected \['batch', 16\]"
    with pytest.raises(ExportError, match=message):
        g.check_graph(path, {"cls": ["batch", 16]})
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph([helper.make_node("Resize", ["x", "", "scales"], ["y"])], "g", [x], [y], [scales])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), tmp_path / "r.onnx")
    with pytest.raises(ExportError, match="r.onnx contains 1 Resize op"):
        g.check_graph(tmp_path / "r.onnx", {})


def test_input_size_and_patch_checks():
    with pytest.raises(ExportError, match="input size 30 is not divisible by the patch size 4 of s; use 28 or 32"):
        g.check_input_size(30, 4, "s")
    g.check_input_size(32, 4, "s")
    with pytest.raises(ExportError, match="non-square patches 4x8 are not supported"):
        g.patch_size(SimpleNamespace(patch_embed=SimpleNamespace(patch_size=(4, 8))))


def test_target_opset(tmp_path):
    from leapkit.profiles import targets_dir

    text = (targets_dir() / "jetson-orin-nano.yaml").read_text().replace("name: jetson-orin-nano", "name: jp5")
    text = "\n".join('tensorrt: "8.6"' if line.startswith("tensorrt:") else line for line in text.splitlines())
    (tmp_path / "jp5.yaml").write_text(text)
    assert g.target_opset(load_target(str(tmp_path / "jp5.yaml"))) == g.TRT8_OPSET == 17
    assert g.target_opset(load_target("jetson-orin-nano")) == g.OPSET == 18
    assert g.target_opset(load_target("x86-cpu")) == g.OPSET


def test_quiet_exporters_restores_levels():
    lg = logging.getLogger("onnxscript")
    lg.setLevel(logging.DEBUG)
    with g.quiet_exporters():
        assert lg.level == logging.WARNING
    assert lg.level == logging.DEBUG
    lg.setLevel(logging.NOTSET)
