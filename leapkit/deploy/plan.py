"""What an export will do, validated before anything is written: run, target, precisions, sizes, checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.deploy.bundle import BatchRange
from leapkit.deploy.onnx_graph import check_input_size, patch_size
from leapkit.errors import ExportError
from leapkit.models import create_student, load_weights
from leapkit.run import STUDENT
from leapkit.types import CALIB_METHODS, PRECISIONS, CalibMethod, Precision

if TYPE_CHECKING:
    from torch import nn

    from leapkit.config import Config
    from leapkit.profiles import TargetProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportPlan:
    """One export, validated: what to export, for which target, and how hard to check it.

    Args:
        run_dir: the run directory (resolved, with config and weights).
        cfg: the run's config.
        profile: the target profile.
        precisions: the variants, fp32 first (the others derive from it).
        input_size: image size of the graph.
        batch: the batch range engines accept and are tuned for.
        calib_images: training images for INT8 calibration.
        calib_method: how INT8 activation ranges are chosen.
        int8_fallback: move the blocks that lose the most accuracy out of INT8 until the variant passes.
        parity_images: validation images for the parity check.
        probe_images: cap on train images for the linear probe (val: half of it); None uses all.
        slim: simplify the fp32 graph with onnxslim.
        build_engine: build TensorRT engines here.
        no_engine_reason: why engines cannot be built here (TensorRT targets), or None.
        overwrite: replace an existing export for this target.
        check: raise CheckFailed when a variant fails its checks.
        progress: show a progress bar on stderr.
    """

    run_dir: Path
    cfg: Config
    profile: TargetProfile
    precisions: tuple[Precision, ...]
    input_size: int
    batch: BatchRange
    calib_images: int = 256
    calib_method: CalibMethod = "percentile"
    int8_fallback: bool = True
    parity_images: int = 64
    probe_images: int | None = 5000
    slim: bool = False
    build_engine: bool = False
    no_engine_reason: str | None = None
    overwrite: bool = False
    check: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        if self.calib_images < 1 or self.parity_images < 1:
            raise ExportError("--calibration-images and --parity-images must be >= 1")
        if self.calib_method not in CALIB_METHODS:
            raise ExportError(f"unknown calibration method '{self.calib_method}'; use {', '.join(CALIB_METHODS)}")

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "export" / self.profile.name

    @property
    def tensorrt(self) -> bool:
        return self.profile.runtime == "tensorrt"

    @property
    def openvino(self) -> bool:
        return self.profile.runtime == "openvino"

    @property
    def total_steps(self) -> int:
        """fp32 graph, images, parity per variant, fp16/int8 conversions, probe, bundle; build + parity per engine
        or conversion + parity per OpenVINO IR."""
        n = len(self.precisions)
        return 5 + 2 * (n - 1) + (2 * n if self.build_engine or self.openvino else 0)


def resolve_precisions(requested: str | Sequence[str] | None, profile: TargetProfile) -> tuple[Precision, ...]:
    """The variants to export: fp32 (always, the base of the others) plus the requested ones.

    Args:
        requested: a precision, several, ``all`` (the profile's), or None (the profile's default).
        profile: the target.

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
    return tuple(p for p in PRECISIONS if p == "fp32" or p in wanted)


def load_student(plan: ExportPlan) -> nn.Module:
    """The run's student at the plan's input size, in eval mode.

    Raises:
        ExportError: the patch size does not divide the input size, or the model resizes dynamically.
    """
    name, trained = plan.cfg.model.student, plan.cfg.model.img_size
    student = create_student(name, trained)
    check_input_size(plan.input_size, patch_size(student), name)
    if plan.input_size != trained:
        log.info("creating the student at %d px (trained at %d): position embeddings are resampled in PyTorch",
                 plan.input_size, trained)
        student = create_student(name, plan.input_size)
    load_weights(student, plan.run_dir / STUDENT, role="student")
    if getattr(student, "dynamic_img_size", False):
        raise ExportError(f"{name} was created with dynamic_img_size; export needs a fixed input size")
    return student.eval()
