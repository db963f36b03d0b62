"""What `leapkit export` is asked to do: every option of an export in one typed request, with its defaults.

The request is the options as given (None: the target's or the run's own); what they resolve to for the
target is :class:`leapkit.deploy.plan.ExportPlan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leapkit.errors import ExportError
from leapkit.types import CALIB_METHODS, CalibMethod


@dataclass(frozen=True)
class ExportRequest:
    """The options of one export, as given; checked when made.

    Args:
        precision: ``fp32``, ``fp16``, ``bf16``, ``int8``, a list of them or ``all``; default: the
            profile's (all of its precisions when it chooses the fastest variant). fp32 is always
            exported: the other variants derive from it. bf16 is an OpenVINO variant (the fp32 IR run
            with the bf16 hint), written where OpenVINO and a CPU with bf16 arithmetic are here.
        overwrite: replace an existing export for this target; what leapkit did not write in it (the device's
            ``results/``) moves to ``RUN/export/<target>.kept-<time>/``.
        calib_images: training images for INT8 calibration.
        calib_method: how INT8 activation ranges are chosen (percentile, entropy or minmax).
        int8_fallback: when the INT8 variant fails its checks, move the blocks that lose the most
            accuracy out of INT8, one at a time, until it passes (False: fail it as it is).
        parity_images: validation images for the parity check.
        probe_images: cap on train images for the linear probe (val capped at half of it);
            None uses all of them.
        batch: the batch the engine is tuned for and accepts at most (default: the profile's).
        input_size: image size to export at (default: the profile's, else the run's).
        slim: simplify the fp32 graph with onnxslim before deriving the variants.
        build_engine: build TensorRT engines here; None builds them when TensorRT and a GPU exist
            and the target's runtime is TensorRT.
        check: raise CheckFailed when a variant fails its checks (after writing everything).
        progress: show a progress bar on stderr.

    Raises:
        ExportError: fewer than one calibration or parity image, an unknown calibration method, a batch below 1.
    """

    precision: str | Sequence[str] | None = None
    overwrite: bool = False
    calib_images: int = 256
    calib_method: CalibMethod = "percentile"
    int8_fallback: bool = True
    parity_images: int = 64
    probe_images: int | None = 5000
    batch: int | None = None
    input_size: int | None = None
    slim: bool = False
    build_engine: bool | None = None
    check: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        if self.calib_images < 1 or self.parity_images < 1:
            raise ExportError("--calibration-images and --parity-images must be >= 1")
        if self.calib_method not in CALIB_METHODS:
            raise ExportError(f"unknown calibration method '{self.calib_method}'; use {', '.join(CALIB_METHODS)}")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"batch must be >= 1, got {self.batch}; pass --batch N")

    @property
    def named(self) -> list[str]:
        """The precisions asked for by name (``all`` included), as a list."""
        return [self.precision] if isinstance(self.precision, str) else list(self.precision or ())
