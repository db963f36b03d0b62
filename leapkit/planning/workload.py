"""What one inference of a ViT asks of the hardware, part by part: the latency model's inputs.

A ViT's work splits into a few kinds whose cost scales differently, and each part of the model
(patch embedding, attention, MLP, norms and elementwise work, per-layer overhead) is a sum of them:

- ``gemm_flops``: the weight GEMMs (patch embedding, qkv, output projection, both MLP layers);
- ``weights``: their weight elements, which stream from memory once per inference;
- ``attention_flops``: the two activation-by-activation products of attention, Q K^T and (softmax) V;
- ``scores``: attention scores (heads x N x N), each scaled, soft-maxed and, unless the engine
  fuses attention, written and read back;
- ``token_elements``: elements touched by the token-wide elementwise ops (LayerNorms, residual adds,
  LayerScale, position embedding, the outputs' copies), one count per op;
- ``hidden_elements``: the MLP's hidden activations (GELU, or SwiGLU's gate);
- ``blocks`` and ``inferences``: a fixed cost per block (kernel launches, thread-pool wake-ups)
  and per inference.

:mod:`leapkit.planning.latency_model` turns these counts into time with per-target efficiencies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from leapkit.planning.shape import VitShape

PARTS = ("patch embedding", "attention", "mlp", "norms and elementwise", "overhead")


@dataclass(frozen=True)
class Work:
    """Counts of each kind of work (see the module docstring); batch included except where noted."""

    gemm_flops: float = 0.0
    weights: float = 0.0  # once per inference, whatever the batch
    attention_flops: float = 0.0
    scores: float = 0.0
    token_elements: float = 0.0
    hidden_elements: float = 0.0
    blocks: float = 0.0  # once per inference
    inferences: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(*(a + b for a, b in zip(self.vector(), other.vector(), strict=True)))

    def times(self, k: float) -> Work:
        return Work(*(k * a for a in self.vector()))

    def vector(self) -> tuple[float, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


FEATURES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Work))


def parts(shape: VitShape, batch: int = 1) -> dict[str, Work]:
    """The work of one inference of ``shape`` at ``batch``, by part of the model (:data:`PARTS`).

    Args:
        shape: the ViT.
        batch: images per inference.
    """
    n, d, h, depth = shape.tokens, shape.dim, shape.mlp_hidden, shape.depth
    branches = 2 if shape.gated_mlp else 1
    patch_in = 3 * shape.patch_size ** 2
    embed = Work(
        gemm_flops=2.0 * batch * shape.patches * patch_in * d,
        weights=float(patch_in * d),
        token_elements=float(batch * n * d * (2 + int(shape.pre_norm))),  # prefix concat, position add, norm_pre
    )
    attention = Work(
        gemm_flops=2.0 * batch * n * 4 * d * d,  # qkv (3 D^2) and the output projection (D^2)
        weights=4.0 * d * d,
        attention_flops=4.0 * batch * n * n * d,  # Q K^T and attn V over all heads
        scores=float(batch * shape.heads * n * n),
    ).times(depth)
    mlp = Work(
        gemm_flops=2.0 * batch * n * d * h * (branches + 1),
        weights=float(d * h * (branches + 1)),
        hidden_elements=float(batch * n * h * branches),
    ).times(depth)
    per_block_ops = 4 + (2 if shape.layer_scale else 0)  # two LayerNorms, two residual adds, LayerScale
    elementwise = Work(token_elements=float(batch * n * d * (depth * per_block_ops + 3)))  # + final norm, 2 outputs
    overhead = Work(blocks=float(depth), inferences=1.0)
    return dict(zip(PARTS, (embed, attention, mlp, elementwise, overhead), strict=True))


def total(shape: VitShape, batch: int = 1) -> Work:
    """All the work of one inference of ``shape`` at ``batch``."""
    out = Work()
    for w in parts(shape, batch).values():
        out = out + w
    return out
