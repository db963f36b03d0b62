"""The shape of a plain ViT: what the latency model, the FLOPs and the memory of a candidate are computed from.

A :class:`VitShape` is read from a timm model (on the meta device: nothing is allocated), from a timm
name, or from an exported ONNX graph (fp32, fp16 or Q/DQ int8), so that a model is planned before it
exists and predicted after it is exported from the same description. Parameters come from the model
when there is one, else from the closed form; MACs from the closed form :func:`vit_closed_form_macs`, with
fvcore's conventions (:mod:`leapkit.macs`), which it equals for plain ViTs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.errors import ModelError
from leapkit.macs import FLOPS_PER_MAC, LAYERNORM_MACS_PER_ELEMENT
from leapkit.types import BYTES_PER_ELEMENT, Precision

if TYPE_CHECKING:
    from torch import nn

HEAD_DIM = 64  # every timm ViT from Ti to G uses 64-wide attention heads


@dataclass(frozen=True)
class VitShape:
    """A ViT backbone at one input size.

    Args:
        img_size: input height and width.
        patch_size: patch side.
        dim: token width D.
        depth: number of blocks.
        heads: attention heads.
        mlp_hidden: MLP hidden width H (per branch when gated).
        prefix_tokens: CLS and register tokens.
        gated_mlp: the MLP's first layer gives gate and value (SwiGLU, as DINOv2 ViT-G).
        layer_scale: each branch is scaled by a learned per-channel vector (DINOv2).
        pre_norm: a LayerNorm before the first block (CLIP's ``norm_pre``).
        pos_prefix: the position table covers the prefix tokens too (timm's ``no_embed_class`` off).
        name: the timm name, when known.
        param_count: the model's parameter count, when read from a model (else the closed form).
    """

    img_size: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_hidden: int
    prefix_tokens: int = 1
    gated_mlp: bool = False
    layer_scale: bool = False
    pre_norm: bool = False
    pos_prefix: bool = True
    name: str | None = None
    param_count: int | None = None

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def patches(self) -> int:
        return self.grid ** 2

    @property
    def tokens(self) -> int:
        return self.patches + self.prefix_tokens

    @property
    def label(self) -> str:
        return self.name or f"vit d{self.dim} x{self.depth} p{self.patch_size}"

    def at(self, img_size: int) -> VitShape:
        """The same model at another input size (a fixed-size model's parameters change with its position table)."""
        check_img_size(img_size, self.patch_size, self.label)
        return replace(self, img_size=img_size, param_count=None)

    @property
    def params(self) -> int:
        """Parameters: the model's count when known, else the closed form (position table over all tokens)."""
        if self.param_count is not None:
            return self.param_count
        d, h = self.dim, self.mlp_hidden
        fc1 = d * h * (2 if self.gated_mlp else 1)
        block = 4 * d + 4 * d * d + 4 * d + fc1 + fc1 // d + h * d + d + (2 * d if self.layer_scale else 0)
        positions = self.tokens if self.pos_prefix else self.patches
        embed = 3 * self.patch_size ** 2 * d + d + self.prefix_tokens * d + positions * d
        return embed + self.depth * block + 2 * d + (2 * d if self.pre_norm else 0)

    @property
    def macs(self) -> int:
        """MACs of one ``forward_features`` at batch 1 (:func:`vit_closed_form_macs`)."""
        return vit_closed_form_macs(self)

    @property
    def flops(self) -> int:
        return FLOPS_PER_MAC * self.macs

    def memory_bytes(self, precision: Precision, batch: int = 1) -> int:
        """Weights at the precision's width plus the largest activations a block holds at once.

        The peak is one block's: its input, the residual, and the widest intermediate of either
        the attention (the qkv tensor plus the attention matrix of all heads, as an unfused engine
        holds it) or the MLP (its hidden tensor), all at the precision's width.
        """
        width = BYTES_PER_ELEMENT[precision]
        n, d = self.tokens, self.dim
        attention = 3 * n * d + self.heads * n * n
        mlp = n * self.mlp_hidden * (2 if self.gated_mlp else 1)
        activations = batch * (3 * self.img_size ** 2 + 2 * n * d + max(attention, mlp))
        return int(width * (self.params + activations))


def vit_closed_form_macs(shape: VitShape, *, in_chans: int = 3, layernorm: bool = True) -> int:
    """MACs of a standard ViT forward (batch 1) from its shape, without running it.

    Per block with N tokens of width D and MLP width H: qkv 3 N D^2, attention 2 N^2 D, output
    projection N D^2, MLP 2 N D H (3 N D H when gated, as DINOv2 ViT-G's SwiGLU), two LayerNorms
    of 5 N D each. Plus the patch embedding (patches x 3 p^2 x D) and the final LayerNorm.

    Args:
        shape: the ViT at its input size.
        in_chans: input channels.
        layernorm: count LayerNorms with fvcore's 5 MACs per element.
    """
    patches, n, dim = shape.patches, shape.tokens, shape.dim
    norm = LAYERNORM_MACS_PER_ELEMENT * n * dim if layernorm else 0
    mlp = (3 if shape.gated_mlp else 2) * n * dim * shape.mlp_hidden
    block = 3 * n * dim * dim + 2 * n * n * dim + n * dim * dim + mlp + 2 * norm
    return patches * in_chans * shape.patch_size ** 2 * dim + shape.depth * block + norm


def check_img_size(img_size: int, patch: int, name: str) -> None:
    """Raise ModelError unless ``img_size`` is a positive multiple of the patch size."""
    if img_size < patch or img_size % patch:
        lo, hi = max(patch, img_size // patch * patch), (img_size // patch + 1) * patch
        raise ModelError(f"input size {img_size} is not a multiple of the patch size {patch} of {name}; "
                         f"use {lo} or {hi}")


def of_model(model: nn.Module, img_size: int | None = None, name: str | None = None) -> VitShape:
    """The shape of a timm VisionTransformer (on any device, the meta device included).

    Args:
        model: the model.
        img_size: the input size it runs at (default: the size it was created for).
        name: its timm name, for labels.

    Raises:
        ModelError: the model is not a plain timm ViT (standard blocks, square patches).
    """
    from timm.models.vision_transformer import Block
    from torch import nn

    blocks = list(getattr(model, "blocks", []))
    ph, pw = getattr(getattr(model, "patch_embed", None), "patch_size", (0, 1))
    if not blocks or ph != pw or any(type(b) is not Block for b in blocks):
        raise ModelError(f"{name or type(model).__name__} is not a plain timm ViT (standard blocks, square "
                         f"patches); the latency model knows only those")
    block = blocks[0]
    mlp = block.mlp
    hidden = int(mlp.fc2.in_features)
    # GluMlp's fc1 gives gate and value at once; SwiGLU has a layer for each
    gated = hasattr(mlp, "fc1_g") or int(getattr(getattr(mlp, "fc1", None), "out_features", 0)) == 2 * hidden
    size = int(img_size if img_size is not None else model.patch_embed.img_size[0])
    check_img_size(size, int(ph), name or "the model")
    return VitShape(
        img_size=size, patch_size=int(ph), dim=int(model.embed_dim), depth=len(blocks),
        heads=int(block.attn.num_heads), mlp_hidden=hidden, prefix_tokens=int(model.num_prefix_tokens),
        gated_mlp=gated, layer_scale=not isinstance(block.ls1, nn.Identity),
        pre_norm=not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity),
        pos_prefix=not getattr(model, "no_embed_class", False), name=name,
        param_count=sum(p.numel() for p in model.parameters()) if img_size is None or
        size == model.patch_embed.img_size[0] else None,
    )


@functools.lru_cache(maxsize=256)
def of_timm(name: str, img_size: int, role: str = "student") -> VitShape:
    """The shape of timm model ``name`` at ``img_size``, built on the meta device (no weights, no download).

    ``role`` (student, teacher) names the model in the error for a name timm does not know.

    Raises:
        ModelError: the name is unknown to timm or is not a plain ViT, or the size does not fit its patches.
    """
    import torch

    from leapkit.models import create_student

    with torch.device("meta"):
        try:
            model = create_student(name, img_size, role=role)
        except (AssertionError, ValueError) as e:
            raise ModelError(f"cannot build {name} at {img_size} px ({e}); pick a multiple of its patch size") from e
    return of_model(model, img_size, name)


def of_onnx(path: Path | str) -> VitShape:
    """The shape of an exported leapkit graph (``images`` -> ``tokens``, ``cls``, ``patch_tokens``).

    Read from the graph alone: the input size, the token counts of the outputs, one Softmax per block
    (its input gives the heads), the MLP's hidden width from its weights, LayerScale's per-channel
    multipliers. Works on the fp32, fp16 and Q/DQ int8 variants.

    Raises:
        ModelError: the file is not such a graph.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # protobuf and onnx raise several types for a file that is not a model
        raise ModelError(f"{path} is not a readable ONNX file ({e}); pass an export's model*.onnx") from e
    g = model.graph

    def dims(value_info: onnx.ValueInfoProto) -> list[int]:
        return [d.dim_value for d in value_info.type.tensor_type.shape.dim]

    outputs = {o.name: dims(o) for o in g.output}
    inputs = [dims(i) for i in g.input if i.name not in {t.name for t in g.initializer}]
    if not inputs or len(inputs[0]) != 4 or "tokens" not in outputs or "patch_tokens" not in outputs:
        raise ModelError(f"{path} is not a leapkit ViT export (inputs images, outputs tokens/cls/patch_tokens); "
                         f"export it with `leapkit export`")
    img_size = inputs[0][-1]
    tokens, dim = outputs["tokens"][1], outputs["tokens"][2]
    patches = outputs["patch_tokens"][1]
    grid = math.isqrt(patches)
    values = {v.name: dims(v) for v in g.value_info}
    softmax = [n for n in g.node if n.op_type == "Softmax"]
    if not softmax or grid * grid != patches or not img_size:
        raise ModelError(f"{path} has no attention or a non-square grid; it is not a plain ViT export")
    score = values.get(softmax[0].input[0], [])
    heads = score[1] if len(score) == 4 and score[1] else max(1, dim // HEAD_DIM)
    shapes = [tuple(t.dims) for t in g.initializer if len(t.dims) == 2]
    widths = [w for a, b in shapes for w in (a, b) if dim in (a, b) and w not in (dim, 3 * dim)]
    hidden = max(widths) if widths else 4 * dim
    channel_scales = sum(1 for n in g.node if n.op_type == "Mul" and any(
        tuple(t.dims) == (dim,) for t in g.initializer if t.name in n.input))
    norms = sum(1 for n in g.node if n.op_type == "LayerNormalization")
    gated = sum(1 for n in g.node if n.op_type == "Sigmoid") >= len(softmax)
    return VitShape(
        img_size=img_size, patch_size=img_size // grid, dim=dim, depth=len(softmax), heads=heads,
        mlp_hidden=hidden // 2 if gated else hidden, prefix_tokens=tokens - patches, gated_mlp=gated,
        layer_scale=channel_scales >= 2 * len(softmax), pre_norm=norms > 2 * len(softmax) + 1, name=path.name,
    )
