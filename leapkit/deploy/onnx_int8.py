"""Static INT8 Q/DQ quantization with ONNX Runtime, in the layout each target runtime runs fastest.

    layout = int8_layout("tensorrt", tensorrt_major=10)
    with Int8Quantizer(model_onnx, layout) as q:
        ranges = q.calibrate(images, "entropy", cache)      # cached in the export folder
        info = q.quantize(model_int8_onnx, ranges, "entropy", exclude=nodes_of_moved_blocks)

The graph is pre-processed once (ONNX Runtime's shape inference and basic optimisations) and can
then be quantized as often as the INT8 fallback asks, each time from the same calibrated ranges.

ONNX Runtime's quantizer is the only one. NVIDIA ModelOpt's ONNX PTQ was tried for the TensorRT
layout (issue 12) and is not offered: with its defaults a ViT-S/14 fell to CLS cosine 0.47 (it fixes
every Softmax output range to [0, 1] and puts Q/DQ on LayerNorm and residual inputs), its ``[onnx]``
extra downgrades onnx and replaces onnxruntime with onnxruntime-gpu, it forces opset 19, and its
``nodes_to_exclude`` match as regex prefixes (excluding ``node_MatMul_61`` also excludes
``node_MatMul_616``), which the fallback's exclusions by node name cannot use. Tuned (MHA Q/DQ off,
LayerNorm and Add excluded) it reached 0.9983 against 0.9985 here.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from leapkit.deploy.int8_calibration import (
    CalibrationCache,
    CalibrationKey,
    Range,
    calibrate,
    graph_digest,
    images_digest,
)
from leapkit.errors import ExportError
from leapkit.types import CalibMethod, TargetRuntime

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INT8_OPS = ("MatMul", "Conv", "Gemm")
# Q/DQ with fp16 inputs and scales: opset 19 (ONNX 1.14). TensorRT's parser reads it from 9.0 on (it
# updated its ONNX to 1.14 and added FP8/BF16 Q/DQ there); 8.6 documents opsets up to 17.
FP16_QDQ_OPSET = 19


@dataclass(frozen=True)
class QdqLayout:
    """Where Q/DQ pairs go, with which types, and what runs between them (the manifest's ``calibration``).

    Args:
        name: the layout's name in the manifest.
        activations: activation quantization, in words.
        weights: weight quantization, in words.
        high_precision: the type of everything outside the Q/DQ pairs (LayerNorm and Softmax stay fp32).
        symmetric: int8 activations with zero point 0 (TensorRT) rather than asymmetric uint8 (x86 VNNI).
        weight_ops_only: only ops with a weight operand are quantized (attention's products stay float).
        why: why this runtime gets this layout.
    """

    name: str
    activations: str
    weights: str
    high_precision: Literal["fp32", "fp16"]
    symmetric: bool
    weight_ops_only: bool
    why: str

    @property
    def opset(self) -> int | None:
        """The opset the int8 graph needs (None: the fp32 graph's)."""
        return FP16_QDQ_OPSET if self.high_precision == "fp16" else None


_TENSORRT_WHY = (
    "TensorRT's explicit-precision path: symmetric int8 (zero point 0) Q/DQ on the inputs of every MatMul/Gemm/Conv "
    "(weights per channel, attention's products included) and none on their outputs, which TensorRT cannot fuse "
    "(ONNX Runtime's quantizer says so for TensorRT: OpTypesToExcludeOutputQuantization); one Q/DQ pair per "
    "consumer (DedicatedQDQPair). "
)
INT8_LAYOUTS: dict[str, QdqLayout] = {
    "weight-ops": QdqLayout(
        "weight-ops", activations="uint8 asymmetric", weights="int8 symmetric per-channel", high_precision="fp32",
        symmetric=False, weight_ops_only=True,
        why=(
            "The x86 INT8 kernels of ONNX Runtime and OpenVINO take uint8 activations with int8 weights (VNNI's "
            "u8 x s8 dot product). Q/DQ sit on the inputs of the quantized ops, not on their outputs: ONNX "
            "Runtime then runs each as an integer product dequantized straight to float, with no requantize "
            "before the bias add: one rounding fewer per op (ViT-S/14 on x86-cpu, benchmarks/results/cpu_runtimes.md). "
            "Only the MatMul/Gemm/Conv ops with a weight operand are quantized: attention's q.k^T and attn.v stay "
            "float, and with them the Softmax, which ONNX Runtime would otherwise fuse into a slower QLinearSoftmax "
            "(benchmarks/bench_latency.md)"
        ),
    ),
    "tensorrt-fp16": QdqLayout(
        "tensorrt-fp16", activations="int8 symmetric", weights="int8 symmetric per-channel", high_precision="fp16",
        symmetric=True, weight_ops_only=False,
        why=_TENSORRT_WHY + (
            "Everything else is fp16 with LayerNorm and Softmax in fp32, as in the fp16 export, so that the strongly "
            f"typed engine runs no fp32 layers between the int8 ones (opset {FP16_QDQ_OPSET}: Q/DQ with fp16 scales)"
        ),
    ),
    "tensorrt-fp32": QdqLayout(
        "tensorrt-fp32", activations="int8 symmetric", weights="int8 symmetric per-channel", high_precision="fp32",
        symmetric=True, weight_ops_only=False,
        why=_TENSORRT_WHY + (
            "Everything else stays fp32 in the graph (opset 17, what TensorRT 8.6's parser documents): the engine is "
            "weakly typed and built with --int8 --fp16, so the builder may run it in fp16"
        ),
    ),
}


def int8_layout(runtime: TargetRuntime | str, tensorrt_major: int | None = None) -> QdqLayout:
    """The INT8 layout of a target: ONNX Runtime's, or TensorRT's for its major version (None: the newest).

    Raises:
        ExportError: ``runtime`` has no INT8 layout.
    """
    if runtime in ("onnxruntime", "openvino"):
        return INT8_LAYOUTS["weight-ops"]
    if runtime == "tensorrt":
        return INT8_LAYOUTS["tensorrt-fp32" if tensorrt_major is not None and tensorrt_major < 9 else "tensorrt-fp16"]
    raise ExportError(f"no INT8 layout for runtime '{runtime}'; use one of onnxruntime, openvino, tensorrt")


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


def layout_facts(model: onnx.ModelProto, op_types: Iterable[str] = INT8_OPS) -> dict[str, Any]:
    """What a Q/DQ graph holds: Q and DQ nodes, quantized op outputs, and the type each op type computes in.

    Returns:
        ``quantize_nodes``, ``dequantize_nodes``; ``quantized_outputs``: how many ``op_types`` nodes feed
        a QuantizeLinear (TensorRT cannot fuse those); ``compute``: op type -> {element type -> count},
        the type of each node's first float input (a DequantizeLinear output counts as its scale's type).
    """
    import onnx

    ops = frozenset(op_types)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    elem.update({t.name: t.data_type for t in model.graph.initializer})
    names = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    quantizers = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
    compute: dict[str, dict[str, int]] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "Constant", "Shape"):
            continue
        kinds = [names[elem[i]] for i in node.input if i and elem.get(i) in names]
        if kinds:
            per_type = compute.setdefault(node.op_type, {})
            per_type[kinds[0]] = per_type.get(kinds[0], 0) + 1
    return {
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
        "quantized_outputs": sum(1 for n in model.graph.node if n.op_type in ops and n.output[0] in quantizers),
        "compute": {op: compute[op] for op in sorted(compute)},
    }


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Remove opset imports of domains no node uses (ORT's pre-processing adds its own)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


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


class Int8Quantizer:
    """One fp32 graph, pre-processed once, calibrated once per method and quantized as often as asked.

    Use it as a context manager: the pre-processed copy beside ``src`` is removed on exit.

    Args:
        src: the fp32 ONNX model.
        layout: where the Q/DQ pairs go.
    """

    def __init__(self, src: Path, layout: QdqLayout) -> None:
        self.src, self.layout = Path(src), layout
        self.pre = self.src.with_name(f".{self.src.stem}.pre.onnx")
        self.shape_inference = _pre_process(self.src, self.pre)
        self.model = _name_nodes(self.pre)
        self.model_sha256 = graph_digest(self.src)
        # ORT's QDQ MatMul quantizer ignores MatMulConstBOnly, so the weightless products are excluded by name.
        self.kept_float = activation_only_nodes(self.model) if layout.weight_ops_only else []

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.pre.unlink(missing_ok=True)
        for stray in self.src.parent.glob(f".{self.src.stem}.pre*"):
            stray.unlink(missing_ok=True)

    def calibrate(
        self, images: np.ndarray, method: CalibMethod, cache: CalibrationCache | None = None, batch_size: int = 8
    ) -> tuple[dict[str, Range], bool]:
        """Activation ranges from ``images``, taken from ``cache`` when it has them (else added to it).

        Returns:
            The ranges, and whether they came from the cache.
        """
        import onnxruntime as ort

        key = CalibrationKey(self.model_sha256, method, len(images), images_digest(images), self.layout.name)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            log.info("INT8 ranges for %s (%s, %d images) read from the calibration cache", self.src.name, method,
                     len(images))
            return cached, True
        ranges = calibrate(self.pre, images, method, INT8_OPS, batch_size)
        if cache is not None:
            cache.put(key, ranges, tool=f"onnxruntime {ort.__version__} calibrator")
        return ranges, False

    def quantize(
        self, dst: Path, ranges: dict[str, Range], method: CalibMethod, exclude: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Write the Q/DQ graph to ``dst``, leaving the nodes named in ``exclude`` out of INT8.

        Returns:
            The layout and the ops quantized and kept float, for the manifest.
        """
        import onnx
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

        from leapkit.deploy.int8_calibration import tensors_data
        from leapkit.deploy.onnx_fp16 import NEUTRAL_OPS, convert_fp16

        layout = self.layout
        options: dict[str, Any] = {"QuantizeBias": False, "OpTypesToExcludeOutputQuantization": list(INT8_OPS)}
        if layout.symmetric:
            options |= {"ActivationSymmetric": True, "WeightSymmetric": True, "DedicatedQDQPair": True}
        quantizer = QDQQuantizer(
            onnx.load(str(self.pre)), True, False, QuantType.QInt8,
            QuantType.QInt8 if layout.symmetric else QuantType.QUInt8, tensors_data(ranges, method), [],
            [*self.kept_float, *exclude], list(INT8_OPS), options,
        )
        chatter = io.StringIO()
        with contextlib.redirect_stdout(chatter):
            quantizer.quantize_model()
        quantizer.model.topological_sort()  # Q/DQ nodes are appended; ONNX wants producers first
        model = quantizer.model.model
        _drop_unused_opsets(model)
        if layout.high_precision == "fp16":
            model = onnx.version_converter.convert_version(model, layout.opset)
            model = convert_fp16(model, follow_input=NEUTRAL_OPS | {"QuantizeLinear"})
        onnx.save(model, str(dst))
        quantized, floating = int8_op_counts(model)
        return {
            "format": "QDQ", "layout": layout.name, "activations": layout.activations, "weights": layout.weights,
            "high_precision": layout.high_precision, "op_types": list(INT8_OPS),
            "shape_inference": self.shape_inference, "quantized_ops": quantized, "float_ops": floating,
            "excluded_nodes": len(exclude), "facts": layout_facts(model), "why": layout.why,
            "tool": "onnxruntime.quantization QDQQuantizer",
        }


def quantize_int8(
    src: Path,
    dst: Path,
    calib_images: np.ndarray,
    method: CalibMethod = "percentile",
    batch_size: int = 8,
    runtime: TargetRuntime | str = "tensorrt",
    tensorrt_major: int | None = None,
) -> dict[str, Any]:
    """Calibrate and quantize in one call, in the layout of the target's runtime (no cache, nothing excluded).

    - ``tensorrt``: symmetric int8 Q/DQ on the inputs of every MatMul/Conv/Gemm and none on their
      outputs; per-channel weights; the rest fp16 (fp32 for TensorRT 8.x), LayerNorm and Softmax fp32.
    - ``onnxruntime`` (CPU): uint8 asymmetric activations with int8 symmetric per-channel weights,
      and only the MatMul/Conv/Gemm ops that have a weight; the rest fp32.

    Args:
        src: the fp32 ONNX model.
        dst: where the Q/DQ model goes.
        calib_images: (N, 3, H, W) float32 normalised calibration images.
        method: how activation ranges are chosen (:data:`leapkit.deploy.int8_calibration.METHOD_WHY`).
        batch_size: images per calibration batch.
        runtime: the target profile's runtime.
        tensorrt_major: the TensorRT major version of the target (None: the newest).

    Returns:
        The calibration settings and the layout, for the manifest.

    Raises:
        ExportError: ``runtime`` has no INT8 layout.
    """
    layout = int8_layout(runtime, tensorrt_major)
    with Int8Quantizer(src, layout) as quantizer:
        ranges, _ = quantizer.calibrate(calib_images, method, batch_size=batch_size)
        info = quantizer.quantize(dst, ranges, method)
    return {"images": int(len(calib_images)), "method": method, "runtime": runtime, **info}
