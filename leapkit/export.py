"""Export a run's student for a target: ONNX (fp32, fp16, int8 Q/DQ), parity, accuracy, deploy bundle.

    leapkit.export.export(run, target="jetson") -> RUN/export/<target>/ and RUN/export/latest

The exported graph is the student backbone, at a fixed image size with a dynamic batch axis:

    images        (B, 3, H, W) float32, RGB scaled to [0, 1] then normalised with the manifest's mean/std
    tokens        (B, 1 + R + N, D) final-normalised tokens: CLS, R register tokens, N patch tokens
    cls           (B, D) the CLS token (tokens[:, 0]), what a linear or kNN head consumes
    patch_tokens  (B, N, D) the patch tokens in row-major grid order (tokens[:, 1 + R:]), for dense heads

These are ``forward_features`` of :func:`leapkit.run.load_student`'s model. The position embedding
is resolved for H x W before export (timm resamples it in PyTorch when the student is created at
that size), so the graph holds no Resize: DINOv2's bicubic antialiased interpolation does not export.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript). With torch 2.14 and timm
ViTs it gives a graph with static token/feature dimensions and one symbolic ``batch`` axis, keeps
LayerNormalization as one op, and drops the shape assertions that the TorchScript exporter turns
into Shape/Equal/Where chains (ViT-S/14 at 224 px: 527 nodes with static token dimensions,
against 1006 nodes with symbolic ones). It is slower: 21 s against 5 s for that model on 2 CPU
cores. The TorchScript exporter is deprecated since torch 2.9 and is only a fallback here when
torch.export cannot trace a model; the manifest's ``exporter`` says which one ran.

Every variant is checked with ONNX Runtime against the PyTorch student on real images (cosine and
max abs difference per output) and, on a labelled split, by the linear-probe accuracy of its CLS
features. A variant that misses its threshold is kept, marked ``failed`` in manifest.json, and the
export raises CheckFailed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import io
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from leapkit import callable_stage, tensorrt as trt_tools
from leapkit.errors import CheckFailed, DataError, ExportError, MissingDependency, RunError

if TYPE_CHECKING:
    import onnx
    from torch.utils.data import Dataset

    from leapkit.config import Config
    from leapkit.profiles import TargetProfile

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
Status = Literal["ok", "failed", "unchecked"]
CalibMethod = Literal["percentile", "minmax"]

PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
INPUT_NAME = "images"
OUTPUT_NAMES = ("tokens", "cls", "patch_tokens")
OPSET = 18  # >= 17 keeps LayerNormalization as one op; 18 is the dynamo exporter's native opset
# TensorRT 8.6's ONNX parser (JetPack 5) documents opsets up to 17; its targets get the graph converted
# down. The ViT's ops (LayerNormalization, Erf, Softmax, MatMul, ...) are the same in 17 and 18.
TRT8_OPSET = 17
MANIFEST = "manifest.json"
REFERENCE_INPUT = "reference_input.bin"
FILE_NAMES: dict[Precision, str] = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}

# Worst per-image cosine similarity to PyTorch a variant must reach, for every output.
MIN_COSINE: dict[Precision, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
# Largest linear-probe top-1 drop (percentage points) against the PyTorch student.
MAX_TOP1_DROP: dict[Precision, float] = {"fp32": 0.5, "fp16": 1.0, "int8": 3.0}
# Device-check tolerance floors (engines may use TF32 for fp32 and other kernels than ORT).
_TOL_FLOOR: dict[Precision, tuple[float, float]] = {"fp32": (1e-2, 5e-3), "fp16": (5e-2, 1e-2), "int8": (0.25, 0.05)}

# Ops kept in fp32 in the fp16 model: normalisations, softmax and the reductions/powers inside them.
FP32_OPS = frozenset({
    "LayerNormalization", "RMSNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "LpNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Pow",
    "Sqrt", "Reciprocal", "Exp", "Log",
})
# Ops that move data without arithmetic: they run in the type of their input instead of forcing fp16.
_NEUTRAL_OPS = frozenset({
    "Reshape", "Transpose", "Slice", "Gather", "GatherElements", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Identity", "Flatten", "Expand", "Tile", "Shape", "Size",
})
_INT8_OPS = ("MatMul", "Conv", "Gemm")


# --- results ------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One exported artefact and the evidence that it computes what the student computes."""

    precision: Precision
    format: Literal["onnx", "tensorrt"]
    file: str
    size_bytes: int = 0
    status: Status = "unchecked"
    checked_with: str | None = None
    parity: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ExportResult:
    """What :func:`export` produced; ``passed`` is False when any variant failed its checks."""

    target: str
    out_dir: Path
    variants: list[Variant]
    manifest: dict[str, Any]
    not_run: list[str]

    @property
    def passed(self) -> bool:
        return all(v.status != "failed" for v in self.variants)

    def failures(self) -> list[str]:
        return [f"{v.file} ({'; '.join(v.notes) or 'failed'})" for v in self.variants if v.status == "failed"]


# --- the graph ----------------------------------------------------------------------------------


class Backbone(nn.Module):
    """The student's ``forward_features`` with the three documented outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.model.forward_features(images)
        return tokens, tokens[:, 0], tokens[:, self.num_prefix_tokens:]


def patch_size(model: nn.Module) -> int:
    ph, pw = model.patch_embed.patch_size
    if ph != pw:
        raise ExportError(f"non-square patches {ph}x{pw} are not supported; export a model with square patches")
    return int(ph)


def check_input_size(size: int, patch: int, model_name: str) -> None:
    """Raise ExportError when the patch size does not divide ``size``."""
    if size % patch:
        lo, hi = size // patch * patch, (size // patch + 1) * patch
        raise ExportError(
            f"input size {size} is not divisible by the patch size {patch} of {model_name}; use {lo} or {hi} "
            f"(--input-size, or input_size in the target profile)"
        )


def target_opset(profile: "TargetProfile") -> int:
    """The opset to export for a target: TRT8_OPSET for TensorRT 8.x devices, else OPSET."""
    major = profile.tensorrt_major if profile.runtime == "tensorrt" else None
    return TRT8_OPSET if major is not None and major < 10 else OPSET


def export_onnx(model: nn.Module, path: Path, img_size: int, opset: int = OPSET) -> str:
    """Export ``Backbone(model)`` to ``path`` with a dynamic batch axis; returns the exporter used."""
    import warnings

    wrapper = Backbone(model).eval()
    example = torch.zeros(2, 3, img_size, img_size)  # batch 2: torch.export specialises sizes 0 and 1
    kwargs = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset)
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), external_data=False,
                verbose=False, **kwargs,
            )
        return f"torch.onnx.export(dynamo=True), torch {torch.__version__}"
    except Exception as e:  # torch.export raises many types; fall back once, loudly
        log.warning("torch.export could not trace the student (%s: %s); using the TorchScript exporter", type(e).__name__, str(e).splitlines()[0])
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, dynamic_axes=axes, do_constant_folding=True, **kwargs)
    return f"torch.onnx.export(dynamo=False), torch {torch.__version__}"


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_graph(path: Path, expect: dict[str, list[int | str]]) -> "onnx.ModelProto":
    """onnx.checker and strict shape inference; the outputs must have the expected shapes, no Resize.

    Returns the model with inferred shapes.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{path.name} failed the ONNX checker: {str(e).splitlines()[0]}") from e
    resize = [n.name or n.op_type for n in model.graph.node if n.op_type in ("Resize", "Upsample")]
    if resize:
        raise ExportError(
            f"{path.name} contains {len(resize)} Resize op(s): the position embedding was not fixed to the input size; "
            f"create the student with a fixed img_size (no dynamic_img_size)"
        )
    got = {o.name: _dims(o) for o in model.graph.output}
    for name, dims in expect.items():
        fixed = [d if isinstance(d, int) else "batch" for d in got.get(name, [])]
        if fixed != dims:
            raise ExportError(f"{path.name}: output {name} has shape {got.get(name)}, expected {dims}; the student is not a plain timm ViT")
    return model


def simplify(path: Path) -> None:
    """Simplify the graph in place with onnxslim (optional dependency)."""
    try:
        import onnxslim
    except ImportError as e:
        raise MissingDependency("onnxslim", "slim", "simplifying the ONNX graph (--slim)") from e
    import onnx

    slim = onnxslim.slim(onnx.load(str(path)))
    onnx.save(slim, str(path))


# --- fp16 ---------------------------------------------------------------------------------------


def convert_fp16(model: "onnx.ModelProto", keep_fp32: Iterable[str] = FP32_OPS) -> "onnx.ModelProto":
    """A mixed-precision copy of an fp32 graph: fp16 weights and arithmetic, fp32 where it matters.

    Graph inputs and outputs stay float32. Ops in ``keep_fp32`` (normalisations, softmax) run in
    fp32 with Casts around them; data-movement ops follow the type of their input, so the outputs
    of the final LayerNorm are sliced in fp32. Weights beyond fp16's range are clipped to +-65504.

    Args:
        model: an fp32 ONNX model without subgraphs.
        keep_fp32: op types that stay in fp32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    keep = frozenset(keep_fp32)
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
        clipped += int(np.count_nonzero(np.abs(arr) > 65504))
        return numpy_helper.from_array(np.clip(arr, -65504, 65504).astype(np.float16), name)

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

    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"fp16 conversion does not support {node.domain or 'onnx'}::{node.op_type} with subgraphs or custom domains")
        float_inputs = [i for i in node.input if i and elem.get(i) == FLOAT]
        if node.op_type in keep:
            mode = FLOAT
        elif node.op_type in _NEUTRAL_OPS:
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
                    raise ExportError("fp16 conversion: scalar Constant value_float is not supported; fold constants first")
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


# --- int8 ---------------------------------------------------------------------------------------


def _batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


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


Int8Layout = Literal["weight-ops", "all-matmuls"]

# The INT8 layout each runtime gets, and why (recorded in the manifest).
INT8_LAYOUTS: dict[str, dict[str, Any]] = {
    "onnxruntime": {
        "layout": "weight-ops", "activations": "uint8 asymmetric", "weights": "int8 symmetric per-channel",
        "why": (
            "ONNX Runtime's x86 kernels take uint8 activations with int8 weights (VNNI's u8 x s8 dot product). Only the "
            "MatMul/Gemm/Conv ops with a weight operand are quantized: attention's q.k^T and attn.v stay float, and with "
            "them the Softmax, which ONNX Runtime would otherwise fuse into a slower QLinearSoftmax (benchmarks/bench_latency.md)"
        ),
    },
    "tensorrt": {
        "layout": "all-matmuls", "activations": "int8 symmetric", "weights": "int8 symmetric per-channel",
        "why": (
            "TensorRT's explicit-precision path: symmetric int8 (zero point 0) Q/DQ on the inputs of every MatMul/Gemm/Conv, "
            "attention's included; TensorRT fuses the pairs into int8 kernels and keeps biases in float"
        ),
    },
}


def _name_nodes(path: Path) -> "onnx.ModelProto":
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


def activation_only_nodes(model: "onnx.ModelProto", op_types: Iterable[str] = _INT8_OPS) -> list[str]:
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


def quantize_int8(
    src: Path,
    dst: Path,
    calib_images: np.ndarray,
    method: CalibMethod = "percentile",
    batch_size: int = 8,
    runtime: str = "tensorrt",
) -> dict[str, Any]:
    """Static INT8 Q/DQ quantization with ONNX Runtime, in the layout the target's runtime runs fastest.

    - ``tensorrt``: symmetric int8 activations and weights (zero point 0, what TensorRT requires),
      per-channel weights, Q/DQ on the inputs of every MatMul/Conv/Gemm (TensorRT's explicit-precision path).
    - ``onnxruntime`` (CPU): uint8 asymmetric activations with int8 symmetric per-channel weights,
      and only the MatMul/Conv/Gemm ops that have a weight: the activation-by-activation MatMuls of
      attention (and the Softmax between them) stay fp32. On the CPU this was both faster and closer
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
        runtime: the target profile's runtime, ``tensorrt`` or ``onnxruntime``.

    Returns:
        The calibration settings and the layout (quantized and float nodes per op type), for the manifest.

    Raises:
        ExportError: ``runtime`` has no INT8 layout.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if runtime not in INT8_LAYOUTS:
        raise ExportError(f"no INT8 layout for runtime '{runtime}'; use one of {', '.join(INT8_LAYOUTS)}")
    layout = INT8_LAYOUTS[runtime]
    cpu = layout["layout"] == "weight-ops"

    class Reader(CalibrationDataReader):
        """Calibration batches; ONNX Runtime asks for one batch at a time (``set_range``), so that
        the calibrator's stored activations never exceed one batch."""

        def __init__(self) -> None:
            self.batches = list(_batches(calib_images, batch_size))
            self._it: Iterator[np.ndarray] = iter(self.batches)

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

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
                str(pre), str(dst), Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(_INT8_OPS),
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
        "images": int(len(calib_images)), "method": method, "format": "QDQ", "runtime": runtime, "layout": layout["layout"],
        "activations": layout["activations"], "weights": layout["weights"], "op_types": list(_INT8_OPS), "shape_inference": shape_inference,
        "quantized_ops": quantized, "float_ops": floating, "why": layout["why"],
        "tool": "onnxruntime.quantization.quantize_static",
    }


def int8_op_counts(model: "onnx.ModelProto", op_types: Iterable[str] = _INT8_OPS) -> tuple[dict[str, int], dict[str, int]]:
    """Count the ``op_types`` nodes of a Q/DQ graph that run in INT8 (every data input comes from a
    DequantizeLinear) and those that stay float (no input does).

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


# --- running and comparing ----------------------------------------------------------------------


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (the only execution provider leapkit relies on here)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def torch_runner(model: nn.Module) -> Runner:
    wrapper = Backbone(model).eval()

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outs = wrapper(torch.from_numpy(x))
        return {name: o.float().numpy() for name, o in zip(OUTPUT_NAMES, outs)}

    return run


def ort_runner(session: Any) -> Runner:
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})))

    return run


def run_batched(runner: Runner, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    parts = [runner(x) for x in _batches(images, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def compare(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: max and mean abs difference, worst and mean per-image cosine similarity."""
    out = {}
    for name, ref in reference.items():
        a = ref.reshape(len(ref), -1).astype(np.float64)
        b = got[name].reshape(len(ref), -1).astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        diff = np.abs(a - b)
        finite = bool(np.isfinite(b).all())
        out[name] = {
            "max_abs": float(diff.max()) if finite else float("inf"),
            "mean_abs": float(diff.mean()) if finite else float("inf"),
            "cosine_min": float(cos.min()) if finite else float("nan"),
            "cosine_mean": float(cos.mean()) if finite else float("nan"),
        }
    return out


def parity_verdict(stats: dict[str, dict[str, float]], precision: Precision, images: int, min_cosine: float | None = None) -> dict[str, Any]:
    threshold = MIN_COSINE[precision] if min_cosine is None else min_cosine
    worst = min(s["cosine_min"] for s in stats.values())
    passed = bool(np.isfinite(worst) and worst >= threshold)
    return {"images": images, "min_cosine_required": threshold, "cosine_min": worst, "passed": passed, "outputs": stats}


# --- data ---------------------------------------------------------------------------------------


@dataclass
class ExportData:
    """Real images for calibration and parity, and labelled splits for the probe when there are labels."""

    calib: "Dataset"
    parity: "Dataset"
    train: "Dataset | None"
    val: "Dataset | None"
    source: str
    no_labels: str | None = None


def export_data(cfg: "Config", img_size: int, mean: Sequence[float], std: Sequence[float]) -> ExportData:
    """The run's data at the export resolution (the embedded digits for demo runs)."""
    from leapkit.data import ImageFolderDataset, eval_transform, resolve_split
    from leapkit.evaluate import labelled_splits

    sized = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=img_size))
    source = "digits (embedded)" if cfg.data.source == "digits" else str(cfg.data.path)
    try:
        train, val = labelled_splits(sized)
        return ExportData(calib=train, parity=val, train=train, val=val, source=source)
    except DataError as e:
        if cfg.data.source != "folder" or not cfg.data.path or not Path(cfg.data.path).is_dir():
            raise DataError(f"the run's data is not available for calibration and parity ({e}); restore the data folder at {cfg.data.path}") from e
        tf = eval_transform(img_size, mean, std)
        root = Path(cfg.data.path)
        calib = ImageFolderDataset(resolve_split(root, "train"), tf)
        parity = ImageFolderDataset(resolve_split(root, "val"), tf)
        return ExportData(calib=calib, parity=parity, train=None, val=None, source=source, no_labels=str(e))


def spread_indices(n_items: int, count: int | None) -> list[int]:
    """``count`` indices spread evenly over ``range(n_items)`` (all of them when count is None)."""
    if count is None or count >= n_items:
        return list(range(n_items))
    return sorted({int(i) for i in np.linspace(0, n_items - 1, count).round()})


def image_batches(ds: "Dataset", count: int | None, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(B, 3, H, W) float32 images and (B,) labels over an even spread of ``count`` readable items."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    seen = 0
    for i in spread_indices(len(ds), count):
        item = ds[i]
        if item is None:  # unreadable image
            continue
        images.append(item[0].numpy().astype(np.float32))
        labels.append(int(item[1]))
        seen += 1
        if len(images) == batch_size:
            yield np.stack(images), np.asarray(labels)
            images, labels = [], []
    if images:
        yield np.stack(images), np.asarray(labels)
    if not seen:
        raise DataError("no readable images for the export checks; check the run's data folder")


def stack_images(ds: "Dataset", count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of :func:`image_batches` in one array (for small counts)."""
    parts = list(image_batches(ds, count))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --- accuracy -----------------------------------------------------------------------------------


def probe_accuracy(features: dict[str, tuple[np.ndarray, np.ndarray]], train_y: np.ndarray, val_y: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Linear-probe top-1/top-5 (percent) of each model's CLS features (name -> (train, val))."""
    from leapkit.evaluate import linear_probe

    ty, vy = torch.from_numpy(train_y).long(), torch.from_numpy(val_y).long()
    return {
        name: linear_probe(torch.from_numpy(tr).float(), ty, torch.from_numpy(va).float(), vy, seed=seed)
        for name, (tr, va) in features.items()
    }


# --- files --------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def resolve_precisions(requested: str | Sequence[str] | None, profile: "TargetProfile") -> list[Precision]:
    """The variants to export: fp32 (always, the base of the others) plus the requested ones.

    Raises:
        ExportError: a precision is unknown or not among those the target's runtime takes.
    """
    if requested is None:
        wanted = [profile.precision]
    else:
        wanted = [requested] if isinstance(requested, str) else list(requested)
        if "all" in wanted:
            wanted = list(profile.precisions)
    unknown = [p for p in wanted if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown precision '{unknown[0]}'; use fp32, fp16, int8 or all")
    refused = [p for p in wanted if p not in profile.precisions]
    if refused:
        raise ExportError(
            f"precision {refused[0]} is not available for target {profile.name} (runtime {profile.runtime} takes "
            f"{', '.join(profile.precisions)}); pick one of those or --precision all"
        )
    return [p for p in PRECISIONS if p == "fp32" or p in wanted]


@contextlib.contextmanager
def _quiet(names: Sequence[str] = ("onnx_ir", "onnxscript", "torch.onnx", "onnxruntime", "onnx")) -> Iterator[None]:
    """Silence the INFO chatter of the exporter and quantizer while they run."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the complete folder ``tmp``; the old one is removed only afterwards."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


# --- the export ---------------------------------------------------------------------------------


class _Steps:
    """Progress on the terminal (rich) and in the log."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self._progress = None

    def __enter__(self) -> "_Steps":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("export", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def step(self, text: str) -> None:
        log.debug(text)
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def done(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


def export(
    run: str | Path | None = None,
    target: "str | TargetProfile" = "x86-cpu",
    precision: str | Sequence[str] | None = None,
    overwrite: bool = False,
    *,
    calib_images: int = 256,
    calib_method: CalibMethod = "percentile",
    parity_images: int = 64,
    probe_images: int | None = 5000,
    batch: int | None = None,
    input_size: int | None = None,
    slim: bool = False,
    build_engine: bool | None = None,
    check: bool = True,
    progress: bool = False,
) -> ExportResult:
    """Export a run's student for a target and check every artefact against PyTorch.

    Writes ``RUN/export/<target>/`` (model.onnx and its fp16/int8 variants, manifest.json,
    README.md, the reference input, and for TensorRT targets build/bench/check scripts or, where
    TensorRT and a GPU exist, engines) and points ``RUN/export/latest`` at it. The folder is built
    aside and swapped in when complete, so an existing export survives a failed attempt.

    Args:
        run: the run directory (default ``runs/latest``).
        target: target profile name, family (``jetson``), YAML path or a loaded profile.
        precision: ``fp32``, ``fp16``, ``int8``, a list of them or ``all``; default: the profile's.
            fp32 is always exported: the other variants derive from it.
        overwrite: replace an existing export for this target.
        calib_images: training images for INT8 calibration.
        calib_method: how INT8 activation ranges are chosen (percentile or minmax).
        parity_images: validation images for the parity check.
        probe_images: cap on train images for the linear probe (val capped at half of it);
            None uses all of them.
        batch: the batch the engine is tuned for and accepts at most (default: the profile's).
        input_size: image size to export at (default: the profile's, else the run's).
        slim: simplify the fp32 graph with onnxslim before deriving the variants.
        build_engine: build TensorRT engines here; None builds them when TensorRT and a GPU exist
            and the target's runtime is TensorRT.
        check: raise CheckFailed when a variant fails its checks (after writing everything).
        progress: show a progress bar on stderr.

    Raises:
        ConfigError: unknown target.
        ExportError: a precision the target cannot take, an input size the patch size does not divide.
        RunError: no run, a run without weights, an existing export without ``overwrite``.
        CheckFailed: a variant failed parity or accuracy (only with ``check``).
    """
    from leapkit import __version__
    from leapkit.models import normalization
    from leapkit.models import create_student, load_weights
    from leapkit.profiles import load_target
    from leapkit.run import CONFIG, STUDENT, point_latest, read_run_config, resolve_run, write_json

    profile = load_target(target)
    precisions = resolve_precisions(precision, profile)
    run_dir = resolve_run(run, need=(CONFIG, STUDENT))
    cfg = read_run_config(run_dir)
    size = input_size or profile.resolve_input_size(cfg.model.img_size)
    batch_size = batch if batch is not None else profile.batch
    if batch_size < 1:
        raise ExportError(f"batch must be >= 1, got {batch_size}; pass --batch N")
    if calib_images < 1 or parity_images < 1:
        raise ExportError("--calib-images and --parity-images must be >= 1")
    batch_range = trt_tools.BatchRange(1, batch_size, batch_size)

    export_root = run_dir / "export"
    final = export_root / profile.name
    if final.exists() and not overwrite:
        raise RunError(f"{final} already exists; pass --overwrite to replace it (the old export stays until the new one is complete)")

    student = create_student(cfg.model.student, cfg.model.img_size)
    patch = patch_size(student)
    check_input_size(size, patch, cfg.model.student)
    if size != cfg.model.img_size:
        log.info("creating the student at %d px (trained at %d): position embeddings are resampled in PyTorch", size, cfg.model.img_size)
        student = create_student(cfg.model.student, size)
    load_weights(student, run_dir / STUDENT, role="student")
    student.eval()
    if getattr(student, "dynamic_img_size", False):
        raise ExportError(f"{cfg.model.student} was created with dynamic_img_size; export needs a fixed input size")

    if slim and importlib.util.find_spec("onnxslim") is None:
        raise MissingDependency("onnxslim", "slim", "simplifying the ONNX graph (--slim)")
    runtime_tensorrt = profile.runtime == "tensorrt"
    trt_reason = trt_tools.unavailable_reason() if runtime_tensorrt else None
    want_engine = runtime_tensorrt and (build_engine if build_engine is not None else trt_reason is None)
    if want_engine and trt_reason is not None:
        if trt_reason.startswith("the tensorrt package"):
            raise MissingDependency("tensorrt", "trt", "building a TensorRT engine (--build-engine)")
        raise ExportError(f"cannot build a TensorRT engine here: {trt_reason}; drop --build-engine to write the deploy bundle only")

    mean, std = normalization(cfg.model.teacher)
    threads = profile.threads
    dim = int(student.embed_dim)
    n_patches = (size // patch) ** 2
    expect = {"tokens": ["batch", int(student.num_prefix_tokens) + n_patches, dim], "cls": ["batch", dim], "patch_tokens": ["batch", n_patches, dim]}

    export_root.mkdir(parents=True, exist_ok=True)
    tmp = export_root / f".{profile.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    total = 5 + 2 * (len(precisions) - 1) + (2 * len(precisions) if want_engine else 0)
    try:
        with _Steps(total, progress) as steps, _quiet():
            result = _export_into(
                tmp, run_dir=run_dir, cfg=cfg, profile=profile, student=student, precisions=precisions, size=size, patch=patch,
                expect=expect, mean=mean, std=std, threads=threads, batch_range=batch_range, calib_images=calib_images,
                calib_method=calib_method, parity_images=parity_images, probe_images=probe_images, slim=slim,
                want_engine=want_engine, trt_reason=trt_reason, steps=steps, version=__version__,
            )
            write_json(tmp / MANIFEST, result.manifest)
            (tmp / MANIFEST).chmod(0o644)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, final)
    point_latest(final)
    result.out_dir = final
    log.info("export for %s written to %s", profile.name, final)
    if check and not result.passed:
        raise CheckFailed(f"export for {profile.name} failed its checks: {', '.join(result.failures())}; see {final / MANIFEST}")
    return result


def _export_into(
    out: Path,
    *,
    run_dir: Path,
    cfg: "Config",
    profile: "TargetProfile",
    student: nn.Module,
    precisions: list[Precision],
    size: int,
    patch: int,
    expect: dict[str, list[int | str]],
    mean: Sequence[float],
    std: Sequence[float],
    threads: int | None,
    batch_range: trt_tools.BatchRange,
    calib_images: int,
    calib_method: CalibMethod,
    parity_images: int,
    probe_images: int | None,
    slim: bool,
    want_engine: bool,
    trt_reason: str | None,
    steps: _Steps,
    version: str,
) -> ExportResult:
    import onnx
    import onnxruntime as ort

    not_run: list[str] = []
    steps.step("exporting the fp32 ONNX graph")
    fp32_path = out / FILE_NAMES["fp32"]
    exporter = export_onnx(student, fp32_path, size, opset=target_opset(profile))
    if slim:
        simplify(fp32_path)
    check_graph(fp32_path, expect)
    steps.done()

    steps.step("loading parity and calibration images")
    data = export_data(cfg, size, mean, std)
    parity_x, _ = stack_images(data.parity, parity_images)
    torch_run = torch_runner(student)
    reference = run_batched(torch_run, parity_x)
    steps.done()

    variants: list[Variant] = []
    sessions: dict[Precision, Any] = {}
    calibration: dict[str, Any] | None = None
    checked_with = f"onnxruntime {ort.__version__} CPUExecutionProvider"
    for prec in precisions:
        path = out / FILE_NAMES[prec]
        if prec == "fp16":
            steps.step("converting to fp16 (normalisations and softmax kept in fp32)")
            onnx.save(convert_fp16(onnx.load(str(fp32_path))), str(path))
            check_graph(path, expect)
            steps.done()
        elif prec == "int8":
            steps.step(f"calibrating INT8 on {calib_images} training images")
            calib_x, _ = stack_images(data.calib, calib_images)
            calibration = {**quantize_int8(fp32_path, path, calib_x, method=calib_method, runtime=profile.runtime), "split": "train"}
            check_graph(path, expect)
            steps.done()
        steps.step(f"parity of {path.name} on {len(parity_x)} images")
        variant = Variant(precision=prec, format="onnx", file=path.name, size_bytes=path.stat().st_size, checked_with=checked_with)
        try:
            sessions[prec] = ort_session(path, threads)
        except Exception as e:  # ORT reports missing kernels as a generic runtime error
            variant.notes.append(f"ONNX Runtime's CPU provider cannot run it ({str(e).splitlines()[0][:160]}); parity not run")
            variant.checked_with = None
            not_run.append(f"parity of {path.name}: ONNX Runtime CPU could not load it")
        else:
            stats = compare(reference, run_batched(ort_runner(sessions[prec]), parity_x))
            variant.parity = parity_verdict(stats, prec, len(parity_x))
            variant.status = "ok" if variant.parity["passed"] else "failed"
            if not variant.parity["passed"]:
                variant.notes.append(f"parity: worst cosine {variant.parity['cosine_min']:.6f} < {MIN_COSINE[prec]}")
            if prec == "fp16":
                variant.notes.append(
                    "checked on ONNX Runtime's CPU provider, which has no fp16 kernels for this graph's arithmetic: it casts "
                    "to fp32 around each op and rounds the results to fp16, so parity covers fp16 storage, not TensorRT's fp16 kernels"
                )
        variants.append(variant)
        steps.done()

    steps.step("linear probe of the exported models")
    _accuracy(variants, sessions, torch_run, data, probe_images, seed=cfg.train.seed, not_run=not_run)
    steps.done()

    engines: list[dict[str, Any]] = []
    if profile.runtime == "tensorrt":
        if want_engine:
            engines = _build_engines(out, run_dir, variants, profile, size, batch_range, reference, parity_x, steps)
        else:
            not_run.append(f"TensorRT engine build and parity: {trt_reason}; build on the device with build_engine.sh")
            not_run.append(
                f"build_engine.sh, check_engine.sh and bench_engine.sh: generated for TensorRT {profile.tensorrt or '10.x'}, not executed here"
            )
            not_run.append("engine latency: time it on the device with bench_engine.sh or `leapkit bench`")

    steps.step("writing the bundle")
    ref_x = np.ascontiguousarray(parity_x[:1])  # a real image: int8 ranges are calibrated for real data
    ref_x.astype("<f4").tofile(out / REFERENCE_INPUT)
    ref_torch = torch_run(ref_x)
    ref_outputs = {name: {"shape": list(v.shape), "first": [float(f) for f in v.ravel()[:8]], "l2": float(np.linalg.norm(v))} for name, v in ref_torch.items()}
    tolerance = _tolerances(ref_torch, sessions, ref_x)
    if profile.runtime == "tensorrt":
        _write_scripts(out, variants, profile, size, batch_range, version)
    manifest = _manifest(
        out, run_dir=run_dir, cfg=cfg, profile=profile, student=student, size=size, patch=patch, expect=expect, mean=mean,
        std=std, batch_range=batch_range, exporter=exporter, variants=variants, engines=engines, calibration=calibration,
        data=data, ref_outputs=ref_outputs, tolerance=tolerance, not_run=not_run, version=version, slim=slim,
    )
    (out / "README.md").write_text(_readme(manifest, profile))
    manifest["files"] = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest["sizes"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file() and p.name != MANIFEST}
    steps.done()
    return ExportResult(target=profile.name, out_dir=out, variants=variants, manifest=manifest, not_run=not_run)


def _accuracy(
    variants: list[Variant],
    sessions: dict[Precision, Any],
    torch_run: Runner,
    data: ExportData,
    probe_images: int | None,
    seed: int,
    not_run: list[str],
) -> None:
    """Linear-probe accuracy of each ONNX variant's CLS features against the PyTorch student's."""
    if data.train is None or data.val is None:
        not_run.append(f"linear-probe accuracy: the run's data has no labels ({data.no_labels})")
        return
    val_cap = None if probe_images is None else max(probe_images // 2, 1)
    runners: dict[str, Runner] = {"pytorch": torch_run, **{p: ort_runner(s) for p, s in sessions.items()}}

    def cls_features(ds: "Dataset", count: int | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        feats: dict[str, list[np.ndarray]] = {name: [] for name in runners}
        labels = []
        for x, y in image_batches(ds, count):  # streamed: a large split never sits in memory as pixels
            for name, run in runners.items():
                feats[name].append(run(x)["cls"])
            labels.append(y)
        return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(labels)

    train_f, train_y = cls_features(data.train, probe_images)
    val_f, val_y = cls_features(data.val, val_cap)
    acc = probe_accuracy({name: (train_f[name], val_f[name]) for name in runners}, train_y, val_y, seed)
    ref = acc["pytorch"]
    for v in variants:
        if v.precision not in acc:
            continue
        got = acc[v.precision]
        drop = ref["top1"] - got["top1"]
        v.accuracy = {
            "metric": "linear_probe_top1", "top1": round(got["top1"], 3), "top5": round(got["top5"], 3),
            "pytorch_top1": round(ref["top1"], 3), "pytorch_top5": round(ref["top5"], 3), "drop_top1": round(drop, 3),
            "max_drop_top1": MAX_TOP1_DROP[v.precision], "n_train": int(len(train_y)), "n_val": int(len(val_y)), "features": "cls",
        }
        if drop > MAX_TOP1_DROP[v.precision]:
            v.status = "failed"
            v.notes.append(f"accuracy: top-1 {got['top1']:.2f}% is {drop:.2f} points below PyTorch's {ref['top1']:.2f}%")


def _tolerances(ref_torch: dict[str, np.ndarray], sessions: dict[Precision, Any], ref_x: np.ndarray) -> dict[str, dict[str, float]]:
    """Device-check tolerances: 4x what ONNX Runtime deviates on the reference input, with floors."""
    out = {}
    for prec, (floor_abs, floor_rel) in _TOL_FLOOR.items():
        worst_abs, worst_rel = 0.0, 0.0
        if prec in sessions:
            got = ort_runner(sessions[prec])(ref_x)
            for name, ref in ref_torch.items():
                worst_abs = max(worst_abs, float(np.abs(got[name].ravel()[:8] - ref.ravel()[:8]).max()))
                norm = float(np.linalg.norm(ref))
                worst_rel = max(worst_rel, abs(float(np.linalg.norm(got[name])) - norm) / max(norm, 1e-12))
        out[prec] = {"first_max_abs": round(max(4 * worst_abs, floor_abs), 6), "l2_rel": round(max(4 * worst_rel, floor_rel), 6)}
    return out


def _bundle_variants(variants: Sequence[Variant]) -> list[trt_tools.BundleVariant]:
    return [
        trt_tools.BundleVariant(precision=v.precision, onnx_file=v.file, engine_file=v.file.replace(".onnx", ".engine"))
        for v in variants if v.format == "onnx"
    ]


def _write_scripts(out: Path, variants: Sequence[Variant], profile: "TargetProfile", size: int, batch: trt_tools.BatchRange, version: str) -> None:
    bundle = _bundle_variants(variants)
    common = dict(target=profile.name, version=profile.tensorrt or "10.x", jetpack=profile.jetpack, input_name=INPUT_NAME, chw=(3, size, size),
                  default=profile.precision, leapkit_version=version)
    scripts = {
        "build_engine.sh": trt_tools.build_script(bundle, batch=batch, workspace_mb=profile.workspace_mb, **common),
        "bench_engine.sh": trt_tools.bench_script(bundle, batch=batch.opt, **common),
        "check_engine.sh": trt_tools.check_script(bundle, **common),
    }
    for name, text in scripts.items():
        (out / name).write_text(text)
        (out / name).chmod(0o755)
    (out / "check_outputs.py").write_text(trt_tools.CHECK_OUTPUTS_PY)


def _build_engines(
    out: Path,
    run_dir: Path,
    variants: list[Variant],
    profile: "TargetProfile",
    size: int,
    batch: trt_tools.BatchRange,
    reference: dict[str, np.ndarray],
    parity_x: np.ndarray,
    steps: _Steps,
) -> list[dict[str, Any]]:
    """Build an engine per ONNX variant on this machine's GPU and check its parity (untested here)."""
    cache = run_dir / "export" / trt_tools.timing_cache_name()
    engines = []
    for v in [v for v in variants if v.format == "onnx"]:
        steps.step(f"building the TensorRT engine for {v.file}")
        engine_file = v.file.replace(".onnx", ".engine")
        info = trt_tools.build_engine(
            out / v.file, out / engine_file, input_name=INPUT_NAME, chw=(3, size, size), batch=batch, precision=v.precision,
            workspace_mb=profile.workspace_mb, timing_cache=cache,
        )
        steps.done()
        steps.step(f"parity of {engine_file}")
        runner = trt_tools.EngineRunner(out / engine_file)
        stats = compare(reference, run_batched(runner, parity_x, batch.max))
        ev = Variant(
            precision=v.precision, format="tensorrt", file=engine_file, size_bytes=(out / engine_file).stat().st_size,
            checked_with=f"TensorRT {info.tensorrt_version} on {info.gpu}",
        )
        ev.parity = parity_verdict(stats, v.precision, len(parity_x))
        ev.status = "ok" if ev.parity["passed"] else "failed"
        ev.notes.append(f"built for {info.gpu} (compute {info.compute_capability}); rebuild on the target device with build_engine.sh")
        if not ev.parity["passed"]:
            ev.notes.append(f"parity: worst cosine {ev.parity['cosine_min']:.6f} < {MIN_COSINE[v.precision]}")
        variants.append(ev)
        engines.append(info.to_dict())
        steps.done()
    return engines


def _overall_status(variants: Sequence[Variant]) -> Status:
    statuses = {v.status for v in variants}
    return "failed" if "failed" in statuses else "unchecked" if "unchecked" in statuses else "ok"


def _manifest(
    out: Path,
    *,
    run_dir: Path,
    cfg: "Config",
    profile: "TargetProfile",
    student: nn.Module,
    size: int,
    patch: int,
    expect: dict[str, list[int | str]],
    mean: Sequence[float],
    std: Sequence[float],
    batch_range: trt_tools.BatchRange,
    exporter: str,
    variants: list[Variant],
    engines: list[dict[str, Any]],
    calibration: dict[str, Any] | None,
    data: ExportData,
    ref_outputs: dict[str, Any],
    tolerance: dict[str, Any],
    not_run: list[str],
    version: str,
    slim: bool,
) -> dict[str, Any]:
    import onnx

    prefix = int(student.num_prefix_tokens)
    descriptions = {
        "tokens": f"final-normalised tokens: CLS, {prefix - 1} register tokens, {expect['patch_tokens'][1]} patch tokens",
        "cls": "CLS token (tokens[:, 0]): global image embedding for linear/kNN heads",
        "patch_tokens": f"patch tokens (tokens[:, {prefix}:]) in row-major {size // patch}x{size // patch} grid order, for dense heads",
    }
    opsets = {v.file: max(o.version for o in onnx.load(str(out / v.file), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
              for v in variants if v.format == "onnx"}
    return {
        "format_version": 1,
        "leapkit_version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": _overall_status(variants),
        "source_run": str(run_dir),
        "target": {
            "name": profile.name, "family": profile.family, "runtime": profile.runtime, "precision": profile.precision,
            "tensorrt": profile.tensorrt, "jetpack": profile.jetpack, "latency_budget_ms": profile.latency_budget_ms,
        },
        "student": {
            "model": cfg.model.student, "trained_img_size": cfg.model.img_size, "img_size": size, "patch_size": patch,
            "embed_dim": int(student.embed_dim), "num_prefix_tokens": prefix, "num_patches": expect["patch_tokens"][1],
            "params": int(sum(p.numel() for p in student.parameters())),
        },
        "exporter": exporter + (", simplified with onnxslim" if slim else ""),
        "opset": opsets.get(FILE_NAMES["fp32"], OPSET),
        "opsets": opsets,
        "input": {
            "name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32", "layout": "NCHW",
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "preprocessing": "RGB scaled to [0, 1], then (x - mean) / std per channel",
        },
        "outputs": [{"name": n, "shape": expect[n], "dtype": "float32", "description": descriptions[n]} for n in OUTPUT_NAMES],
        "batch": dataclasses.asdict(batch_range),
        "variants": [v.to_dict() for v in variants],
        "engines": engines,
        "calibration": calibration,
        "parity_data": {"source": data.source, "split": "val"},
        "thresholds": {"min_cosine": MIN_COSINE, "max_top1_drop": MAX_TOP1_DROP},
        "reference": {
            "input": {"file": REFERENCE_INPUT, "shape": [1, 3, size, size], "dtype": "float32 little-endian",
                      "description": f"the first parity image (val split of {data.source}), already normalised"},
            "outputs": ref_outputs,
            "outputs_from": "the PyTorch student (fp32)",
            "tolerance": tolerance,
        },
        "not_run": not_run,
    }


def _readme(manifest: dict[str, Any], profile: "TargetProfile") -> str:
    inp = manifest["input"]
    size = inp["shape"][2]
    lines = [
        f"# {manifest['student']['model']} for {profile.name}",
        "",
        f"Exported by leapkit {manifest['leapkit_version']} from `{manifest['source_run']}` on {manifest['created']}.",
        f"Status: **{manifest['status']}** (details in manifest.json).",
        "",
        "## Model",
        f"- input `{inp['name']}`: float32 NCHW (batch, 3, {size}, {size}); RGB in [0, 1], normalised with mean {inp['mean']} and std {inp['std']}",
    ]
    lines += [f"- output `{o['name']}` {o['shape']}: {o['description']}" for o in manifest["outputs"]]
    lines += ["", "## Variants", "", "| file | precision | size | parity (worst cosine) | linear probe top-1 | status |", "| --- | --- | --- | --- | --- | --- |"]
    for v in manifest["variants"]:
        parity = f"{v['parity']['cosine_min']:.6f}" if v["parity"] else "not run"
        acc = f"{v['accuracy']['top1']:.2f}% (PyTorch {v['accuracy']['pytorch_top1']:.2f}%)" if v["accuracy"] else "not run"
        lines.append(f"| {v['file']} | {v['precision']} | {human_size(v['size_bytes'])} | {parity} | {acc} | {v['status']} |")
    lines.append("")
    if profile.runtime == "tensorrt":
        trt_version = profile.tensorrt or "10.x"
        lines += [
            "## On the device",
            f"Expected: TensorRT {trt_version}" + (f" (JetPack {profile.jetpack})" if profile.jetpack else "") + ". Engines do not move between GPUs or TensorRT versions, so build them there:",
            "",
            "```sh",
            f"./build_engine.sh {profile.precision}     # trtexec: ONNX -> model*.engine (timing cache in timing.cache)",
            f"./check_engine.sh {profile.precision}     # runs the engine on reference_input.bin, compares with manifest.json",
            f"./bench_engine.sh {profile.precision}     # latency with trtexec (GPU compute, CUDA graph, p50/p90/p99)",
            "```",
            "",
        ]
        if trt_tools.strongly_typed(trt_version):
            lines.append("The engines are strongly typed: each ONNX file's types set the precision (fp16 weights and "
                         "arithmetic with LayerNorm/softmax in fp32; int8 from the Q/DQ nodes, the rest fp32).")
        else:
            lines.append("TensorRT 8.6 is weakly typed: the fp16 and int8 scripts pass --fp16 / --int8 so that the builder may use them.")
        lines.append("")
    else:
        lines += [
            "## Running it",
            "```python",
            "import onnxruntime as ort",
            "session = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
            f"tokens, cls, patch_tokens = session.run(None, {{'{inp['name']}': images}})  # images: float32 (B, 3, {size}, {size})",
            "```",
            "",
        ]
    lines += ["## Not run when this bundle was made", ""]
    lines += [f"- {item}" for item in manifest["not_run"]] or ["- nothing: every check ran"]
    lines.append("")
    return "\n".join(lines)


# --- presentation -------------------------------------------------------------------------------


def summary_table(result: ExportResult) -> Any:
    """A rich table: format, precision, size, parity, accuracy and status per artefact."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"export for {result.target} -> {result.out_dir}"))
    for col, justify in (("file", "left"), ("format", "left"), ("precision", "left"), ("size", "right"),
                         ("parity (worst cos / max |diff|)", "right"), ("probe top-1 (PyTorch)", "right"), ("status", "left")):
        table.add_column(col, justify=justify)
    for v in result.variants:
        if v.parity:
            worst = max(s["max_abs"] for s in v.parity["outputs"].values())
            parity = f"{v.parity['cosine_min']:.6f} / {worst:.2g}"
        else:
            parity = "not run"
        acc = f"{v.accuracy['top1']:.2f}% ({v.accuracy['pytorch_top1']:.2f}%)" if v.accuracy else "-"
        style = {"ok": "green", "failed": "red"}.get(v.status, "yellow")
        table.add_row(escape(v.file), v.format, v.precision, human_size(v.size_bytes), parity, acc, f"[{style}]{v.status}[/{style}]")
    return table


callable_stage(__name__)  # `leapkit.export(...)` works after `import leapkit.export` too
