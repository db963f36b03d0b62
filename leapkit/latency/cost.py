"""What one inference costs (FLOPs, weights, inputs and outputs) and the latency lower bound built on it.

The lower bound is a roofline that no engine can beat on the target, fused or not:

    latency >= max(FLOPs / peak at the precision, bytes / memory bandwidth)

- FLOPs are 2 x MACs of the model (:mod:`leapkit.macs`; an ONNX file's MatMul/Gemm/Conv nodes),
  and the peak is the fastest rate any kernel reaches at that precision
  (:meth:`TargetProfile.bound_ops`: fp32 layers may run as TF32 on TensorRT).
- bytes are what any engine must move: the weights at the precision's width (int8 1 byte, fp16 2,
  fp32 4), the input and the output, less what the target's on-chip cache could already hold
  (``cache_mb``; without it the memory term is left out). Intermediate activations are not
  counted: a fused engine may keep them on chip.

Launch overheads, clocks below peak, elementwise work and activations only add to a real latency,
so the bound is never above a measurement (tests/test_cost.py checks it against published figures).
It needs no device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from leapkit.records import Record
from leapkit.types import BYTES_PER_ELEMENT, Precision

if TYPE_CHECKING:
    from torch import nn

    from leapkit.profiles import TargetProfile

ROOFLINE_KIND = "lower bound"
ROOFLINE_FORMULA = (
    "max(FLOPs / peak at the precision, bytes / memory bandwidth) from the target profile, with bytes the weights "
    "at the precision's width plus the input and output, less the on-chip cache; activations, launch overheads and "
    "clocks below peak only add to a real latency"
)
ROOFLINE_NOTE = f"roofline figures are lower bounds for the target, not measurements: {ROOFLINE_FORMULA}"


@dataclass
class Cost:
    """What one inference of a batch costs: FLOPs (2 x MACs), weights, and input plus output elements.

    Args:
        flops: FLOPs of one inference of the whole batch.
        params: number of weights.
        io_elements: elements of the inputs and outputs of one inference of the whole batch.
        source: what counted the FLOPs.
        img_size: the input resolution the figures are for.
    """

    flops: float
    params: float
    io_elements: float
    source: str
    img_size: int | None = None


def _tokens(model: nn.Module, img_size: int) -> tuple[int, int, int]:
    """Tokens, prefix tokens and width of a timm ViT's ``forward_features`` at ``img_size``."""
    import torch

    try:
        patch = model.patch_embed.patch_size
        grid = (img_size // patch[0]) * (img_size // patch[1])
        prefix = int(model.num_prefix_tokens)
        return grid + prefix, prefix, int(model.embed_dim)
    except AttributeError:  # not a timm VisionTransformer: ask the model itself
        with torch.no_grad():
            p = next(model.parameters())
            out = model.forward_features(torch.zeros(1, 3, img_size, img_size, dtype=p.dtype, device=p.device))
        return out.shape[1], int(getattr(model, "num_prefix_tokens", 1)), out.shape[-1]


def torch_cost(model: nn.Module, img_size: int, batch: int = 1) -> Cost:
    """FLOPs, weights and input/output elements of one ``forward_features`` of ``model``.

    The outputs are those leapkit exports (:class:`leapkit.models.Backbone`): all tokens, the
    CLS token and the patch tokens.

    Args:
        model: a timm ViT (it may live on the meta device).
        img_size: input resolution.
        batch: images per inference.
    """
    from leapkit.macs import model_flops

    counted = model_flops(model, img_size, batch, memory=False)
    tokens, prefix, dim = _tokens(model, img_size)
    outputs = tokens * dim + dim + (tokens - prefix) * dim
    params = sum(p.numel() for p in model.parameters())
    return Cost(float(counted["flops"]), float(params), float(batch * (3 * img_size * img_size + outputs)),
                "leapkit.macs.model_flops", img_size)


def onnx_cost(path: Path, batch: int = 1) -> Cost:
    """FLOPs of MatMul/Gemm/Conv nodes (2 x MACs), the number of weights, and the graph's input/output elements.

    Shapes come from ONNX shape inference with the batch fixed; elementwise ops are not counted
    (a few percent of a ViT's FLOPs), which keeps a bound built on them a bound.

    Args:
        path: the ONNX file (external data next to it is read too).
        batch: the batch to fix a free batch dimension to.
    """
    import onnx
    from onnx import shape_inference

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in m.graph.initializer}
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    m = shape_inference.infer_shapes(m, data_prop=True)  # propagates Shape->Reshape values
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
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
    params = sum(math.prod(t.dims) for t in inits.values())
    graph_inputs = [i for i in m.graph.input if i.name not in inits]
    io = sum(math.prod(shapes.get(v.name) or [0]) for v in [*graph_inputs, *m.graph.output])
    size = next((d[-1] for d in (shapes.get(i.name) for i in graph_inputs) if d and len(d) == 4), None)
    return Cost(flops, float(params), float(io), "onnx graph (MatMul/Gemm/Conv)", size)


@dataclass
class Roofline(Record):
    """The latency lower bound on a target at one precision (see :func:`roofline`).

    ``estimate_ms`` is the bound; ``bytes`` what must cross memory (weights, input and output,
    less the cache); ``memory_ms`` is None when the profile gives no cache size.
    """

    kind: str
    estimate_ms: float
    compute_ms: float
    memory_ms: float | None
    bound: str  # "compute" or "memory"
    flops: float
    bytes: float
    peak_tops: float
    memory_bandwidth_gbs: float
    flops_source: str
    weight_bytes: float = 0.0
    io_bytes: float = 0.0
    cache_mb: float | None = None


def roofline(cost: Cost, profile: TargetProfile, precision: str) -> Roofline | None:
    """The lower bound of one inference on ``profile`` at ``precision`` (see the module docstring).

    Args:
        cost: the model's cost.
        profile: the target.
        precision: the precision of the weights and of the arithmetic.

    Returns:
        The bound, or None when the precision is unknown or the profile has no peak for it.
    """
    known = cast(Precision, precision)
    width = BYTES_PER_ELEMENT.get(known)
    peak = profile.bound_ops(known) if width else None
    if not width or not peak:
        return None
    compute_ms = cost.flops / peak * 1e3
    weight_bytes, io_bytes = cost.params * width, cost.io_elements * width
    moved, memory_ms = 0.0, None
    if profile.cache_mb is not None:
        moved = max(0.0, weight_bytes + io_bytes - profile.cache_mb * 1e6)
        memory_ms = moved / (profile.memory_bandwidth_gbs * 1e9) * 1e3
    return Roofline(
        kind=ROOFLINE_KIND,
        estimate_ms=max(compute_ms, memory_ms or 0.0),
        compute_ms=compute_ms,
        memory_ms=memory_ms,
        bound="memory" if memory_ms is not None and memory_ms > compute_ms else "compute",
        flops=cost.flops,
        bytes=moved,
        peak_tops=peak / 1e12,
        memory_bandwidth_gbs=profile.memory_bandwidth_gbs,
        flops_source=cost.source,
        weight_bytes=weight_bytes,
        io_bytes=io_bytes,
        cache_mb=profile.cache_mb,
    )
