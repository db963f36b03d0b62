"""Static INT8 Q/DQ quantization with ONNX Runtime, in the layout each target runtime runs fastest."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leapkit.errors import ExportError
from leapkit.runtimes import INPUT_NAME, batches
from leapkit.types import CalibMethod, TargetRuntime

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INT8_OPS = ("MatMul", "Conv", "Gemm")


@dataclass(frozen=True)
class QdqLayout:
    """Where Q/DQ pairs go and with which types (recorded in the manifest's ``calibration``)."""

    name: str
    activations: str
    weights: str
    why: str

    @property
    def weight_ops_only(self) -> bool:
        """Whether only ops with a weight operand are quantized (attention's products stay float)."""
        return self.name == "weight-ops"


# The INT8 layout each runtime gets, and why.
INT8_LAYOUTS: dict[TargetRuntime, QdqLayout] = {
    "onnxruntime": QdqLayout(
        "weight-ops", activations="uint8 asymmetric", weights="int8 symmetric per-channel",
        why=(
            "ONNX Runtime's x86 kernels take uint8 activations with int8 weights (VNNI's u8 x s8 dot product). "
            "Only the MatMul/Gemm/Conv ops with a weight operand are quantized: attention's q.k^T and attn.v stay "
            "float, and with them the Softmax, which ONNX Runtime would otherwise fuse into a slower QLinearSoftmax "
            "(benchmarks/bench_latency.md)"
        ),
    ),
    "tensorrt": QdqLayout(
        "all-matmuls", activations="int8 symmetric", weights="int8 symmetric per-channel",
        why=(
            "TensorRT's explicit-precision path: symmetric int8 (zero point 0) Q/DQ on the inputs of every "
            "MatMul/Gemm/Conv, attention's included; TensorRT fuses the pairs into int8 kernels and keeps biases "
            "in float"
        ),
    ),
}


def activation_only_nodes(model: onnx.ModelProto, op_types: Iterable[str] = INT8_OPS) -> list[str]:
    """Names of the ``op_types`` nodes none of whose data inputs is a weight.

    A weight is an initializer or the output of a Constant node. In a ViT these are attention's two
    batched products, q.k^T and attn.v; every projection, MLP layer and the patch embedding has one.

    Args:
        model: an ONNX model (top-level graph only).
        op_types: the op types to look at.
    """
    ops = frozenset(op_types)
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in ops and not any(i in constants for i in n.input[:2])]


def int8_op_counts(model: onnx.ModelProto, op_types: Iterable[str] = INT8_OPS) -> tuple[dict[str, int], dict[str, int]]:
    """Count the ``op_types`` nodes of a Q/DQ graph that run in INT8 and those that stay float.

    A node runs in INT8 when every data input comes from a DequantizeLinear, and stays float when none does.

    Returns:
        ``(quantized, float)``, each op type -> count (op types with no node are left out).
    """
    ops = frozenset(op_types)
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized: dict[str, int] = {}
    floating: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ops:
            continue
        data = [i for i in node.input[:2] if i]
        if all(i in dq_out for i in data):
            quantized[node.op_type] = quantized.get(node.op_type, 0) + 1
        elif not any(i in dq_out for i in data):
            floating[node.op_type] = floating.get(node.op_type, 0) + 1
    return quantized, floating


def _drop_unused_opsets(path: Path) -> None:
    """Remove opset imports of domains no node uses (ORT's pre-processing adds its own)."""
    import onnx

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
        onnx.save(model, str(path))


def _name_nodes(path: Path) -> onnx.ModelProto:
    """Give every unnamed node a unique name (exclusion lists go by name); saves ``path`` when it changed."""
    import onnx

    model = onnx.load(str(path))
    taken = {n.name for n in model.graph.node if n.name}
    changed = False
    for k, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{k}"
            while name in taken:
                name += "_"
            node.name, changed = name, True
            taken.add(name)
    if changed:
        onnx.save(model, str(path))
    return model


def _pre_process(src: Path, pre: Path) -> str:
    """ORT's quantization pre-processing; returns which shape inference it used.

    Symbolic shape inference first (it resolves the dynamic batch through Reshape and Concat); some
    ONNX Runtime releases fail on some exporters' graphs (seen: ORT 1.30 on torch 2.11's export, an
    IndexError in _infer_Concat), and then ONNX's own shape inference, which quantization needs no more
    than, is used instead.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        return "symbolic"
    except Exception as e:  # noqa: BLE001 - any failure inside ORT's symbolic inference
        log.warning("ONNX Runtime's symbolic shape inference failed (%s: %s); using ONNX shape inference",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        pre.unlink(missing_ok=True)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        return "onnx"


def _reader(images: np.ndarray, batch_size: int) -> Any:
    """Calibration batches for ``quantize_static``.

    ONNX Runtime asks for one batch at a time (``set_range``), so that the calibrator's stored
    activations never exceed one batch.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = batches(images, batch_size)
            self._it: Iterator[np.ndarray] = iter(self.batches)

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    return Reader()


def quantize_int8(
    src: Path,
    dst: Path,
    calib_images: np.ndarray,
    method: CalibMethod = "percentile",
    batch_size: int = 8,
    runtime: TargetRuntime = "tensorrt",
) -> dict[str, Any]:
    """Static INT8 Q/DQ quantization with ONNX Runtime, in the layout the target's runtime runs fastest.

    - ``tensorrt``: symmetric int8 activations and weights (zero point 0, what TensorRT requires),
      per-channel weights, Q/DQ on the inputs of every MatMul/Conv/Gemm (TensorRT's explicit-precision path).
    - ``onnxruntime`` (CPU): uint8 asymmetric activations with int8 symmetric per-channel weights,
      and only the MatMul/Conv/Gemm ops that have a weight: the activation-by-activation MatMuls of
      attention (and the Softmax between them) stay fp32. On the CPU this is both faster and closer
      to fp32 than quantizing every MatMul (benchmarks/bench_latency.md).

    Everything else stays fp32; biases stay float.

    Args:
        src: the fp32 ONNX model.
        dst: where the Q/DQ model goes.
        calib_images: (N, 3, H, W) float32 normalised calibration images.
        method: how activation ranges are chosen: ``percentile`` (99.999th percentile of the
            histogram) ignores rare outliers and keeps more resolution than ``minmax``, which
            clips any activation beyond the calibration images' extremes.
        batch_size: images per calibration batch.
        runtime: the target profile's runtime.

    Returns:
        The calibration settings and the layout (quantized and float nodes per op type), for the manifest.

    Raises:
        ExportError: ``runtime`` has no INT8 layout.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if runtime not in INT8_LAYOUTS:
        raise ExportError(f"no INT8 layout for runtime '{runtime}'; use one of {', '.join(INT8_LAYOUTS)}")
    layout = INT8_LAYOUTS[runtime]
    cpu = layout.weight_ops_only
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    pre = dst.with_name(f".{dst.stem}.pre.onnx")
    try:
        shape_inference = _pre_process(src, pre)
        # ORT's QDQ MatMul quantizer ignores MatMulConstBOnly, so the weightless products are excluded by name.
        kept_float = activation_only_nodes(_name_nodes(pre)) if cpu else []
        options: dict[str, Any] = {"QuantizeBias": False, "CalibStridedMinMax": 1}
        if not cpu:
            options |= {"ActivationSymmetric": True, "WeightSymmetric": True}
        chatter = io.StringIO()  # the histogram calibrators print progress to stdout
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                str(pre), str(dst), _reader(calib_images, batch_size),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(INT8_OPS),
                nodes_to_exclude=kept_float,
                calibrate_method=methods[method],
                extra_options=options,
            )
        if chatter.getvalue():
            log.debug(chatter.getvalue())
        _drop_unused_opsets(dst)
    finally:
        pre.unlink(missing_ok=True)
        for stray in dst.parent.glob(f".{dst.stem}.pre*"):
            stray.unlink(missing_ok=True)
    quantized, floating = int8_op_counts(onnx.load(str(dst)))
    return {
        "images": int(len(calib_images)), "method": method, "format": "QDQ", "runtime": runtime,
        "layout": layout.name, "activations": layout.activations, "weights": layout.weights,
        "op_types": list(INT8_OPS), "shape_inference": shape_inference, "quantized_ops": quantized,
        "float_ops": floating, "why": layout.why, "tool": "onnxruntime.quantization.quantize_static",
    }
