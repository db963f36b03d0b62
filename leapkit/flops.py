"""The training cost of a run in FLOPs, against the fixed-target baseline, and its flops.json record.

Units: MACs count one multiply-add; FLOPs = 2 x MACs (fvcore's "flop" is a MAC); every figure says
which one it is. Models are counted by :mod:`leapkit.macs`.

Training cost of a run, from what metrics.jsonl says was executed step by step (b images):

- teacher: patch embedding + blocks 1..k + final norm, forward only (frozen; k = the target
  block for LEAP, all L blocks for the baseline);
- student: forward, plus a backward counted as 2 x the forward (the usual approximation: the
  gradients with respect to activations and to weights each cost about one forward);
- projection head (Linear D_s -> D_t on the student's patch tokens and CLS): forward + 2 x backward;
- LEAP only: the per-step CKA on the (b * N, D_t) token matrices (3 products of D_t x D_t) and
  the start-block scan before the first step (all teacher blocks, the student and head forward,
  and one CKA per block on the scan's batch).

The baseline is the same run (same steps, same images) with a fixed target, the last block: all
L teacher blocks every step, no start-block scan, no CKA.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, ClassVar

import torch

from leapkit.config import Config
from leapkit.errors import RunError
from leapkit.macs import (  # noqa: F401  (re-exported: leapkit.flops is where callers look for model costs)
    FLOPS_PER_MAC,
    activation_bytes,
    fvcore_macs,
    model_flops,
    params_of,
    teacher_block_flops,
)
from leapkit.records import Record
from leapkit.tables import Table, si
from leapkit.types import Metric, Mode

log = logging.getLogger(__name__)

FLOPS = "flops.json"
BACKWARD_FACTOR = 2  # backward ~ 2 x forward
UNITS = (
    "MACs count one multiply-add; FLOPs = 2 x MACs (fvcore's 'flop' is a MAC). "
    "Training: student and head backward counted as 2 x their forward; the teacher runs forward only."
)


# --- the record ---------------------------------------------------------------------------------


@dataclass
class Parts(Record):
    """A training cost by component (MACs or FLOPs, as the holder says)."""

    teacher: int = 0
    student: int = 0
    head: int = 0
    signal: int = 0  # the curriculum's CKA (or cosine)
    calibration: int = 0  # the start-block scan (its key in summary.json and curriculum.json)

    def total(self) -> int:
        return self.teacher + self.student + self.head + self.signal + self.calibration

    def scaled(self, factor: int) -> Parts:
        return Parts(**{f.name: factor * getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"]


@dataclass
class Breakdown(Record):
    """Training FLOPs by component, for the run as executed and for its fixed-target baseline."""

    run: Parts
    baseline: Parts


@dataclass
class TeacherCost(Record):
    """The teacher's inference cost per image, with its per-part MACs."""

    name: str
    params: int
    inference_flops: int
    inference_macs: int
    embed_macs: int
    block_macs: list[int]
    norm_macs: int


@dataclass
class FlopsReport(Record):
    """``RUN/flops.json``: training FLOPs of a run against the fixed-target baseline, and inference cost.

    ``train_flops_leap`` is the LEAP run's training FLOPs (null for a baseline run, as is the
    saving); ``train_flops_run`` is the run's, whatever its mode. FLOPs = 2 x MACs, MACs beside.
    """

    FILE: ClassVar[str] = FLOPS

    units: str
    curriculum: Mode
    metric: Metric
    img_size: int
    steps: int
    images: int
    train_flops_leap: int | None
    train_flops_baseline: int
    train_flops_saving_pct: float | None
    train_flops_run: int
    train_macs_leap: int | None
    train_macs_baseline: int
    train_macs_run: int
    train_flops_breakdown: Breakdown
    student_inference_flops: int
    student_inference_macs: int
    student_params: int
    export_batch: int
    student_inference_flops_export_batch: int
    student_activation_bytes: dict[str, int]  # batch (as a string) -> peak bytes of one forward
    teacher: TeacherCost
    per_image_macs: dict[str, int] = field(default_factory=dict)  # student_forward, head_forward, <metric>


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


@dataclass
class TrainCost:
    """Training MACs of a list of steps: the total, by component and per step."""

    parts: Parts
    per_step: list[int]

    @property
    def total(self) -> int:
        return self.parts.total()


def train_macs(
    steps: list[dict[str, Any]],
    costs: StepCosts,
    schedule: Mode,
    calibration_images: int = 0,
    default_images: int = 1,
) -> TrainCost:
    """Training MACs of a list of steps under a schedule: total, per component and per step.

    Args:
        steps: metrics.jsonl records (``images``, ``teacher_blocks_run`` or ``target_block``).
        costs: per-image costs from :func:`step_costs`.
        schedule: a curriculum that climbs (the blocks each record says were run, plus the
            start-block scan; plus the per-step CKA for ``leap`` and ``plateau``, whose level-ups
            read it) or ``baseline`` (all L blocks every step, no start-block scan, no CKA). A CKA
            that a run logs for monitoring only (``baseline``, ``progressive``) is not counted.
        calibration_images: images in the start-block scan (0 for ``baseline``).
        default_images: images per step when a record does not say.
    """
    L, fwd_bwd, climbs = costs.num_blocks, 1 + BACKWARD_FACTOR, schedule != "baseline"
    gated = schedule in ("leap", "plateau")
    parts = Parts()
    per_step: list[int] = []
    for rec in steps:
        b = int(rec.get("images", default_images))
        k = int(rec.get("teacher_blocks_run", rec.get("target_block", L))) if climbs else L
        step = Parts(
            teacher=b * costs.teacher_upto[min(max(k, 0), L)],
            student=b * fwd_bwd * costs.student_fwd,
            head=b * fwd_bwd * costs.head_fwd,
            signal=b * costs.signal if gated else 0,
        )
        for name, v in step.items():
            setattr(parts, name, getattr(parts, name) + v)
        per_step.append(step.total())
    if climbs:
        # One pass through all L blocks, the student and the head, and a CKA per block.
        parts.calibration = calibration_images * (
            costs.teacher_upto[L] + costs.student_fwd + costs.head_fwd + L * costs.signal
        )
    return TrainCost(parts, per_step)


def _read_run(run: str | Path | None) -> tuple[Path, Config, list[dict[str, Any]], int]:
    """The run directory, its config, its step records and the start-block scan's image count."""
    from leapkit.run import CONFIG, CURRICULUM, METRICS, read_json, read_metrics, read_run_config, resolve_run

    run_dir = resolve_run(run, need=(CONFIG, METRICS))
    cfg = read_run_config(run_dir)
    steps = read_metrics(run_dir)
    if not steps:
        raise RunError(
            f"{run_dir / METRICS} records no steps; the run did not train, start it again with `leapkit distill`"
        )
    curriculum = read_json(run_dir / CURRICULUM) if (run_dir / CURRICULUM).is_file() else {}
    scan = curriculum.get("calibration") or {}  # curriculum.json's key for the start-block scan
    return run_dir, cfg, steps, int(scan.get("images", 0))


def run_flops(run: str | Path | None = None, export_batch: int = 1, write: bool = True) -> FlopsReport:
    """Training FLOPs of a run against the fixed-target baseline, and the student's inference cost.

    Writes ``RUN/flops.json`` (:class:`FlopsReport`): ``train_flops_leap``,
    ``train_flops_baseline``, ``train_flops_saving_pct``, ``student_inference_flops``,
    ``student_params``, the MACs beside each, a breakdown by component, the teacher's per-block
    costs and the student's activation memory. For a baseline run ``train_flops_leap`` and the
    saving are null.

    Args:
        run: the run directory (default ``runs/latest``).
        export_batch: the batch the student is deployed at; activation memory and FLOPs are also
            given at this batch.
        write: write flops.json.

    Raises:
        RunError: the run is missing, did not train, or ``export_batch`` < 1.
    """
    from leapkit.models import create_student

    if export_batch < 1:
        raise RunError(f"the export batch must be >= 1, got {export_batch}")
    run_dir, cfg, steps, scan_images = _read_run(run)
    if write:
        from leapkit.paths import require_writable
        from leapkit.run import READ_ONLY_FIX

        require_writable(run_dir, "flops.json", READ_ONLY_FIX)
    costs, teacher, student = step_costs(cfg)
    mode = cfg.curriculum.mode
    executed = train_macs(steps, costs, mode, scan_images, default_images=cfg.train.batch_size)
    baseline = train_macs(steps, costs, "baseline", default_images=cfg.train.batch_size)
    leap = executed.total if mode != "baseline" else None  # the curriculum's, whichever climbs
    saving = None if leap is None else round(100.0 * (1 - leap / baseline.total), 3)
    with torch.device("meta"):
        meta_student = create_student(cfg.model.student, cfg.model.img_size)
    memory = {str(b): activation_bytes(meta_student, cfg.model.img_size, b) for b in sorted({1, export_batch})}

    report = FlopsReport(
        units=UNITS,
        curriculum=mode,
        metric=cfg.curriculum.metric,
        img_size=cfg.model.img_size,
        steps=len(steps),
        images=sum(int(r.get("images", cfg.train.batch_size)) for r in steps),
        train_flops_leap=None if leap is None else FLOPS_PER_MAC * leap,
        train_flops_baseline=FLOPS_PER_MAC * baseline.total,
        train_flops_saving_pct=saving,
        train_flops_run=FLOPS_PER_MAC * executed.total,
        train_macs_leap=leap,
        train_macs_baseline=baseline.total,
        train_macs_run=executed.total,
        train_flops_breakdown=Breakdown(executed.parts.scaled(FLOPS_PER_MAC), baseline.parts.scaled(FLOPS_PER_MAC)),
        student_inference_flops=student["flops"],
        student_inference_macs=student["macs"],
        student_params=student["params"],
        export_batch=export_batch,
        student_inference_flops_export_batch=export_batch * student["flops"],
        student_activation_bytes=memory,
        teacher=TeacherCost(
            name=cfg.model.teacher,
            params=teacher["params"],
            inference_flops=FLOPS_PER_MAC * teacher["total_macs"],
            inference_macs=teacher["total_macs"],
            embed_macs=teacher["embed_macs"],
            block_macs=teacher["block_macs"],
            norm_macs=teacher["norm_macs"],
        ),
        per_image_macs={"student_forward": costs.student_fwd, "head_forward": costs.head_fwd,
                        cfg.curriculum.metric: costs.signal},
    )
    if write:
        report.save(folder=run_dir)
    return report


def cumulative_train_flops(run: str | Path | None = None) -> dict[str, list[int]]:
    """Cumulative training FLOPs after each step for the run and its baseline (for plots).

    Returns ``step``, ``run`` and ``baseline`` lists of equal length; the run's curve includes the
    start-block scan from its first point.
    """
    _, cfg, steps, scan_images = _read_run(run)
    costs, _, _ = step_costs(cfg)
    executed = train_macs(steps, costs, cfg.curriculum.mode, scan_images, default_images=cfg.train.batch_size)
    baseline = train_macs(steps, costs, "baseline", default_images=cfg.train.batch_size)
    run_curve = list(accumulate(executed.per_step, initial=executed.parts.calibration))[1:]
    return {
        "step": [int(r.get("step", i + 1)) for i, r in enumerate(steps)],
        "run": [FLOPS_PER_MAC * v for v in run_curve],
        "baseline": [FLOPS_PER_MAC * v for v in accumulate(baseline.per_step)],
    }


# --- tables -------------------------------------------------------------------------------------

_LABELS = {
    "teacher": "teacher forward",
    "student": "student forward + backward",
    "head": "head forward + backward",
    "calibration": "start-block scan",
}


def train_flops_table(f: FlopsReport) -> Table:
    """Training FLOPs by component, this run against the fixed-target baseline, with the saving."""
    table = Table.of(
        "component", f"this run ({f.curriculum}) FLOPs", "fixed-target baseline FLOPs",
        title=f"training cost ({f.steps:,} steps, {f.images:,} images, {f.img_size} px)", caption=f.units,
        right=(f"this run ({f.curriculum}) FLOPs", "fixed-target baseline FLOPs"),
    )
    run, base = f.train_flops_breakdown.run, f.train_flops_breakdown.baseline
    for name, value in run.items():
        label = f"curriculum {f.metric}" if name == "signal" else _LABELS.get(name, name)
        table.add(label, si(value), si(getattr(base, name)))
    table.add("total", si(f.train_flops_run), si(f.train_flops_baseline), style="bold")
    saving = f.train_flops_saving_pct
    table.add("saving", "- (baseline run)" if saving is None else f"{saving:.1f} %", "", style="bold")
    return table


def inference_table(f: FlopsReport) -> Table:
    """Parameters, MACs, FLOPs and activation memory per image of the student and the teacher."""
    t = f.teacher
    blocks = t.block_macs
    per_block = f"{si(blocks[0])} each" if len(set(blocks)) == 1 else ", ".join(si(b) for b in blocks)
    caption = (f"teacher MACs per image: embedding {si(t.embed_macs)}, {len(blocks)} blocks of {per_block}, "
               f"final norm {si(t.norm_macs)}")
    table = Table.of("model", "params", "MACs / image", "FLOPs / image", "activations",
                     title="inference cost (forward_features)", caption=caption,
                     right=("params", "MACs / image", "FLOPs / image", "activations"))
    memory = ", ".join(f"{si(v, 'B')} @ batch {b}" for b, v in f.student_activation_bytes.items())
    table.add("student", si(f.student_params), si(f.student_inference_macs), si(f.student_inference_flops), memory)
    table.add(f"teacher {t.name}", si(t.params), si(t.inference_macs), si(t.inference_flops), "")
    return table
