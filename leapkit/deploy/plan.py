"""What an export will do, validated before anything is written: run, target, runtimes, precisions, sizes, checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.config import name_problem
from leapkit.deploy.onnx_graph import FILE_NAMES, check_input_size, patch_size
from leapkit.deploy.openvino_ir import OPENVINO_FILES, OWN_IR
from leapkit.deploy.request import ExportRequest
from leapkit.errors import ExportError
from leapkit.host import cpu_bf16
from leapkit.run import load_student
from leapkit.runtimes.openvino_runner import import_openvino, openvino_installed
from leapkit.trtexec.flags import BatchRange
from leapkit.types import PRECISIONS, Precision, TargetRuntime

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
        precisions: the variants, fp32 first (the others derive from it); bf16 only as an OpenVINO variant.
        input_size: image size of the graph.
        batch: the batch range engines accept and are tuned for.
        request: the options as given (images, INT8 method and fallback, slim, overwrite, check, progress).
        build_engine: build TensorRT engines here.
        no_engine_reason: why engines cannot be built here (TensorRT targets), or None.
        runtimes: the target's runtimes this export writes for (those installed here); empty: the profile's
            ``runtime``.
    """

    run_dir: Path
    cfg: Config
    profile: TargetProfile
    precisions: tuple[Precision, ...]
    input_size: int
    batch: BatchRange
    request: ExportRequest = ExportRequest()
    build_engine: bool = False
    no_engine_reason: str | None = None
    runtimes: tuple[TargetRuntime, ...] = ()

    def __post_init__(self) -> None:
        wrong = name_problem(self.profile.name, "target name")  # a profile built in Python skips load_target's check
        if wrong:
            raise ExportError(f"{wrong}; it names the export folder RUN/export/<name>/")

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "export" / self.profile.name

    @property
    def tensorrt(self) -> bool:
        return self.profile.runtime == "tensorrt"

    @property
    def openvino(self) -> bool:
        return "openvino" in (self.runtimes or (self.profile.runtime,))

    @property
    def onnx_precisions(self) -> tuple[Precision, ...]:
        """The precisions with an ONNX graph of their own (bf16 runs the fp32 graph in OpenVINO)."""
        return tuple(p for p in self.precisions if p in FILE_NAMES)

    @property
    def openvino_precisions(self) -> tuple[Precision, ...]:
        """The precisions with an OpenVINO variant (none unless the export writes for OpenVINO)."""
        return tuple(p for p in self.precisions if p in OPENVINO_FILES) if self.openvino else ()

    @property
    def total_steps(self) -> int:
        """fp32 graph, images, parity per variant, fp16/int8 conversions, probe, bundle; build + parity per engine;
        conversion (fp32 and int8 only) + parity per OpenVINO variant."""
        n = len(self.onnx_precisions)
        engines = 2 * n if self.build_engine else 0
        irs = sum(2 if p in OWN_IR else 1 for p in self.openvino_precisions)
        return 5 + 2 * (n - 1) + engines + irs


def resolve_precisions(requested: str | Sequence[str] | None, profile: TargetProfile) -> tuple[Precision, ...]:
    """The variants to export: fp32 (always, the base of the others) plus the requested ones.

    Args:
        requested: a precision, several, ``all`` (the profile's), or None (the profile's default: its
            ``precision``, or all of ``precisions`` when it chooses the fastest variant).
        profile: the target.

    Raises:
        ExportError: a precision is unknown or not among those the target's runtime takes.
    """
    if requested is None:
        wanted = list(profile.precisions) if profile.choose == "fastest" else [profile.precision]
    else:
        wanted = [requested] if isinstance(requested, str) else list(requested)
        if "all" in wanted:
            wanted = list(profile.precisions)
    unknown = [p for p in wanted if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown precision '{unknown[0]}'; use {', '.join(PRECISIONS)} or all")
    refused = [p for p in wanted if p not in profile.precisions]
    if refused:
        runtimes = profile.deploy_runtimes
        which = f"runtime {runtimes[0]} takes" if len(runtimes) == 1 else f"runtimes {', '.join(runtimes)} take"
        raise ExportError(
            f"precision {refused[0]} is not available for target {profile.name} ({which} "
            f"{', '.join(profile.precisions)}); pick one of those or --precision all"
        )
    return tuple(p for p in PRECISIONS if p == "fp32" or p in wanted)


def resolve_runtimes(
    profile: TargetProfile, precisions: tuple[Precision, ...], bf16_named: bool = False
) -> tuple[tuple[TargetRuntime, ...], tuple[Precision, ...]]:
    """The target's runtimes to export for here, and the precisions they take.

    The profile's ``runtime`` is required; another of its ``runtimes`` (OpenVINO) that is not
    installed is left out with one log line. bf16 is the fp32 OpenVINO IR run with the bf16 hint, so
    it needs OpenVINO and a CPU with bf16 arithmetic to check its parity on: named in ``--precision``
    it is refused without them, otherwise left out with one log line.

    Args:
        profile: the target.
        precisions: :func:`resolve_precisions`' result.
        bf16_named: bf16 was asked for by name (not through ``all`` or the profile's default).

    Raises:
        MissingDependency: openvino is not installed and the profile's runtime is openvino, or bf16 was named.
        ExportError: bf16 was named and this CPU has no bf16 arithmetic.
    """
    runtimes: list[TargetRuntime] = []
    for runtime in profile.deploy_runtimes:
        if runtime == "openvino" and not openvino_installed():
            if runtime == profile.runtime:
                import_openvino(f"exporting for {profile.name} (runtime openvino)")
            if bf16_named and "bf16" in precisions:
                import_openvino("--precision bf16 (the fp32 OpenVINO IR with the bf16 hint)")
            others = ", ".join(r for r in profile.deploy_runtimes if r != "openvino")
            precisions = tuple(p for p in precisions if p != "bf16")
            log.info("openvino is not installed: exporting for %s only (%s; no OpenVINO IRs, no bf16); "
                     "pip install 'leapkit[openvino]' adds them", others, ", ".join(precisions))
            continue
        runtimes.append(runtime)
    if "bf16" in precisions and "openvino" in runtimes and cpu_bf16() is None:
        why = ("this CPU has no bf16 arithmetic (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo): OpenVINO would "
               "run bf16 in fp32, so its parity cannot be checked here")
        if bf16_named:
            raise ExportError(f"--precision bf16: {why}; export bf16 on a CPU that has it (the target itself)")
        log.info("bf16 left out: %s", why)
        precisions = tuple(p for p in precisions if p != "bf16")
    return tuple(runtimes), precisions


def export_student(plan: ExportPlan) -> nn.Module:
    """The run's student (:func:`leapkit.run.load_student`) at the plan's input size, checked for export.

    Raises:
        ExportError: the patch size does not divide the input size, or the model resizes dynamically.
    """
    name = plan.cfg.model.student
    student = load_student(plan.run_dir)
    check_input_size(plan.input_size, patch_size(student), name)
    if plan.input_size != plan.cfg.model.img_size:
        student = load_student(plan.run_dir, img_size=plan.input_size)
    if getattr(student, "dynamic_img_size", False):
        raise ExportError(f"{name} was created with dynamic_img_size; export needs a fixed input size")
    return student
