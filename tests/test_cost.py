"""leapkit.latency.cost: FLOPs, weights and I/O from PyTorch and ONNX, and the latency lower bound.

The bound must never exceed a real latency: it is checked against published TensorRT measurements
of timm-style ViTs on the devices the profiles describe (the table below, each row cited).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch

from leapkit.latency.cost import ROOFLINE_KIND, Cost, onnx_cost, roofline, torch_cost
from leapkit.models import Backbone, create_student
from leapkit.profiles import load_target

NETSPRESSO = ("https://github.com/Nota-NetsPresso/netspresso-trainer/blob/5c321318baa45bc92b9f605ee14585a13f3722c4/"
              "docs/benchmarks/device_matrix/tensorrt.md")
IRCVLAB = ("https://github.com/IRCVLab/Depth-Anything-for-Jetson-Orin/blob/00691177d907f3f31384e5357c5dd88c2878196b/"
           "README.md")
SPACEWALK = ("https://github.com/spacewalk01/depth-anything-tensorrt/blob/013f54701cc039b22e73a420b01b7a449a7e9e6e/"
             "README.md")

# Published TensorRT latencies: (what was measured, timm model, input size, precision, profile, ms, source).
# The Depth-Anything figures time the whole depth model, whose backbone is the DINOv2 ViT named here:
# the bound of the backbone alone (a part of the model's work) is a bound of the whole.
PUBLISHED = [
    # "Jetson Orin Nano", JetPack 6.0, TensorRT FP16, ViT-tiny at 224x224 (3 classes): 3.11549 ms.
    ("ViT-tiny", "vit_tiny_patch16_224", 224, "fp16", "jetson-orin-nano", 3.11549, NETSPRESSO),
    # "Jetson Orin Developer Kit (8GB)", JetPack 5.1.3, TensorRT 8.5.2, engine built with the FP16 flag
    # (export.py): Depth-Anything-Small (DINOv2 ViT-S/14) at 308x308 23.5 ms, at 518x518 98.0 ms.
    ("Depth-Anything-Small", "vit_small_patch14_dinov2", 308, "fp16", "jetson-orin-nano", 23.5, IRCVLAB),
    ("Depth-Anything-Small", "vit_small_patch14_dinov2", 518, "fp16", "jetson-orin-nano", 98.0, IRCVLAB),
    # RTX 4090, TensorRT FP16, 518x518 (pre- and post-processing included): S 3 ms, B 6 ms, L 12 ms.
    ("Depth-Anything-S", "vit_small_patch14_dinov2", 518, "fp16", "rtx-4090", 3.0, SPACEWALK),
    ("Depth-Anything-B", "vit_base_patch14_dinov2", 518, "fp16", "rtx-4090", 6.0, SPACEWALK),
    pytest.param("Depth-Anything-L", "vit_large_patch14_dinov2", 518, "fp16", "rtx-4090", 12.0, SPACEWALK,
                 marks=pytest.mark.slow),
]


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


def test_onnx_cost_matches_torch_cost(student, onnx_file):
    t = torch_cost(student, 32, batch=2)
    o = onnx_cost(onnx_file, batch=2)
    # Matmuls dominate; elementwise ops are left out of the graph count.
    assert o.flops == pytest.approx(t.flops, rel=0.1)
    assert o.params == pytest.approx(t.params, rel=0.05)
    assert t.params == sum(p.numel() for p in student.parameters())
    # the input and the three outputs leapkit exports, counted from the model and from the graph alike
    tokens, cls, patches = Backbone(student)(torch.zeros(2, 3, 32, 32))
    assert t.io_elements == o.io_elements == 2 * 3 * 32 * 32 + tokens.numel() + cls.numel() + patches.numel()
    assert o.img_size == 32 and t.img_size == 32


def test_lower_bound_terms():
    x86 = load_target("x86-cpu")  # cache_mb 34, no fp16 peak
    r = roofline(Cost(flops=x86.peak_ops("fp32"), params=1e6, io_elements=0.0, source="test"), x86, "fp32")
    assert r.estimate_ms == pytest.approx(1000.0) and r.bound == "compute" and r.kind == ROOFLINE_KIND == "lower bound"
    # weights at the precision's width, less the cache: one second of bandwidth beyond the 34 MB
    params = (x86.memory_bandwidth_gbs * 1e9 + 34e6) / 4
    r = roofline(Cost(flops=1.0, params=params, io_elements=0.0, source="test"), x86, "fp32")
    assert r.memory_ms == pytest.approx(1000.0) and r.bound == "memory" and r.weight_bytes == pytest.approx(4 * params)
    int8 = roofline(Cost(flops=1.0, params=params, io_elements=0.0, source="test"), x86, "int8")
    assert int8.weight_bytes == pytest.approx(params) and int8.memory_ms < r.memory_ms / 4
    # a model that fits in the cache moves nothing
    assert roofline(Cost(flops=1.0, params=1e6, io_elements=1e6, source="t"), x86, "fp32").memory_ms == 0.0
    assert roofline(Cost(flops=1.0, params=1e6, io_elements=0.0, source="test"), x86, "fp16") is None
    assert roofline(Cost(flops=1.0, params=1e6, io_elements=0.0, source="test"), x86, "unknown") is None


def test_without_a_cache_size_the_bound_counts_compute_only():
    orin = replace(load_target("jetson-orin-nano"), cache_mb=None)
    r = roofline(Cost(flops=1e9, params=1e12, io_elements=1e9, source="test"), orin, "fp16")
    assert r.memory_ms is None and r.bytes == 0.0 and r.estimate_ms == r.compute_ms


def test_fp32_on_tensorrt_is_bounded_at_the_tf32_rate():
    """TensorRT runs fp32 layers as TF32 by default: the CUDA-core fp32 peak would overstate the bound 4x."""
    orin = load_target("jetson-orin-nano")
    cost = Cost(flops=1e12, params=0.0, io_elements=0.0, source="test")
    assert roofline(cost, orin, "fp32").compute_ms == pytest.approx(1e12 / (orin.tf32_tops * 1e12) * 1e3)
    assert orin.tf32_tops * 1e12 > orin.peak_ops("fp32")


def test_roofline_keys_are_those_bench_json_records():
    x86 = load_target("x86-cpu")
    r = roofline(Cost(flops=1e9, params=1e6, io_elements=1e6, source="test"), x86, "fp32")
    assert list(r.to_dict()) == ["kind", "estimate_ms", "compute_ms", "memory_ms", "bound", "flops", "bytes",
                                 "peak_tops", "memory_bandwidth_gbs", "flops_source", "weight_bytes", "io_bytes",
                                 "cache_mb"]


@pytest.mark.parametrize("what, name, img_size, precision, target, published_ms, source", PUBLISHED)
def test_the_bound_never_exceeds_a_published_measurement(what, name, img_size, precision, target, published_ms,
                                                         source):
    """The old roofline said 4.0 ms for ViT-Ti/16 on the Orin Nano, above the 3.12 ms measured there."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=0).eval()  # random weights
    cost = torch_cost(model, img_size, batch=1)
    bound = roofline(cost, load_target(target), precision)
    assert bound is not None and 0 < bound.estimate_ms <= published_ms, (what, bound, source)
    assert bound.memory_ms is not None  # both terms were counted
