"""leapkit.latency.cost: FLOPs and bytes from PyTorch and from ONNX graphs, and the roofline estimate."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from leapkit.latency.cost import ROOFLINE_KIND, Cost, _peak_live_bytes, onnx_cost, roofline, torch_cost
from leapkit.macs import activation_bytes
from leapkit.models import create_student
from leapkit.profiles import load_target
from leapkit.runtimes import Backbone


@pytest.fixture(scope="module")
def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_student("leapkit_demo_student", 32).eval()


@pytest.fixture(scope="module")
def onnx_file(student, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(
        Backbone(student), torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=17,
        input_names=["images"], output_names=["tokens", "cls", "patch_tokens"], dynamic_axes={"images": {0: "batch"}},
    )
    return path


def test_onnx_cost_matches_torch_flops(student, onnx_file):
    t = torch_cost(student, 32, batch=2)
    o = onnx_cost(onnx_file, batch=2)
    # Matmuls dominate; elementwise ops are left out of the graph count.
    assert o.flops == pytest.approx(t.flops, rel=0.1)
    assert o.param_bytes == pytest.approx(t.param_bytes, rel=0.05)
    assert t.activation_bytes > 0 and o.activation_bytes > 0
    assert o.img_size == 32 and t.img_size == 32
    assert t.at("int8").param_bytes == pytest.approx(t.param_bytes / 4)
    assert t.at("fp16").activation_bytes == pytest.approx(t.activation_bytes / 2)


def test_activation_bytes_have_one_definition(student):
    """The roofline's activation bytes are leapkit.macs' peak activation memory, not a second counter."""
    assert torch_cost(student, 32, batch=2).activation_bytes == activation_bytes(student, 32, batch=2)


def test_onnx_activation_bytes_are_the_peak_of_live_tensors():
    # y = relu(x) + relu(relu(x)), every tensor 400 B
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["y"])],
        "chain", [helper.make_tensor_value_info("x", f, [100])], [helper.make_tensor_value_info("y", f, [100])],
    )
    sizes = {"x": 400, "a": 400, "b": 400, "y": 400}
    # x and a alive, then a and b (x freed after its last use), then a, b and y
    assert _peak_live_bytes(graph, sizes) == 1200
    onnx.checker.check_graph(graph)


def test_roofline_bounds():
    x86 = load_target("x86-cpu")
    compute = Cost(flops=x86.peak_ops("fp32"), param_bytes=1e6, activation_bytes=0.0, source="test")  # 1 s of peak fp32
    r = roofline(compute, x86, "fp32")
    assert r.estimate_ms == pytest.approx(1000.0) and r.bound == "compute" and r.kind == ROOFLINE_KIND
    memory = Cost(flops=1.0, param_bytes=x86.memory_bandwidth_gbs * 1e9, activation_bytes=0.0, source="test")
    r = roofline(memory, x86, "fp32")  # 1 s of bandwidth
    assert r.estimate_ms == pytest.approx(1000.0) and r.bound == "memory"
    # live activations cross memory twice: written once, read once
    half = Cost(flops=1.0, param_bytes=0.0, activation_bytes=x86.memory_bandwidth_gbs * 1e9 / 2, source="test")
    assert roofline(half, x86, "fp32").memory_ms == pytest.approx(1000.0)
    assert roofline(compute, x86, "fp16") is None  # no FP16 peak on this CPU class


def test_roofline_keys_are_those_bench_json_records():
    x86 = load_target("x86-cpu")
    r = roofline(Cost(flops=1e9, param_bytes=1e6, activation_bytes=1e6, source="test"), x86, "fp32")
    assert list(r.to_dict()) == ["kind", "estimate_ms", "compute_ms", "memory_ms", "bound", "flops", "bytes",
                                 "peak_tops", "memory_bandwidth_gbs", "flops_source"]
