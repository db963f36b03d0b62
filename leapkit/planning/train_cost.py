"""What distilling a candidate would cost: LEAP's training FLOPs against the fixed-target baseline, and GPU-hours.

The FLOPs are :mod:`leapkit.flops`'s accounting (:func:`leapkit.flops.train_macs` over per-image
:class:`leapkit.flops.StepCosts`) applied to the recipe's schedule before any training: one record
per epoch of the dataset's images. The per-image costs come from the closed form
(:func:`leapkit.planning.shape.vit_closed_form_macs`), equal to fvcore's count for plain ViTs, so that a plan
of dozens of candidates takes seconds.

LEAP's cost depends on how fast the curriculum climbs, which only training tells. The plan assumes
the slowest climb the recipe allows: from block 1, one block every ``max_epochs_per_block`` epochs
(a CKA that reaches the threshold sooner climbs faster and costs more, up to the baseline). So
``leap_flops`` is the least LEAP can cost and ``saving_pct`` the most it can save; the baseline runs all
teacher blocks every step. GPU-hours are FLOPs over the named GPU's dense bf16 peak
(:data:`leapkit.host.GPU_PEAK_TFLOPS`) at the stated utilisation (MFU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leapkit.config import Config
from leapkit.errors import ConfigError
from leapkit.flops import FLOPS_PER_MAC, StepCosts, train_macs
from leapkit.host import GPU_PEAK_TFLOPS
from leapkit.planning.shape import VitShape
from leapkit.records import Record

DEFAULT_GPU = "A100"
DEFAULT_UTILISATION = 0.4  # a typical MFU of ViT training at batch 256 in bf16
# Training images of the datasets the shipped recipes name (by their folder's name).
DATASET_IMAGES: dict[str, int] = {
    "imagenet100": 126_689,  # the CMC ImageNet-100 subset: 100 ImageNet-1k classes, ~1,267 images each
    "imagenet1k": 1_281_167,
    "imagenet": 1_281_167,
    "digits": 1_437,  # leapkit's demo: scikit-learn's digits, the 80% training split
}


@dataclass
class TrainCost(Record):
    """The training cost of distilling one candidate under a recipe.

    Args:
        gpu: the GPU the hours are for.
        utilisation: the model FLOP utilisation assumed.
        epochs: the recipe's epochs.
        images_per_epoch: training images.
        leap_flops: LEAP's training FLOPs under the slowest climb the recipe allows (its least cost).
        baseline_flops: the fixed-target baseline's.
        saving_pct: LEAP's saving against the baseline (its most).
        leap_gpu_hours: ``leap_flops`` on ``gpu`` at ``utilisation``.
        baseline_gpu_hours: the baseline's.
        schedule: the LEAP schedule assumed.
    """

    gpu: str
    utilisation: float
    epochs: int
    images_per_epoch: int
    leap_flops: float
    baseline_flops: float
    saving_pct: float
    leap_gpu_hours: float
    baseline_gpu_hours: float
    schedule: str


def dataset_images(cfg: Config, given: int | None = None) -> int:
    """The training images per epoch: ``given``, else the recipe's dataset by its folder's name.

    Raises:
        ConfigError: neither given nor known.
    """
    if given is not None:
        if given < 1:
            raise ConfigError(f"--train-images must be >= 1, got {given}")
        return given
    key = "digits" if cfg.data.source == "digits" else Path(cfg.data.path or "").name.lower().replace("-", "")
    if key not in DATASET_IMAGES:
        raise ConfigError(f"leapkit does not know the size of recipe {cfg.recipe}'s training set ({cfg.data.path}); "
                          f"pass --train-images N")
    return DATASET_IMAGES[key]


def gpu_peak(gpu: str) -> float:
    """The dense bf16 peak of a named GPU in TFLOP/s.

    Raises:
        ConfigError: an unknown GPU name.
    """
    if gpu not in GPU_PEAK_TFLOPS:
        raise ConfigError(f"unknown GPU '{gpu}'; known: {', '.join(GPU_PEAK_TFLOPS)}")
    return GPU_PEAK_TFLOPS[gpu]


def step_costs(teacher: VitShape, student: VitShape, cfg: Config) -> StepCosts:
    """Per-image MACs of a training step, as :func:`leapkit.flops.step_costs` counts them, from the shapes."""
    d, n = teacher.dim, teacher.tokens
    block = _block_macs(teacher)
    embed = teacher.patches * 3 * teacher.patch_size ** 2 * d
    norm = 5 * n * d
    upto = [embed + norm + k * block for k in range(teacher.depth + 1)]
    head = (student.patches + int(cfg.curriculum.cls_weight > 0)) * student.dim * d
    signal = 3 * teacher.patches * d * d if cfg.curriculum.metric == "cka" else teacher.patches * d
    return StepCosts(upto, student.macs, head, signal)


def _block_macs(s: VitShape) -> int:
    n, d, h = s.tokens, s.dim, s.mlp_hidden
    mlp = (3 if s.gated_mlp else 2) * n * d * h
    return 4 * n * d * d + 2 * n * n * d + mlp + 2 * 5 * n * d


def leap_schedule(epochs: int, blocks: int, max_epochs_per_block: float) -> list[int]:
    """The target block of each epoch under the slowest climb: block 1, then one more every ``max_epochs_per_block``."""
    return [min(blocks, 1 + int(e // max_epochs_per_block)) for e in range(epochs)]


def train_cost(
    teacher: VitShape,
    student: VitShape,
    cfg: Config,
    images_per_epoch: int,
    gpu: str = DEFAULT_GPU,
    utilisation: float = DEFAULT_UTILISATION,
) -> TrainCost:
    """LEAP's training FLOPs and the baseline's for distilling ``student`` from ``teacher`` under ``cfg``.

    Args:
        teacher: the teacher at the training resolution.
        student: the student at the training resolution.
        cfg: the recipe (epochs, batch size, curriculum).
        images_per_epoch: training images.
        gpu: a name of :data:`leapkit.host.GPU_PEAK_TFLOPS`.
        utilisation: model FLOP utilisation, in (0, 1].

    Raises:
        ConfigError: an unknown GPU or a utilisation outside (0, 1].
    """
    if not 0 < utilisation <= 1:
        raise ConfigError(f"--utilisation must be in (0, 1], got {utilisation}")
    peak = gpu_peak(gpu) * 1e12
    costs = step_costs(teacher, student, cfg)
    epochs = cfg.train.epochs
    schedule = leap_schedule(epochs, teacher.depth, cfg.curriculum.max_epochs_per_block)
    records = [{"images": images_per_epoch, "teacher_blocks_run": k} for k in schedule]
    leap = FLOPS_PER_MAC * train_macs(records, costs, "leap", calibration_images=cfg.train.batch_size).total
    baseline = FLOPS_PER_MAC * train_macs(records, costs, "baseline").total
    hours = 1 / (peak * utilisation * 3600)
    return TrainCost(
        gpu=gpu, utilisation=utilisation, epochs=epochs, images_per_epoch=images_per_epoch,
        leap_flops=float(leap), baseline_flops=float(baseline), saving_pct=round(100 * (1 - leap / baseline), 2),
        leap_gpu_hours=leap * hours, baseline_gpu_hours=baseline * hours,
        schedule=(f"slowest climb the recipe allows: block 1 to {schedule[-1]} of {teacher.depth}, one block every "
                  f"{cfg.curriculum.max_epochs_per_block:g} epochs (a faster climb costs more, up to the baseline)"),
    )
