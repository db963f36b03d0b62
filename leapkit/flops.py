"""FLOPs accounting: model costs counted with fvcore, and the training cost of a run.

Units. fvcore counts one fused multiply-add as one "flop"; leapkit calls that a MAC and reports
FLOPs = 2 x MACs next to it. Every figure says which one it is. Conventions, as in fvcore:
matrix products, convolutions and attention count; LayerNorm counts 5 MACs per element (fvcore's
rule); element-wise ops (GELU, softmax, residual adds, LayerScale) count zero.

fvcore has no handle for ``aten::scaled_dot_product_attention`` and would silently skip it, the
O(N^2) part of a ViT. leapkit registers one: Q K^T and the product with V cost
B * H * N_q * N_kv * (d_qk + d_v) MACs.

Training cost of a run, from what metrics.jsonl says was executed step by step (b images):

- teacher: patch embedding + blocks 1..k + final norm, forward only (frozen; k = the target
  block for LEAP, all L blocks for the baseline);
- student: forward, plus a backward counted as 2 x the forward (the usual approximation: the
  gradients with respect to activations and to weights each cost about one forward);
- projection head (Linear D_s -> D_t on the student's patch tokens and CLS): forward + 2 x backward;
- LEAP only: the per-step CKA on the (b * N, D_t) token matrices (3 products of D_t x D_t) and
  the calibration scan before the first step (all teacher blocks, the student and head forward,
  and one CKA per block on the calibration batch).

The baseline is the same run (same steps, same images) with a fixed target, the last block: all
L teacher blocks every step, no calibration, no CKA.
"""

from __future__ import annotations

import logging
import math
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from leapkit.config import Config
from leapkit.errors import RunError

log = logging.getLogger(__name__)

FLOPS = "flops.json"
FLOPS_PER_MAC = 2
BACKWARD_FACTOR = 2  # backward ~ 2 x forward
LAYERNORM_MACS_PER_ELEMENT = 5  # fvcore's rule for an affine LayerNorm
UNITS = (
    "MACs count one multiply-add; FLOPs = 2 x MACs (fvcore's 'flop' is a MAC). "
    "Training: student and head backward counted as 2 x their forward; the teacher runs forward only."
)


# --- counting a module --------------------------------------------------------------------------


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
                    table[name] = nn.Parameter(real, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else real
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
    out: dict[str, Any] = {"img_size": img_size, "batch": batch, "macs": macs, "flops": FLOPS_PER_MAC * macs, "params": params_of(model)}
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


def vit_closed_form_macs(
    img_size: int,
    patch_size: int,
    dim: int,
    depth: int,
    mlp_hidden: int | None = None,
    gated_mlp: bool = False,
    prefix_tokens: int = 1,
    in_chans: int = 3,
    layernorm: bool = True,
) -> int:
    """MACs of a standard ViT forward (batch 1) from its shape, without running it.

    Per block with N tokens of width D and MLP width H: qkv 3 N D^2, attention 2 N^2 D, output
    projection N D^2, MLP 2 N D H (3 N D H when gated, as DINOv2 ViT-G's SwiGLU), two LayerNorms
    of 5 N D each. Plus the patch embedding (patches x 3 p^2 x D) and the final LayerNorm.

    Args:
        img_size: input resolution.
        patch_size: patch side.
        dim: token width D.
        depth: number of blocks.
        mlp_hidden: MLP hidden width H (default 4 D).
        gated_mlp: the first MLP layer produces 2 H (gate and value).
        prefix_tokens: CLS and register tokens.
        in_chans: input channels.
        layernorm: count LayerNorms with fvcore's 5 MACs per element.
    """
    patches = (img_size // patch_size) ** 2
    n = patches + prefix_tokens
    hidden = 4 * dim if mlp_hidden is None else mlp_hidden
    norm = LAYERNORM_MACS_PER_ELEMENT * n * dim if layernorm else 0
    mlp = (3 if gated_mlp else 2) * n * dim * hidden
    block = 3 * n * dim * dim + 2 * n * n * dim + n * dim * dim + mlp + 2 * norm
    return patches * in_chans * patch_size * patch_size * dim + depth * block + norm


# --- training cost of a run ---------------------------------------------------------------------


@dataclass(frozen=True)
class StepCosts:
    """Per-image MACs of the pieces of a training step.

    ``teacher_upto[k]`` is the teacher's embedding + blocks 1..k + final norm (k = 0..L).
    """

    teacher_upto: list[int]
    student_fwd: int
    head_fwd: int
    signal: int  # the curriculum's CKA (or cosine) between projected student and target tokens

    @property
    def num_blocks(self) -> int:
        return len(self.teacher_upto) - 1


def step_costs(cfg: Config) -> tuple[StepCosts, dict[str, Any], dict[str, Any]]:
    """Per-image step costs of a run's model pair, with the teacher's parts and the student's cost.

    Both models are built on the meta device at the run's resolution: nothing is downloaded and
    no weights are held.
    """
    from leapkit.models import create_student, create_teacher

    img = cfg.model.img_size
    with torch.device("meta"):
        teacher = create_teacher(cfg.model.teacher, img, weights=None, pretrained=False)
        student = create_student(cfg.model.student, img)
    t = teacher_block_flops(teacher, img)
    s = model_flops(student, img, memory=False)
    t_patches, t_dim = int(teacher.patch_embed.num_patches), t["dim"]
    # The head projects the student's patch tokens (and CLS for the CLS loss) to the teacher width,
    # before any resize to the teacher grid.
    head = (int(student.patch_embed.num_patches) + int(cfg.curriculum.cls_weight > 0)) * int(student.embed_dim) * t_dim
    # Feature-space CKA on (b * N, D_t) matrices: X^T Y, X^T X and Y^T Y.
    signal = 3 * t_patches * t_dim * t_dim if cfg.curriculum.metric == "cka" else t_patches * t_dim
    upto = [t["embed_macs"] + t["norm_macs"]]
    for m in t["block_macs"]:
        upto.append(upto[-1] + m)
    return StepCosts(upto, s["macs"], head, signal), t, s


def train_macs(
    steps: list[dict[str, Any]],
    costs: StepCosts,
    schedule: Literal["leap", "baseline"],
    calibration_images: int = 0,
    default_images: int = 1,
) -> dict[str, Any]:
    """Training MACs of a list of steps under a schedule: total, per component and per step.

    Args:
        steps: metrics.jsonl records (``images``, ``teacher_blocks_run`` or ``target_block``).
        costs: per-image costs from :func:`step_costs`.
        schedule: ``leap`` (the blocks each record says were run, plus the curriculum's CKA and
            the calibration scan) or ``baseline`` (all L blocks every step, no calibration, no
            CKA; a CKA that a baseline run logs for monitoring is not part of the method).
        calibration_images: images in the calibration scan (``leap`` only).
        default_images: images per step when a record does not say.
    """
    L, fwd_bwd, leap = costs.num_blocks, 1 + BACKWARD_FACTOR, schedule == "leap"
    parts = {"teacher": 0, "student": 0, "head": 0, "signal": 0, "calibration": 0}
    per_step: list[int] = []
    for rec in steps:
        b = int(rec.get("images", default_images))
        k = int(rec.get("teacher_blocks_run", rec.get("target_block", L))) if leap else L
        step = {
            "teacher": b * costs.teacher_upto[min(max(k, 0), L)],
            "student": b * fwd_bwd * costs.student_fwd,
            "head": b * fwd_bwd * costs.head_fwd,
            "signal": b * costs.signal if leap else 0,
        }
        for name, v in step.items():
            parts[name] += v
        per_step.append(sum(step.values()))
    if leap:
        # One pass through all L blocks, the student and the head, and a CKA per block.
        parts["calibration"] = calibration_images * (costs.teacher_upto[L] + costs.student_fwd + costs.head_fwd + L * costs.signal)
    return {"total": sum(parts.values()), "parts": parts, "per_step": per_step}


def _read_run(run: str | Path | None) -> tuple[Path, Config, list[dict[str, Any]], int]:
    """The run directory, its config, its step records and the calibration scan's image count."""
    from leapkit.run import CONFIG, CURRICULUM, METRICS, read_json, read_metrics, read_run_config, resolve_run

    run_dir = resolve_run(run, need=(CONFIG, METRICS))
    cfg = read_run_config(run_dir)
    steps = read_metrics(run_dir)
    if not steps:
        raise RunError(f"{run_dir / METRICS} records no steps; the run did not train, start it again with `leapkit distill`")
    curriculum = read_json(run_dir / CURRICULUM) if (run_dir / CURRICULUM).is_file() else {}
    calibration = curriculum.get("calibration") or {}
    return run_dir, cfg, steps, int(calibration.get("images", 0))


def run_flops(run: str | Path | None = None, export_batch: int = 1, write: bool = True) -> dict[str, Any]:
    """Training FLOPs of a run against the fixed-target baseline, and the student's inference cost.

    Writes ``RUN/flops.json`` with ``train_flops_leap``, ``train_flops_baseline``,
    ``train_flops_saving_pct``, ``student_inference_flops``, ``student_params``, the MACs beside
    each, a breakdown by component, the teacher's per-block costs and the student's activation
    memory. For a baseline run ``train_flops_leap`` and the saving are null.

    Args:
        run: the run directory (default ``runs/latest``).
        export_batch: the batch the student is deployed at; activation memory and FLOPs are also
            given at this batch.
        write: write flops.json.
    """
    from leapkit.models import create_student
    from leapkit.run import write_json

    if export_batch < 1:
        raise RunError(f"the export batch must be >= 1, got {export_batch}")
    run_dir, cfg, steps, calibration_images = _read_run(run)
    costs, teacher, student = step_costs(cfg)
    mode = cfg.curriculum.mode
    executed = train_macs(steps, costs, mode, calibration_images, default_images=cfg.train.batch_size)
    baseline = train_macs(steps, costs, "baseline", default_images=cfg.train.batch_size)
    leap = executed["total"] if mode == "leap" else None
    saving = None if leap is None else round(100.0 * (1 - leap / baseline["total"]), 3)
    with torch.device("meta"):
        meta_student = create_student(cfg.model.student, cfg.model.img_size)
    memory = {str(b): activation_bytes(meta_student, cfg.model.img_size, b) for b in sorted({1, export_batch})}

    def flops(v: int | None) -> int | None:
        return None if v is None else FLOPS_PER_MAC * v

    out: dict[str, Any] = {
        "units": UNITS,
        "curriculum": mode,
        "metric": cfg.curriculum.metric,
        "img_size": cfg.model.img_size,
        "steps": len(steps),
        "images": sum(int(r.get("images", cfg.train.batch_size)) for r in steps),
        "train_flops_leap": flops(leap),
        "train_flops_baseline": flops(baseline["total"]),
        "train_flops_saving_pct": saving,
        "train_flops_run": flops(executed["total"]),
        "train_macs_leap": leap,
        "train_macs_baseline": baseline["total"],
        "train_macs_run": executed["total"],
        "train_flops_breakdown": {
            "run": {k: flops(v) for k, v in executed["parts"].items()},
            "baseline": {k: flops(v) for k, v in baseline["parts"].items()},
        },
        "student_inference_flops": student["flops"],
        "student_inference_macs": student["macs"],
        "student_params": student["params"],
        "export_batch": export_batch,
        "student_inference_flops_export_batch": export_batch * student["flops"],
        "student_activation_bytes": memory,
        "teacher": {
            "name": cfg.model.teacher,
            "params": teacher["params"],
            "inference_flops": FLOPS_PER_MAC * teacher["total_macs"],
            "inference_macs": teacher["total_macs"],
            "embed_macs": teacher["embed_macs"],
            "block_macs": teacher["block_macs"],
            "norm_macs": teacher["norm_macs"],
        },
        "per_image_macs": {"student_forward": costs.student_fwd, "head_forward": costs.head_fwd, cfg.curriculum.metric: costs.signal},
    }
    if write:
        write_json(run_dir / FLOPS, out)
    return out


def cumulative_train_flops(run: str | Path | None = None) -> dict[str, list[int]]:
    """Cumulative training FLOPs after each step for the run and its baseline (for plots).

    Returns ``step``, ``run`` and ``baseline`` lists of equal length; the run's curve includes the
    calibration scan from its first point.
    """
    _, cfg, steps, calibration_images = _read_run(run)
    costs, _, _ = step_costs(cfg)
    executed = train_macs(steps, costs, cfg.curriculum.mode, calibration_images, default_images=cfg.train.batch_size)
    baseline = train_macs(steps, costs, "baseline", default_images=cfg.train.batch_size)
    run_curve = list(accumulate(executed["per_step"], initial=executed["parts"]["calibration"]))[1:]
    return {
        "step": [int(r.get("step", i + 1)) for i, r in enumerate(steps)],
        "run": [FLOPS_PER_MAC * v for v in run_curve],
        "baseline": [FLOPS_PER_MAC * v for v in accumulate(baseline["per_step"])],
    }
