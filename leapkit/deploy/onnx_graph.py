"""The fp32 ONNX graph of a student backbone: export, checks and the facts that describe it.

The exported graph is the student backbone at a fixed image size with a dynamic batch axis:

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
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from leapkit.errors import ExportError, MissingDependency
from leapkit.models import Backbone
from leapkit.runtimes.base import INPUT_NAME, OUTPUT_NAMES
from leapkit.types import Precision

if TYPE_CHECKING:
    import onnx

    from leapkit.planning.shape import VitShape
    from leapkit.profiles import TargetProfile

log = logging.getLogger(__name__)

OPSET = 18  # >= 17 keeps LayerNormalization as one op; 18 is the dynamo exporter's native opset
# TensorRT 8.6's ONNX parser (JetPack 6.0) documents opsets up to 17; its targets get the graph converted
# down. The ViT's ops (LayerNormalization, Erf, Softmax, MatMul, ...) are the same in 17 and 18.
TRT8_OPSET = 17
FILE_NAMES: dict[Precision, str] = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}

Shape = list[int | str]
CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "onnxruntime", "onnx")


def input_shape(shape: VitShape) -> Shape:
    """The graph's input: a batch of RGB images at the shape's size."""
    return ["batch", 3, shape.img_size, shape.img_size]


def output_shapes(shape: VitShape) -> dict[str, Shape]:
    """The shapes the exported graph's outputs must have, the batch axis spelled ``batch``."""
    d, n = shape.dim, shape.patches
    return {"tokens": ["batch", shape.tokens, d], "cls": ["batch", d], "patch_tokens": ["batch", n, d]}


def output_descriptions(shape: VitShape) -> dict[str, str]:
    """One line per output for the manifest: what it holds and how a head reads it."""
    prefix = shape.prefix_tokens
    return {
        "tokens": f"final-normalised tokens: CLS, {prefix - 1} register tokens, {shape.patches} patch tokens",
        "cls": "CLS token (tokens[:, 0]): global image embedding for linear/kNN heads",
        "patch_tokens": f"patch tokens (tokens[:, {prefix}:]) in row-major {shape.grid}x{shape.grid} grid order, "
                        f"for dense heads",
    }


def patch_size(model: nn.Module) -> int:
    """The side of the model's square patches.

    Raises:
        ExportError: the patches are not square.
    """
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


def target_opset(profile: TargetProfile) -> int:
    """The opset to export for a target: TRT8_OPSET for TensorRT 8.x devices, else OPSET."""
    major = profile.tensorrt_major if profile.runtime == "tensorrt" else None
    return TRT8_OPSET if major is not None and major < 10 else OPSET


def export_onnx(model: nn.Module, path: Path, img_size: int, opset: int = OPSET) -> str:
    """Export ``Backbone(model)`` to ``path`` with a dynamic batch axis.

    Args:
        model: a timm ViT created at ``img_size``.
        path: the ONNX file to write.
        img_size: height and width of the input.
        opset: the default-domain opset of the graph.

    Returns:
        The exporter that wrote the graph (recorded in the manifest).
    """
    wrapper = Backbone(model).eval()
    example = torch.zeros(2, 3, img_size, img_size)  # batch 2: torch.export specialises sizes 0 and 1
    kwargs: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset)
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), external_data=False,
                verbose=False, **kwargs,
            )
        return f"torch.onnx.export(dynamo=True), torch {torch.__version__}"
    except OSError:  # the file could not be written (a full disk): the other exporter would fail the same way
        raise
    except Exception as e:  # torch.export raises many types; fall back once, loudly
        log.warning("torch.export could not trace the student (%s: %s); using the TorchScript exporter",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, dynamic_axes=axes, do_constant_folding=True,
                          **kwargs)
    return f"torch.onnx.export(dynamo=False), torch {torch.__version__}"


def _dims(value_info: Any) -> Shape:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_graph(path: Path, expect: dict[str, Shape]) -> onnx.ModelProto:
    """onnx.checker and strict shape inference; the outputs must have the expected shapes, no Resize.

    Args:
        path: the ONNX file.
        expect: output name -> shape, the batch axis spelled ``batch`` (:func:`output_shapes`).

    Returns:
        The model with inferred shapes.

    Raises:
        ExportError: the checker fails, the graph resizes, or an output has another shape.
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
            f"{path.name} contains {len(resize)} Resize op(s): the position embedding was not fixed to the input "
            f"size; create the student with a fixed img_size (no dynamic_img_size)"
        )
    got = {o.name: _dims(o) for o in model.graph.output}
    for name, dims in expect.items():
        fixed = [d if isinstance(d, int) else "batch" for d in got.get(name, [])]
        if fixed != dims:
            raise ExportError(
                f"{path.name}: output {name} has shape {got.get(name)}, expected {dims}; "
                f"the student is not a plain timm ViT"
            )
    return model


def default_opset(path: Path) -> int:
    """The default-domain opset a saved graph imports."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def require_onnxslim() -> None:
    """Raise MissingDependency unless onnxslim can be imported."""
    import importlib.util

    if importlib.util.find_spec("onnxslim") is None:
        raise MissingDependency("onnxslim", "slim", "simplifying the ONNX graph (--slim)")


def simplify(path: Path) -> None:
    """Simplify the graph in place with onnxslim (optional dependency)."""
    try:
        import onnxslim
    except ImportError as e:
        raise MissingDependency("onnxslim", "slim", "simplifying the ONNX graph (--slim)") from e
    import onnx

    onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))


@contextlib.contextmanager
def quiet_exporters(names: Sequence[str] = CHATTY_LOGGERS) -> Iterator[None]:
    """Silence the INFO chatter of the exporter and quantizer while they run."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
