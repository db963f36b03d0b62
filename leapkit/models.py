"""Teacher and student models (timm only), the truncated teacher forward and the backbone that export runs.

Any timm ViT name works for both roles. Two tiny architectures are registered with timm for the
embedded demo: ``leapkit_demo_teacher`` (8 blocks) and ``leapkit_demo_student`` (4 blocks), both
16 px inputs (the digits are 8 x 8) with 4 px patches; a third, ``leapkit_digits12_teacher``
(12 blocks, 32 px), is the teacher of the curricula benchmark's second setting.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer, checkpoint_filter_fn
from torch import nn

from leapkit.errors import ModelError

log = logging.getLogger(__name__)

# Digits are grey strokes on black: normalise around 0.5 rather than with ImageNet statistics.
_DEMO_CFG = dict(input_size=(3, 16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=0, crop_pct=1.0)
default_cfgs = generate_default_cfgs({
    "leapkit_demo_teacher": _DEMO_CFG,
    "leapkit_demo_student": _DEMO_CFG,
    "leapkit_digits12_teacher": {**_DEMO_CFG, "input_size": (3, 32, 32)},
    "vit_tiny_patch14_leapkit": dict(input_size=(3, 224, 224), num_classes=0),
})


@register_model
def leapkit_demo_teacher(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The demo teacher: 8 blocks, dim 96, 3 heads, 4 px patches on 16 px digits."""
    args = dict(img_size=16, patch_size=4, embed_dim=96, depth=8, num_heads=3)
    return _create_vision_transformer("leapkit_demo_teacher", pretrained=False, **{**args, **kwargs})


@register_model
def leapkit_demo_student(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The demo student: 4 blocks, dim 32, 2 heads, 4 px patches on 16 px digits.

    About 1/17 of the teacher's parameters, so that, as with ViT-S under ViT-G in the paper, the
    teacher's forward dominates the training FLOPs and its early exit matters.
    """
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2)
    return _create_vision_transformer("leapkit_demo_student", pretrained=False, **{**args, **kwargs})


@register_model
def leapkit_digits12_teacher(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The second curricula setting's teacher: 12 blocks, dim 48, 3 heads, 4 px patches on 32 px digits.

    Deeper than the demo teacher and four times its tokens (an 8 x 8 grid), so that a curriculum
    tuned on the demo can be seen on another setting (benchmarks/curricula.py).
    """
    args = dict(img_size=32, patch_size=4, embed_dim=48, depth=12, num_heads=3)
    return _create_vision_transformer("leapkit_digits12_teacher", pretrained=False, **{**args, **kwargs})


@register_model
def vit_tiny_patch14_leapkit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-T/14 in the DINOv2 layout (dim 192, depth 12, 3 heads, layer scale): the paper's small student."""
    args = dict(img_size=224, patch_size=14, embed_dim=192, depth=12, num_heads=3, init_values=1e-5)
    return _create_vision_transformer("vit_tiny_patch14_leapkit", pretrained=False, **{**args, **kwargs})


def normalization(model_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std of a timm model's pretrained config (ImageNet defaults when it has none).

    The teacher's statistics normalise every image leapkit feeds to teacher and student alike.
    """
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    for name in (model_name, model_name.split(".")[0]):
        try:
            pcfg = timm.models.get_pretrained_cfg(name)
        except (RuntimeError, ValueError, KeyError):
            pcfg = None
        if pcfg is not None and pcfg.mean is not None and pcfg.std is not None:
            return tuple(pcfg.mean), tuple(pcfg.std)
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def builtin_weights(name: str) -> Path:
    """Path of a weights file shipped inside the package (``builtin:<name>``)."""
    path = resources.files("leapkit") / "assets" / f"{name}.safetensors"
    return Path(str(path))


def _create(name: str, role: str, img_size: int, pretrained: bool, **kwargs) -> VisionTransformer:
    base = name.split(".")[0]
    if not timm.is_model(base):
        raise ModelError(
            f"unknown timm model '{name}' for the {role}: pick a name from "
            f"timm.list_models('vit_*') (e.g. vit_small_patch14_dinov2)"
        )
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=img_size, **kwargs)
    except TypeError as e:
        raise ModelError(f"the {role} '{name}' is not a ViT leapkit can distil ({e})") from e
    except Exception as e:  # hub download failures come in many types
        if pretrained:
            raise ModelError(
                f"could not load pretrained weights for '{name}' ({type(e).__name__}); "
                f"when offline pass a local safetensors file with --teacher-weights FILE"
            ) from e
        raise
    if not isinstance(model, VisionTransformer):
        raise ModelError(f"the {role} '{name}' is a {type(model).__name__}, not a timm VisionTransformer")
    return model


def load_weights(model: VisionTransformer, path: str | Path, role: str = "model") -> None:
    """Load a safetensors file into ``model``, adapting position embeddings to its resolution.

    Accepts timm checkpoints and the original DINOv2 layout (timm's filter converts it).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = builtin_weights(str(path).split(":", 1)[1]) if str(path).startswith("builtin:") else Path(path)
    if not path.is_file():
        raise ModelError(f"{role} weights file not found: {path}; check the path passed to --teacher-weights")
    if path.suffix != ".safetensors":
        raise ModelError(
            f"{role} weights must be a .safetensors file, got {path}; convert it with safetensors.torch.save_file"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"cannot read {role} weights {path}: {e}; the file is not valid safetensors") from e
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    state = checkpoint_filter_fn(state, model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]}), "
            f"{len(wrong)} of wrong shape (e.g. {wrong[:1]})"
        )
        raise ModelError(f"{role} weights {path.name} do not fit the model: {detail}; pass the matching model name")
    model.load_state_dict(state, strict=True)


def create_teacher(name: str, img_size: int, weights: str | None = None, pretrained: bool = True) -> VisionTransformer:
    """Create the frozen teacher at ``img_size``.

    Args:
        name: timm model name, e.g. ``vit_giant_patch14_dinov2.lvd142m``.
        img_size: training resolution; position embeddings are resampled to it.
        weights: a local safetensors file (or ``builtin:<name>``); overrides the hub.
        pretrained: load hub weights when no file is given.
    """
    model = _create(name, "teacher", img_size, pretrained=pretrained and weights is None)
    if weights is not None:
        load_weights(model, weights, role="teacher")
    model.eval().requires_grad_(False)
    return model


def create_student(name: str, img_size: int, role: str = "student", **kwargs) -> VisionTransformer:
    """Create a randomly initialised student at the training resolution (``role`` names it in errors)."""
    return _create(name, role, img_size, pretrained=False, **kwargs)


def grid_size(model: VisionTransformer) -> tuple[int, int]:
    """The patch grid (rows, cols) of a model at its configured resolution."""
    return tuple(model.patch_embed.grid_size)


def check_pair(teacher: VisionTransformer, student: VisionTransformer, img_size: int) -> None:
    """Raise ModelError when the student's patch grid cannot be mapped onto the teacher's."""
    for role, m in (("teacher", teacher), ("student", student)):
        ph, pw = m.patch_embed.patch_size
        if img_size % ph or img_size % pw:
            raise ModelError(
                f"image size {img_size} is not divisible by the {role}'s patch size {ph}; "
                f"use --img-size {img_size // ph * ph} or {(img_size // ph + 1) * ph}"
            )
    (th, tw), (sh, sw) = grid_size(teacher), grid_size(student)
    if th * sw != tw * sh:
        raise ModelError(
            f"teacher grid {th}x{tw} and student grid {sh}x{sw} have different aspect ratios; "
            "use square inputs for both"
        )


class Tokens(NamedTuple):
    """Final-normalised tokens of one block: patch tokens (B, N, D) and the CLS token (B, D)."""

    patch: torch.Tensor
    cls: torch.Tensor


class TruncatedTeacher(nn.Module):
    """Runs teacher blocks 1..k only (early exit) and returns that block's normalised tokens.

    The result equals ``forward_intermediates(x, indices=[k - 1], norm=True)`` of the full model,
    at a cost of k blocks instead of all of them.
    """

    def __init__(self, model: VisionTransformer):
        super().__init__()
        self.model = model
        self.num_blocks = len(model.blocks)
        self.num_prefix_tokens = model.num_prefix_tokens

    def _check_block(self, k: int) -> None:
        if not 1 <= k <= self.num_blocks:
            raise ValueError(f"target block {k} out of range 1..{self.num_blocks}")

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def _split(self, x: torch.Tensor) -> Tokens:
        x = self.model.norm(x)
        return Tokens(patch=x[:, self.num_prefix_tokens:], cls=x[:, 0])

    def forward(self, x: torch.Tensor, k: int) -> Tokens:
        """Tokens of block ``k`` (1-indexed)."""
        self._check_block(k)
        x = self._embed(x)
        for blk in self.model.blocks[:k]:
            x = blk(x)
        return self._split(x)

    def all_blocks(self, x: torch.Tensor) -> list[Tokens]:
        """Tokens of every block in one pass (used by the calibration scan)."""
        x = self._embed(x)
        out = []
        for blk in self.model.blocks:
            x = blk(x)
            out.append(self._split(x))
        return out


def student_tokens(student: VisionTransformer, x: torch.Tensor) -> Tokens:
    """The student's final normalised patch tokens and CLS token."""
    feats = student.forward_features(x)
    return Tokens(patch=feats[:, student.num_prefix_tokens:], cls=feats[:, 0])


def resize_tokens(tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (B, H*W, D) patch tokens from grid ``src`` to grid ``dst``."""
    if src == dst:
        return tokens
    b, _, d = tokens.shape
    grid = tokens.transpose(1, 2).reshape(b, d, *src)
    grid = F.interpolate(grid, size=dst, mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class Backbone(nn.Module):
    """The student's ``forward_features`` with the three outputs leapkit exports and runs.

    The outputs are :data:`leapkit.runtimes.base.OUTPUT_NAMES`, in order: all tokens, the class
    token and the patch tokens (the tokens after the model's prefix tokens).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.model.forward_features(images)
        return tokens, tokens[:, 0], tokens[:, self.num_prefix_tokens:]
