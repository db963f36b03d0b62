"""The export's data: real images for INT8 calibration, the parity checks and the linear probe."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leapkit.errors import DataError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from leapkit.config import Config


@dataclass
class ExportData:
    """Real images for calibration and parity, and labelled splits for the probe when there are labels."""

    calib: Dataset
    parity: Dataset
    train: Dataset | None
    val: Dataset | None
    source: str
    no_labels: str | None = None  # why there are no labelled splits


def export_data(cfg: Config, img_size: int, mean: Sequence[float], std: Sequence[float]) -> ExportData:
    """The run's data at the export resolution (the embedded digits for demo runs).

    Labelled train/val splits serve calibration (train), parity (val) and the probe; an unlabelled
    image folder with train/ and val/ still serves calibration and parity.

    Raises:
        DataError: the run's data is gone.
    """
    from leapkit.data import ImageFolderDataset, eval_transform, resolve_split
    from leapkit.eval.features import labelled_splits

    sized = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=img_size))
    source = "digits (embedded)" if cfg.data.source == "digits" else str(cfg.data.path)
    try:
        train, val = labelled_splits(sized)
        return ExportData(calib=train, parity=val, train=train, val=val, source=source)
    except DataError as e:
        if cfg.data.source != "folder" or not cfg.data.path or not Path(cfg.data.path).is_dir():
            raise DataError(
                f"the run's data is not available for calibration and parity ({e}); restore the data folder at "
                f"{cfg.data.path}"
            ) from e
        tf = eval_transform(img_size, mean, std)
        root = Path(cfg.data.path)
        calib = ImageFolderDataset(resolve_split(root, "train"), tf)
        parity = ImageFolderDataset(resolve_split(root, "val"), tf)
        return ExportData(calib=calib, parity=parity, train=None, val=None, source=source, no_labels=str(e))


def spread_indices(n_items: int, count: int | None) -> list[int]:
    """``count`` indices spread evenly over ``range(n_items)`` (all of them when count is None)."""
    if count is None or count >= n_items:
        return list(range(n_items))
    return sorted({int(i) for i in np.linspace(0, n_items - 1, count).round()})


def image_batches(ds: Dataset, count: int | None, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(B, 3, H, W) float32 images and (B,) labels over an even spread of ``count`` readable items.

    Raises:
        DataError: no item could be read.
    """
    images: list[np.ndarray] = []
    labels: list[int] = []
    seen = 0
    for i in spread_indices(len(ds), count):
        item = ds[i]
        if item is None:  # unreadable image
            continue
        images.append(item[0].numpy().astype(np.float32))
        labels.append(int(item[1]))
        seen += 1
        if len(images) == batch_size:
            yield np.stack(images), np.asarray(labels)
            images, labels = [], []
    if images:
        yield np.stack(images), np.asarray(labels)
    if not seen:
        raise DataError("no readable images for the export checks; check the run's data folder")


def stack_images(ds: Dataset, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of :func:`image_batches` in one array (for small counts)."""
    parts = list(image_batches(ds, count))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
