"""The precision of an exported ONNX graph: what its file name says, else what its ops and weights say."""

from __future__ import annotations

import re
from pathlib import Path

from leapkit.errors import ModelError
from leapkit.types import PRECISIONS

# every way an ONNX graph computes in int8: Q/DQ pairs (static, as leapkit exports) and the integer ops
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger",
                           "DynamicQuantizeLinear"})


def precision_from_name(name: str) -> str | None:
    """fp32, fp16 or int8 when the file name says so (``model_int8.onnx``, ``model.fp16.engine``)."""
    for p in reversed(PRECISIONS):
        if re.search(rf"(^|[._-]){p}([._-]|$)", name):
            return p
    return None


def graph_precision(path: Path | str) -> str:
    """fp32, fp16 or int8: from the file name, else from the graph (quantized ops: int8; fp16 weights: fp16).

    Raises:
        ModelError: the file is not a valid ONNX model.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(
            f"{path} is not a valid ONNX file ({type(e).__name__}); re-export it with `leapkit export`"
        ) from e
    hint = precision_from_name(path.name)
    if hint:
        return hint
    if any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"
