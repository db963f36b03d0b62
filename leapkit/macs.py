"""Counting a model: MACs with fvcore, parameters, and the peak activation memory of a forward.

Units. fvcore counts one fused multiply-add as one "flop"; leapkit calls that a MAC and reports
FLOPs = 2 x MACs next to it. Conventions, as in fvcore: matrix products, convolutions and
attention count; LayerNorm counts 5 MACs per element (fvcore's rule); element-wise ops (GELU,
softmax, residual adds, LayerScale) count zero.

fvcore has no handle for ``aten::scaled_dot_product_attention`` and would silently skip it, the
O(N^2) part of a ViT. leapkit registers one: Q K^T and the product with V cost
B * H * N_q * N_kv * (d_qk + d_v) MACs.

Models may live on the meta device: counting needs shapes, not values, so a giant teacher is
counted part by part without ever being held in memory. The training cost of a run built from
these counts is :mod:`leapkit.flops`.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

FLOPS_PER_MAC = 2
LAYERNORM_MACS_PER_ELEMENT = 5  # fvcore's rule for an affine LayerNorm


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for aten::scaled_dot_product_attention: Q K^T plus (softmax) V."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


class _ForwardFeatures(nn.Module):
    """The backbone as export and training use it: ``forward_features`` (tokens, no head)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def fvcore_macs(module: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[int, dict[str, int]]:
    """MACs of one forward of ``module`` on ``inputs``: the total and the count per submodule.

    Args:
        module: any module; it runs once under fvcore's JIT trace.
        inputs: its positional input(s).
    """
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices (import and trace)
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module, inputs).set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = int(analysis.total())
    return total, {k: int(v) for k, v in analysis.by_module().items()}


@contextmanager
def _materialised(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> Iterator[nn.Module]:
    """Give meta-device parameters and buffers zero-filled CPU tensors for the duration.

    Counting needs the shapes, not the values: a giant teacher built on the meta device is counted
    part by part (``skip`` leaves its blocks on meta) without ever being held in memory.

    Args:
        module: the module; tensors that are not on the meta device are left alone.
        skip: submodules whose tensors stay as they are.
    """
    skipped = {id(m) for s in skip for m in s.modules()}
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    for mod in module.modules():
        if id(mod) in skipped:
            continue
        for table in (mod._parameters, mod._buffers):
            for name, t in table.items():
                if t is not None and t.is_meta:
                    real = torch.zeros(t.shape, dtype=t.dtype)
                    swapped.append((table, name, t))
                    if isinstance(t, nn.Parameter):
                        real = nn.Parameter(real, requires_grad=t.requires_grad)
                    table[name] = real
    try:
        yield module
    finally:
        for table, name, t in swapped:
            table[name] = t


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def params_of(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensors created during a forward (parameters excluded).

    Every op's outputs are tracked by storage; a storage stops counting when its last tensor is
    freed. Views share their base's storage and cost nothing.
    """

    def __init__(self, external: list[torch.Tensor]):
        super().__init__()
        self._refs: dict[int, int] = {}
        self._external = {t.untyped_storage()._cdata for t in external}
        self.live = 0
        self.peak = 0

    def add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, nbytes = storage._cdata, storage.nbytes()
        if key in self._external:
            return
        if key not in self._refs:
            self._refs[key] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        weakref.finalize(t, self._release, key, nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= nbytes

    def __torch_dispatch__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self.add(t)
        return out


def activation_bytes(model: nn.Module, img_size: int, batch: int = 1) -> int:
    """Peak activation memory of one inference forward (``forward_features``), input included.

    Measured by tracking every tensor the forward creates, so it reflects the actual kernels
    (a fused attention never holds the N x N matrix). Weights are not included.

    Args:
        model: a timm ViT.
        img_size: input resolution.
        batch: images per forward.
    """
    with _materialised(model):
        x = torch.zeros(batch, 3, img_size, img_size, device=_device_of(model))
        mode = _PeakMemory([*model.parameters(), *model.buffers()])
        mode.add(x)
        with torch.inference_mode(), mode:
            model.forward_features(x)
        return mode.peak


def model_flops(model: nn.Module, img_size: int, batch: int = 1, memory: bool = True) -> dict[str, Any]:
    """Inference cost of a backbone's ``forward_features`` at ``img_size``.

    Returns ``macs`` and ``flops`` (= 2 x MACs) for the batch, ``params``, and with ``memory``
    the peak ``activation_bytes`` of that forward.

    Args:
        model: a timm ViT (may live on the meta device).
        img_size: input resolution.
        batch: images per forward.
        memory: also measure the activation memory.
    """
    was_training = model.training
    model.eval()
    with _materialised(model):
        x = torch.zeros(batch, 3, img_size, img_size, device=_device_of(model))
        macs, _ = fvcore_macs(_ForwardFeatures(model), x)
    out: dict[str, Any] = {
        "img_size": img_size, "batch": batch, "macs": macs, "flops": FLOPS_PER_MAC * macs, "params": params_of(model),
    }
    if memory:
        out["activation_bytes"] = activation_bytes(model, img_size, batch)
    model.train(was_training)
    return out


class _Embed(nn.Module):
    """The teacher's token embedding: patch embedding, position embedding and prefix tokens."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        return v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))


def teacher_block_flops(teacher: nn.Module, img_size: int) -> dict[str, Any]:
    """Per-part MACs of one image through a ViT: embedding, each block, final norm.

    The parts are counted one at a time (a meta-device teacher is materialised part by part);
    identical blocks are counted once. FLOPs = 2 x MACs.

    Returns ``embed_macs``, ``block_macs`` (list, block 1 first), ``norm_macs``, ``total_macs``,
    ``total_flops``, ``num_blocks``, ``tokens``, ``dim`` and ``params``.

    Args:
        teacher: a timm VisionTransformer (may live on the meta device).
        img_size: input resolution.
    """
    teacher.eval()
    with _materialised(teacher, skip=tuple(teacher.blocks)):
        x = torch.zeros(1, 3, img_size, img_size, device=_device_of(teacher))
        embed_macs, _ = fvcore_macs(_Embed(teacher), x)
        with torch.no_grad():
            tokens = _Embed(teacher)(x)
        block_macs: list[int] = []
        cache: dict[str, int] = {}
        for blk in teacher.blocks:
            key = repr(blk)
            if key not in cache:
                with _materialised(blk):
                    cache[key], _ = fvcore_macs(blk, tokens)
            block_macs.append(cache[key])
        norm_macs, _ = fvcore_macs(teacher.norm, tokens)
    total = embed_macs + sum(block_macs) + norm_macs
    return {
        "img_size": img_size,
        "tokens": int(tokens.shape[1]),
        "dim": int(tokens.shape[2]),
        "num_blocks": len(block_macs),
        "embed_macs": embed_macs,
        "block_macs": block_macs,
        "norm_macs": norm_macs,
        "total_macs": total,
        "total_flops": FLOPS_PER_MAC * total,
        "params": params_of(teacher),
    }
