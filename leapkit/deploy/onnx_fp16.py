"""Mixed-precision fp16 copies of fp32 ONNX graphs: fp16 weights and arithmetic, fp32 where it matters."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from leapkit.errors import ExportError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Ops kept in fp32 in the fp16 model: normalisations, softmax and the reductions/powers inside them.
FP32_OPS = frozenset({
    "LayerNormalization", "RMSNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "LpNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Pow",
    "Sqrt", "Reciprocal", "Exp", "Log",
})
# Ops that move data without arithmetic: they run in the type of their input instead of forcing fp16.
NEUTRAL_OPS = frozenset({
    "Reshape", "Transpose", "Slice", "Gather", "GatherElements", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Identity", "Flatten", "Expand", "Tile", "Shape", "Size",
})
FP16_MAX = 65504


def convert_fp16(
    model: onnx.ModelProto, keep_fp32: Iterable[str] = FP32_OPS, follow_input: Iterable[str] = NEUTRAL_OPS
) -> onnx.ModelProto:
    """A mixed-precision copy of an fp32 graph: fp16 weights and arithmetic, fp32 where it matters.

    Graph inputs and outputs stay float32. Ops in ``keep_fp32`` (normalisations, softmax) run in
    fp32 with Casts around them; data-movement ops follow the type of their input, so the outputs
    of the final LayerNorm are sliced in fp32. Weights beyond fp16's range are clipped to +-65504.

    Args:
        model: an fp32 ONNX model without subgraphs.
        keep_fp32: op types that stay in fp32.
        follow_input: op types that run in the type of their input (data movement; a QuantizeLinear
            after an fp32 LayerNorm quantizes from fp32 without a Cast).

    Raises:
        ExportError: the graph has subgraphs, custom domains or scalar float Constants.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    keep, neutral = frozenset(keep_fp32), frozenset(follow_input)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    model = copy.deepcopy(model)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    inits = {t.name: t for t in graph.initializer}
    elem.update({name: t.data_type for name, t in inits.items()})

    current: dict[str, int] = {i.name: FLOAT for i in graph.input if elem.get(i.name) == FLOAT}
    half_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []
    clipped = 0

    def to_half(t: onnx.TensorProto, name: str) -> onnx.TensorProto:
        nonlocal clipped
        arr = numpy_helper.to_array(t)
        clipped += int(np.count_nonzero(np.abs(arr) > FP16_MAX))
        return numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), name)

    def typed(name: str, want: int) -> str:
        if name in inits and name not in current:
            if want == FLOAT:
                return name
            if name not in half_inits:
                half_inits[name] = f"{name}__fp16"
                graph.initializer.append(to_half(inits[name], half_inits[name]))
            return half_inits[name]
        if current.get(name, want) == want:
            return name
        if (name, want) not in casts:
            out = f"{name}__to_{'fp32' if want == FLOAT else 'fp16'}"
            nodes.append(helper.make_node("Cast", [name], [out], to=want, name=f"cast_{out}"))
            casts[(name, want)] = out
        return casts[(name, want)]

    subgraph = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or any(a.type in subgraph for a in node.attribute):
            raise ExportError(
                f"fp16 conversion does not support {node.domain or 'onnx'}::{node.op_type} "
                f"with subgraphs or custom domains"
            )
        float_inputs = [i for i in node.input if i and elem.get(i) == FLOAT]
        if node.op_type in keep:
            mode = FLOAT
        elif node.op_type in neutral:
            live = [current[i] for i in float_inputs if i in current]
            mode = FLOAT if live and all(t == FLOAT for t in live) else HALF
        else:
            mode = HALF
        for k, name in enumerate(node.input):
            if name and elem.get(name) == FLOAT:
                node.input[k] = typed(name, mode)
        if mode == HALF:
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
                elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(to_half(attr.t, attr.t.name))
                elif attr.type == onnx.AttributeProto.FLOAT and node.op_type == "Constant":
                    raise ExportError(
                        "fp16 conversion: scalar Constant value_float is not supported; fold constants first"
                    )
        for out in node.output:
            if out and elem.get(out) == FLOAT:
                current[out] = mode
        nodes.append(node)

    # Graph outputs keep float32: rename an fp16 producer and cast back under the original name.
    renames = {o.name: f"{o.name}__fp16" for o in graph.output if current.get(o.name) == HALF}
    for node in nodes:
        for seq in (node.input, node.output):
            for k, name in enumerate(seq):
                if name in renames:
                    seq[k] = renames[name]
    for orig, tmp in renames.items():
        nodes.append(helper.make_node("Cast", [tmp], [orig], to=FLOAT, name=f"cast_{orig}_out"))

    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    if clipped:
        log.warning("fp16 conversion clipped %d weight values to the fp16 range", clipped)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)
