"""Optimizers, the linear learning-rate scaling rule and the schedule (a pure function of the step)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from leapkit.config import OptimConfig

LR_REFERENCE_BATCH = 256
"""The global batch that ``optim.lr`` is given for when ``optim.scale_lr`` is on."""


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    Parameters with one dimension (biases, norms) skip weight decay and the trust ratio, as is usual.
    """

    def __init__(
        self, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, trust_coef: float = 0.001
    ):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coef=trust_coef))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = p.norm(), grad.norm()
                    ok = (w_norm > 0) & (g_norm > 0)
                    trust = torch.where(ok, group["trust_coef"] * w_norm / g_norm, torch.ones_like(w_norm))
                    grad = grad.mul(trust)
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, tokens or position embeddings."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or name.endswith(("cls_token", "reg_token", "pos_embed"))
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimConfig, modules: Iterable[nn.Module]) -> torch.optim.Optimizer:
    """AdamW or LARS over ``modules``, with weight decay on matrices only (see :func:`param_groups`)."""
    groups = param_groups(modules, cfg.weight_decay)
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def scaled_lr(lr: float, global_batch: int, scale: bool) -> float:
    """The peak learning rate of a run: ``lr``, or by the linear scaling rule (Goyal et al., 2017)
    ``lr * global_batch / 256`` when ``scale`` is on, ``lr`` then being the rate for a global batch of 256.

    Args:
        lr: optim.lr.
        global_batch: images per optimizer step over all processes (batch_size x accum_steps x world).
        scale: optim.scale_lr.
    """
    return lr * global_batch / LR_REFERENCE_BATCH if scale else lr


def lr_at(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, restart_step: int = 0
) -> float:
    """Linear warm-up to ``base_lr``, then a cosine decay to ``min_lr`` at ``total_steps``.

    With ``restart_step`` > 0 (LR restart at a level-up) a fresh cosine segment starts at that step
    from ``base_lr`` and runs to the end of training.

    Args:
        step: optimizer steps taken so far (0 for the first step).
        total_steps: steps in the whole run.
        warmup_steps: steps of the linear warm-up; the first step runs at ``base_lr / warmup_steps``.
        base_lr: the peak rate.
        min_lr: the rate at ``total_steps``.
        restart_step: the step of the latest level-up under LR restart, else 0.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    start = max(warmup_steps, restart_step)
    progress = min(1.0, (step - start) / max(1, total_steps - start))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
