"""What one inference costs (FLOPs, weight and activation bytes) and the roofline estimate built on it.

The roofline is an *estimate* for the target, never a measurement: max(FLOPs / peak dense
throughput, bytes / memory bandwidth) from the target profile. It needs no device.

Activation bytes have one definition across leapkit, :func:`leapkit.macs.activation_bytes`: the
peak memory of the tensors alive during one forward, input included, weights excluded. For a
PyTorch model it is measured by that function; for an ONNX file it is the same peak over the
graph's tensors in node order (each alive from its producer to its last consumer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.records import Record
from leapkit.types import BYTES_PER_ELEMENT

if TYPE_CHECKING:
    from onnx import GraphProto
    from torch import nn

    from leapkit.profiles import TargetProfile

ROOFLINE_KIND = "estimate (roofline lower bound)"
ROOFLINE_FORMULA = (
    "max(FLOPs / peak dense throughput, bytes / memory bandwidth) from the target profile, with every weight "
    "crossing memory once and the peak of live activations written and read once (caches ignored)"
)
ROOFLINE_NOTE = f"roofline figures are estimates, not measurements: {ROOFLINE_FORMULA}"


@dataclass
class Cost:
    """What one inference costs: FLOPs (2 x MACs) and the bytes of weights and activations.

    Args:
        flops: FLOPs of one inference of the whole batch.
        param_bytes: bytes of the weights.
        activation_bytes: peak bytes of live activations (see the module docstring).
        source: what counted the FLOPs.
        img_size: the input resolution the figures are for.
    """

    flops: float
    param_bytes: float
    activation_bytes: float
    source: str
    img_size: int | None = None

    def at(self, precision: str) -> Cost:
        """The same model with weights and activations stored at ``precision`` (fp32 counts scaled)."""
        scale = BYTES_PER_ELEMENT.get(precision, 4) / 4
        return Cost(self.flops, self.param_bytes * scale, self.activation_bytes * scale, self.source, self.img_size)


def torch_cost(model: nn.Module, img_size: int, batch: int = 1) -> Cost:
    """FLOPs and fp32 bytes of one ``forward_features`` of ``model``, counted by :mod:`leapkit.macs`.

    Args:
        model: a timm ViT.
        img_size: input resolution.
        batch: images per inference.
    """
    from leapkit.macs import model_flops

    counted = model_flops(model, img_size, batch, memory=True)
    params = sum(p.numel() * 4 for p in model.parameters())
    return Cost(float(counted["flops"]), float(params), float(counted["activation_bytes"]), "leapkit.macs.model_flops",
                img_size)


def onnx_cost(path: Path, batch: int = 1) -> Cost:
    """FLOPs of MatMul/Gemm/Conv nodes (2 x MACs), the bytes of initializers, the peak of live activations.

    Shapes come from ONNX shape inference with the batch fixed; elementwise ops are not counted
    (a few percent of a ViT's FLOPs).

    Args:
        path: the ONNX file (external data next to it is read too).
        batch: the batch to fix a free batch dimension to.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    m = onnx.load(str(path), load_external_data=True)
    inits = {t.name: t for t in m.graph.initializer}
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    m = shape_inference.infer_shapes(m, data_prop=True)  # propagates Shape->Reshape values
    elem = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
            onnx.TensorProto.INT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.BFLOAT16: 2}
    shapes: dict[str, list[int]] = {}
    nbytes: dict[str, int] = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        t = vi.type.tensor_type
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        if vi.name not in inits:
            nbytes[vi.name] = math.prod(shapes[vi.name]) * elem.get(t.elem_type, 4)
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    flops = 0.0
    for node in m.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or 0 in out:
            continue
        if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a = shapes.get(node.input[0])
            if a:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a and len(a) >= 2 else a[-1]
                flops += 2.0 * math.prod(out) * k
        elif node.op_type in ("Conv", "QLinearConv"):
            w = shapes.get(node.input[1 if node.op_type == "Conv" else 3])
            if w:
                flops += 2.0 * math.prod(out) * math.prod(w[1:])
    params = sum(numpy_helper.to_array(t).nbytes for t in inits.values())
    size = next((d[-1] for d in (shapes.get(i.name) for i in m.graph.input) if d and len(d) == 4), None)
    return Cost(flops, float(params), float(_peak_live_bytes(m.graph, nbytes)), "onnx graph (MatMul/Gemm/Conv)", size)


def _peak_live_bytes(graph: GraphProto, nbytes: dict[str, int]) -> int:
    """Peak bytes of activations alive at once when the (topologically sorted) nodes run in order.

    A graph input is alive from the start, a node's output from that node; each stays alive until
    its last consumer has run, the graph's outputs until the end.
    """
    nodes = list(graph.node)
    last_use = {name: len(nodes) for name in (o.name for o in graph.output)}
    for i, node in enumerate(nodes):
        for name in node.input:
            last_use[name] = max(last_use.get(name, i), i)
    free_after: dict[int, list[str]] = {}
    for name, i in last_use.items():
        free_after.setdefault(i, []).append(name)
    live = sum(nbytes.get(i.name, 0) for i in graph.input)
    peak = live
    for i, node in enumerate(nodes):
        live += sum(nbytes.get(o, 0) for o in node.output)
        peak = max(peak, live)
        live -= sum(nbytes.get(name, 0) for name in free_after.get(i, []))
    return peak


@dataclass
class Roofline(Record):
    """A lower-bound latency estimate on a target at one precision (see :func:`roofline`)."""

    kind: str
    estimate_ms: float
    compute_ms: float
    memory_ms: float
    bound: str  # "compute" or "memory"
    flops: float
    bytes: float
    peak_tops: float | None
    memory_bandwidth_gbs: float
    flops_source: str


def roofline(cost: Cost, profile: TargetProfile, precision: str) -> Roofline | None:
    """Lower-bound latency on ``profile`` at ``precision``: max(FLOPs / peak, bytes / bandwidth).

    An estimate, not a measurement: it assumes peak clocks, perfect overlap of compute and memory
    traffic and no launch overheads. The bytes are every weight once and the peak of live
    activations written and read once.

    Args:
        cost: the model's cost, its bytes at ``precision`` already (see :meth:`Cost.at`).
        profile: the target.
        precision: the precision whose peak throughput applies.

    Returns:
        The estimate, or None when the profile has no peak for ``precision``.
    """
    peak = profile.peak_ops(precision) if precision in BYTES_PER_ELEMENT else None
    if not peak:
        return None
    compute_ms = cost.flops / peak * 1e3
    moved = cost.param_bytes + 2.0 * cost.activation_bytes
    memory_ms = moved / (profile.memory_bandwidth_gbs * 1e9) * 1e3
    return Roofline(
        kind=ROOFLINE_KIND,
        estimate_ms=max(compute_ms, memory_ms),
        compute_ms=compute_ms,
        memory_ms=memory_ms,
        bound="compute" if compute_ms >= memory_ms else "memory",
        flops=cost.flops,
        bytes=moved,
        peak_tops=profile.peak_tops.get(precision),
        memory_bandwidth_gbs=profile.memory_bandwidth_gbs,
        flops_source=cost.source,
    )
