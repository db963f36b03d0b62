"""The candidate students ``leapkit plan`` weighs: timm ViTs of several widths and depths, sizes and precisions.

Every candidate is a registered timm name (so that ``leapkit distill --student NAME`` builds it) with
standard blocks and a CLS token: widths 192 to 1024, depths 10 to 36, patch 14 (the DINOv2 layout of
the paper's students) and 16. Input sizes are multiples of the patch: grids of 8, 12 and 16 patches a
side, and the training resolution rounded to the patch. Each is planned at every precision the
target runs that the planned runtime's latency model covers (bf16: OpenVINO only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from leapkit.errors import ConfigError
from leapkit.planning.shape import VitShape, of_timm
from leapkit.profiles import TargetProfile
from leapkit.types import Precision, TargetRuntime

STUDENTS: tuple[str, ...] = (
    "vit_tiny_patch14_leapkit",      # 192 x 12, DINOv2 layout (the paper's ViT-T/14)
    "vit_small_patch14_dinov2",      # 384 x 12 (the paper's ViT-S/14)
    "vit_base_patch14_dinov2",       # 768 x 12
    "vit_large_patch14_dinov2",      # 1024 x 24
    "vit_tiny_patch16_224",          # 192 x 12
    "vit_xsmall_patch16_clip_224",   # 256 x 10
    "vit_small_patch16_224",         # 384 x 12
    "vit_small_patch16_36x1_224",    # 384 x 36, deep and narrow
    "vit_medium_patch16_clip_224",   # 512 x 12
    "vit_base_patch16_224",          # 768 x 12
    "vit_base_patch16_plus_240",     # 896 x 12
)
"""The default candidates."""

GRIDS = (8, 12, 16)  # patches a side


@dataclass(frozen=True)
class Candidate:
    """One student at one input size and precision."""

    student: str
    precision: Precision
    shape: VitShape

    @property
    def img_size(self) -> int:
        return self.shape.img_size


def sizes(patch: int, img_size: int | None, teacher_patch: int | None = None) -> list[int]:
    """Input sizes for a patch: 8, 12 and 16 patches a side, and ``img_size`` rounded to the patch.

    With a teacher of another patch size, only sizes both divide (the teacher sees the same images):
    the multiples of their least common multiple up to 16 patches, and ``img_size`` rounded to it.
    """
    step = math.lcm(patch, teacher_patch or patch)
    out = {patch * g for g in GRIDS} if step == patch else set(range(step, 16 * patch + 1, step))
    if img_size:
        out.add(max(step, round(img_size / step) * step))
    return sorted(out)


def modelled_precisions(profile: TargetProfile, runtime: TargetRuntime | None = None) -> tuple[Precision, ...]:
    """The target's precisions the latency model of ``runtime`` (default: the profile's) covers: bf16 with OpenVINO
    only, which runs it as its inference precision hint on the fp32 graph; OpenVINO has no fp16 variant."""
    if (runtime or profile.runtime) == "openvino":
        return tuple(p for p in profile.precisions if p != "fp16")
    return tuple(p for p in profile.precisions if p != "bf16")


def check_precisions(profile: TargetProfile, precisions: Sequence[Precision],
                     runtime: TargetRuntime | None = None) -> tuple[Precision, ...]:
    """``precisions`` (default: the target's that the latency model of ``runtime`` covers), each one the target runs.

    Raises:
        ConfigError: a precision the target does not run, or one the runtime's model does not cover (bf16
            outside OpenVINO).
    """
    chosen_runtime = runtime or profile.runtime
    modelled = modelled_precisions(profile, chosen_runtime)
    chosen = tuple(precisions) or modelled
    uncovered = [p for p in chosen if p in profile.precisions and p not in modelled]
    if uncovered:
        other = ("; bf16 with --runtime openvino" if "bf16" in uncovered and "openvino" in profile.deploy_runtimes
                 else "")
        raise ConfigError(f"the {chosen_runtime} latency model of {profile.name} does not cover "
                          f"{', '.join(uncovered)}; plan or calibrate {', '.join(modelled)}{other}")
    bad = [p for p in chosen if p not in profile.precisions]
    if bad:
        raise ConfigError(f"target {profile.name} does not run {', '.join(bad)}; its precisions are "
                          f"{', '.join(modelled)}")
    return chosen


def candidates(
    profile: TargetProfile,
    students: Sequence[str] = STUDENTS,
    img_sizes: Sequence[int] = (),
    precisions: Sequence[Precision] = (),
    around: int | None = 224,
    teacher_patch: int | None = None,
    runtime: TargetRuntime | None = None,
) -> list[Candidate]:
    """Every student at every size and precision to plan.

    Args:
        profile: the target; its ``input_size`` (when set) is the only size, its precisions the default.
        students: timm names.
        img_sizes: sizes to try; each must be a multiple of a student's patch to apply to it (default:
            :func:`sizes`).
        precisions: default: every precision the target runs that the runtime's model covers.
        around: the training resolution, added (rounded to each patch) to the default sizes.
        teacher_patch: the teacher's patch: default sizes are those both patches divide.
        runtime: the runtime planned for (default: the profile's), for the precisions its model covers.

    Raises:
        ConfigError: a precision the target does not run or the runtime's model does not cover, or no
            student fits any given size.
        ModelError: a name timm does not know, or that is not a plain ViT.
    """
    chosen = check_precisions(profile, precisions, runtime)
    fixed = [profile.input_size] if profile.input_size else list(img_sizes)
    out: list[Candidate] = []
    for name in students:
        patch = of_timm(name, native_size(name)).patch_size
        wanted = [s for s in fixed if s % patch == 0] if fixed else sizes(patch, around, teacher_patch)
        for size in wanted:
            shape = of_timm(name, size)
            out.extend(Candidate(name, p, shape) for p in chosen)
    if not out:
        raise ConfigError(f"no candidate fits the input size(s) {', '.join(map(str, fixed))}: each must be a multiple "
                          f"of a student's patch (14 or 16), e.g. 224")
    return out


def native_size(name: str) -> int:
    """A size the model accepts (to read its patch or parameters from): its default input size."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name.split(".")[0]) if timm.is_model(name.split(".")[0]) else None
    size = getattr(cfg, "input_size", None) if cfg else None
    return int(size[-1]) if size else 224
