"""export/<target>/manifest.json: what an export holds and the evidence that it is right.

Other tools read this file (``leapkit bench``, the deploy bundle's check script, CI jobs), so its
keys are a contract: ``files`` (name -> sha256), ``input`` (name, shape, dtype, mean, std),
``opset``, ``source_run``, ``leapkit_version``, and one entry per artefact in ``variants`` (an
OpenVINO IR may back two: its fp32 variant and its bf16 one, told apart by ``precision`` and
``inference_precision``, the hint each was checked with). INT8
exports add ``calibration`` (method, images, cache, Q/DQ layout) and ``int8`` (the error per block,
worst first, and the fallback's steps: :class:`leapkit.deploy.int8_report.Int8Report`).

TensorRT bundles add ``reference``, what the device check compares with (:mod:`leapkit.deploy.check_outputs`):
``images`` (how many), ``input_shape``, ``runs`` (name, batch, raw input file, image indices: one trtexec
run each), ``outputs`` (name -> .npy file, shape, RMS), ``probe`` (an .npz with the CLS probe's weight and
bias, or null) and ``tolerance`` (per precision: ``min_cosine_image``, ``min_cosine_token``,
``max_abs_rel``, ``min_probe_agreement``, and what ONNX Runtime measured, ``measured_with_onnxruntime``).
Engines built on the workstation are listed in ``engines`` (GPU, TensorRT version) and never sent to a device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from leapkit.deploy.int8_report import Int8Report
from leapkit.records import Record
from leapkit.types import OpenVINOHint, Precision, Status

MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Variant(Record):
    """One exported artefact and the evidence that it computes what the student computes.

    ``inference_precision`` is set for OpenVINO variants only (and written only there): the precision
    hint the IR runs with, ``f32`` or ``bf16``. ``check`` is set for engines built on this machine only: the
    device check (check_outputs.py) run on them here, every figure and its problems.
    """

    precision: Precision
    format: Literal["onnx", "openvino", "tensorrt"]
    file: str
    size_bytes: int = 0
    status: Status = "unchecked"
    checked_with: str | None = None
    parity: dict[str, Any] | None = None  # see leapkit.deploy.parity.parity_verdict
    accuracy: dict[str, Any] | None = None  # linear-probe top-1 of its CLS features against PyTorch's
    notes: list[str] = field(default_factory=list)
    inference_precision: OpenVINOHint | None = None
    check: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for key in ("inference_precision", "check"):
            if data[key] is None:
                del data[key]
        return data

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def probe_top1(self) -> float | None:
        return None if self.accuracy is None else self.accuracy.get("top1")

    @property
    def pytorch_top1(self) -> float | None:
        return None if self.accuracy is None else self.accuracy.get("pytorch_top1")

    def why_failed(self) -> str:
        return "; ".join(self.notes) or "failed"


@dataclass
class InputSpec(Record):
    name: str
    shape: list[Any]  # ["batch", 3, H, W]
    dtype: str
    mean: list[float]
    std: list[float]
    layout: str = "NCHW"
    preprocessing: str = ""

    @property
    def img_size(self) -> int | None:
        size = self.shape[-1] if len(self.shape) == 4 else None
        return size if isinstance(size, int) else None


@dataclass
class TargetInfo(Record):
    name: str
    family: str
    runtime: str
    precision: str
    tensorrt: str | None = None
    jetpack: str | None = None
    latency_budget_ms: float | None = None


@dataclass
class ExportManifest(Record):
    """The record of one export folder."""

    FILE: ClassVar[str] = MANIFEST

    format_version: int
    leapkit_version: str
    created: str
    status: Status
    source_run: str
    target: TargetInfo
    student: dict[str, Any]
    exporter: str
    opset: int
    input: InputSpec
    outputs: list[dict[str, Any]]
    batch: dict[str, int]
    variants: list[Variant]
    opsets: dict[str, int] = field(default_factory=dict)
    engines: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    int8: Int8Report | None = None  # per-block INT8 error and the fallback's steps
    parity_data: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes

    def variant(self, file: str, precision: str | None = None) -> Variant | None:
        """The entry of ``file`` (an ONNX file, an IR or an engine), when the export recorded it.

        Args:
            file: the file name.
            precision: which of the entries of a file that backs several (the fp32 IR: fp32 and bf16);
                None: the first.
        """
        return next((v for v in self.variants if v.file == file and precision in (None, v.precision)), None)

    def variants_of(self, file: str) -> list[Variant]:
        """Every entry of ``file``: one, or two for the fp32 OpenVINO IR with a bf16 variant."""
        return [v for v in self.variants if v.file == file]

    @property
    def pytorch_top1(self) -> float | None:
        """The PyTorch student's probe top-1 on the export's split (the reference of every variant)."""
        return next((v.pytorch_top1 for v in self.variants if v.pytorch_top1 is not None), None)

    @property
    def passed(self) -> bool:
        return not any(v.failed for v in self.variants)

    def failures(self) -> list[str]:
        """``file (why)`` for each failed variant."""
        return [f"{v.file} ({v.why_failed()})" for v in self.variants if v.failed]

    def record_files(self, folder: Path) -> None:
        """Set ``files`` and ``sizes`` from every file in ``folder`` but the manifest itself."""
        paths = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST]
        self.files = {p.name: sha256(p) for p in paths}
        self.sizes = {p.name: p.stat().st_size for p in paths}
