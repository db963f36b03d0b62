"""INT8 activation ranges: calibrated with ONNX Runtime's calibrators on real images, cached in the export folder.

    ranges = calibrate(model, images, "entropy", op_types)          # tensor name -> (lowest, highest)
    cache = CalibrationCache.read(folder / CALIBRATION_CACHE)
    cache.put(key, ranges, ...); cache.write(new_folder / CALIBRATION_CACHE)

Calibration is the slow part of an INT8 export (a ViT-S/14 at 224 px: about 1.5 s per image for
the histogram methods on two CPU cores). The ranges depend only on the graph, the method, the
images and the layout, so they are cached under a key made of those four; a re-export with other
options (precisions, parity images, fallback) or a fallback step reuses them. The cache is a
JSON file of plain numbers, readable by any ONNX Runtime release.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leapkit.runtimes.base import INPUT_NAME, batches
from leapkit.types import CalibMethod

log = logging.getLogger(__name__)

CALIBRATION_CACHE = "calibration_cache.json"
CACHE_FORMAT = 1
MAX_ENTRIES = 8  # the newest entries kept: one per method and image count is the common case

# Each method's settings for ONNX Runtime's calibrators. Entropy uses TensorRT's histogram size (2048
# bins, 128 quantized bins; ONNX Runtime's own default is 128 bins, too coarse for softmax outputs).
METHOD_OPTIONS: dict[CalibMethod, dict[str, Any]] = {
    "minmax": {},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
}
METHOD_WHY: dict[CalibMethod, str] = {
    "minmax": "the extremes of the calibration images: no clipping there, least resolution",
    "percentile": "the 99.999th percentile of each histogram: rare outliers clipped, more resolution",
    "entropy": "the threshold that minimises the KL divergence between the float and the 8-bit histogram "
               "(TensorRT's entropy calibrator)",
}

Range = tuple[np.ndarray, np.ndarray]


def sha256_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def graph_digest(path: Path) -> str:
    """A digest of an ONNX graph's computation: nodes, attributes and weights, without the exporter's metadata.

    torch.export records each node's stack trace (file and line of the model's forward), which changes
    with any edit of those sources while the graph stays the same.
    """
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    model.doc_string = ""
    model.producer_version = ""
    return sha256_bytes(model.SerializeToString(deterministic=True))


def images_digest(images: np.ndarray) -> str:
    """A digest of the calibration images: their shape and float32 bytes."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    return sha256_bytes(repr(x.shape).encode(), x.tobytes())


def reader(images: np.ndarray, batch_size: int) -> Any:
    """Calibration batches for ONNX Runtime's calibrators, one batch at a time (``set_range``)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = batches(images, batch_size)
            self._it: Iterator[np.ndarray] = iter(self.batches)

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    return Reader()


def calibrate(
    model: Path, images: np.ndarray, method: CalibMethod, op_types: Sequence[str], batch_size: int = 8
) -> dict[str, Range]:
    """Activation ranges of the inputs and outputs of ``op_types`` nodes, from ``images``.

    The calibrator keeps the outputs of one batch at a time (a histogram per tensor for percentile
    and entropy), so memory stays bounded by the batch.

    Args:
        model: the (pre-processed) fp32 ONNX graph.
        images: (N, 3, H, W) float32 normalised calibration images.
        method: how a range is read off the collected activations.
        op_types: the op types whose tensors are calibrated.
        batch_size: images per calibration batch.

    Returns:
        Tensor name -> (lowest, highest) as float32 arrays.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="leapkit-calib-") as work:
        calibrator = create_calibrator(
            model, list(op_types), augmented_model_path=str(Path(work) / "augmented.onnx"),
            calibrate_method=methods[method], extra_options=METHOD_OPTIONS[method],
        )
        data = reader(images, batch_size)
        chatter = io.StringIO()  # the histogram calibrators print progress to stdout
        with contextlib.redirect_stdout(chatter):
            for start in range(len(data)):
                data.set_range(start, start + 1)
                calibrator.collect_data(data)
            tensors = calibrator.compute_data()
        if chatter.getvalue():
            log.debug(chatter.getvalue())
        del calibrator
    return {name: (np.asarray(td.range_value[0], np.float32), np.asarray(td.range_value[1], np.float32))
            for name, td in tensors.data.items()}


def tensors_data(ranges: dict[str, Range], method: CalibMethod) -> Any:
    """``ranges`` as ONNX Runtime's ``TensorsData``, what its quantizers take."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    ort_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[method]
    return TensorsData(ort_method, {k: TensorData(lowest=lo, highest=hi) for k, (lo, hi) in ranges.items()})


@dataclass(frozen=True)
class CalibrationKey:
    """What a set of ranges depends on: the graph, the method, the images and the Q/DQ layout."""

    model_sha256: str  # graph_digest of the fp32 graph
    method: CalibMethod
    images: int
    images_sha256: str
    layout: str

    @property
    def id(self) -> str:
        text = json.dumps([self.model_sha256, self.method, self.images, self.images_sha256, self.layout,
                           METHOD_OPTIONS[self.method]], sort_keys=True)
        return sha256_bytes(text.encode())[:16]


@dataclass
class CalibrationCache:
    """The calibration cache of an export folder: one entry of ranges per :class:`CalibrationKey`."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> CalibrationCache:
        """The cache at ``path``; empty when there is none or it cannot be read (a warning says why)."""
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            if data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
                raise ValueError(f"format {data.get('format')!r}, expected {CACHE_FORMAT}")
            return cls(dict(data["entries"]))
        except (OSError, ValueError, AttributeError) as e:
            log.warning("ignoring the calibration cache %s (%s); calibrating again", path, e)
            return cls()

    def get(self, key: CalibrationKey) -> dict[str, Range] | None:
        """The ranges stored under ``key`` (which become the newest entry), or None."""
        entry = self.entries.pop(key.id, None)
        if entry is None:
            return None
        self.entries[key.id] = entry
        return {name: (np.asarray(lo, np.float32), np.asarray(hi, np.float32))
                for name, (lo, hi) in entry["ranges"].items()}

    def put(self, key: CalibrationKey, ranges: dict[str, Range], tool: str) -> None:
        """Add ``ranges`` under ``key``, dropping the oldest entries beyond :data:`MAX_ENTRIES`."""
        self.entries.pop(key.id, None)
        self.entries[key.id] = {
            "model_sha256": key.model_sha256, "method": key.method, "images": key.images,
            "images_sha256": key.images_sha256, "layout": key.layout, "options": METHOD_OPTIONS[key.method],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "tool": tool,
            "ranges": {name: [lo.tolist(), hi.tolist()] for name, (lo, hi) in ranges.items()},
        }
        for old in list(self.entries)[:-MAX_ENTRIES]:  # entries keep the order they were put in
            del self.entries[old]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"format": CACHE_FORMAT, "entries": self.entries}) + "\n")
