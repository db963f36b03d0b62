"""Datasets: any folder of images, the ImageFolder layout, and the embedded digits demo.

Unreadable images never crash a worker: the dataset returns an :class:`Unreadable` marker for them
(its index, so that a file skipped every epoch is counted once), the collate function drops them and
reports which it dropped, and the training loop counts them. A folder none of whose files can be read
is refused before training by :meth:`ImageFolderDataset.check_readable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from leapkit.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DIGITS_TRAIN_FRACTION = 0.8
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Unreadable:
    """What a dataset returns for a file it cannot decode: the file's index in the dataset."""

    index: int


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    skipped: int
    unreadable: tuple[int, ...] = ()
    """The dataset indices of the skipped samples, where the dataset said (:class:`Unreadable`)."""


def collate(samples: Sequence[tuple[torch.Tensor, int] | Unreadable | None]) -> Batch:
    """Stack the readable samples and count the unreadable ones (:class:`Unreadable` or None)."""
    good = [s for s in samples if isinstance(s, tuple)]
    skipped = len(samples) - len(good)
    unreadable = tuple(s.index for s in samples if isinstance(s, Unreadable))
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped, unreadable)
    images = torch.stack([s[0] for s in good])
    labels = torch.tensor([s[1] for s in good], dtype=torch.long)
    return Batch(images, labels, skipped, unreadable)


def train_transform(img_size: int, mean, std, crop_scale=(0.32, 1.0), hflip: float = 0.5) -> Callable:
    """RandomResizedCrop + flip, then normalisation (the default for real images)."""
    ops = [T.ToImage(), T.RandomResizedCrop(img_size, scale=tuple(crop_scale), antialias=True)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(ops)


def eval_transform(img_size: int, mean, std, crop_pct: float = 0.875) -> Callable:
    """Resize the short side to img_size / crop_pct, centre-crop, normalise."""
    return T.Compose([
        T.ToImage(),
        T.Resize(int(round(img_size / crop_pct)), antialias=True),
        T.CenterCrop(img_size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
    ])


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted, hidden files excluded)."""
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


class ImageFolderDataset(Dataset):
    """Images under a folder, recursively. Labels come from first-level class folders when present.

    Args:
        root: the folder.
        transform: applied to the RGB PIL image.
        require_labels: raise when the images are not arranged in class folders.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, require_labels: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data folder not found: {self.root}; pass an existing folder of images with --data")
        self.files = list_images(self.root)
        if not self.files:
            kinds = ", ".join(IMAGE_EXTENSIONS[:4])
            raise DataError(f"no images ({kinds}, ...) found under {self.root}; point --data at a folder of images")
        parents = {f.relative_to(self.root).parts[0] for f in self.files if len(f.relative_to(self.root).parts) > 1}
        labelled = all(len(f.relative_to(self.root).parts) > 1 for f in self.files)
        self.classes = sorted(parents) if labelled else []
        if require_labels and len(self.classes) < 2:
            raise DataError(
                f"{self.root} needs at least two class folders (root/<class>/<image>) for evaluation; "
                f"found {len(self.classes)}"
            )
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[f.relative_to(self.root).parts[0]] if self.classes else -1 for f in self.files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, i: int) -> Image.Image:
        with Image.open(self.files[i]) as img:
            img.load()
            return _to_rgb(img)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | Unreadable:
        try:
            img = self._open(i)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            log.debug("skipping unreadable image %s: %s", self.files[i], e)
            return Unreadable(i)
        return (self.transform(img) if self.transform else img), self.labels[i]

    def check_readable(self) -> None:
        """Raise DataError unless at least one file decodes (usually the first: one image is read).

        Raises:
            DataError: no file under the folder is a readable image; the message names the folder.
        """
        first: str | None = None
        for i, path in enumerate(self.files):
            try:
                self._open(i)
                return
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
                first = first or f"{path.name}: {e}"
        raise DataError(
            f"no readable image under {self.root}: none of its {len(self.files)} image files could be read (e.g. "
            f"{first}); replace the corrupt files or point --data at a folder of readable images"
        )


def resolve_split(root: str | Path, split: str) -> Path:
    """``root/split`` when that exists (ImageFolder layout), else ``root`` itself."""
    root = Path(root)
    return root / split if (root / split).is_dir() else root


class DigitsDataset(Dataset):
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), upscaled to RGB ``img_size``.

    A fixed stratified split (80/20, seed 0) separates ``train`` from the held-out ``val`` digits;
    the demo teacher was trained on ``train`` only.
    """

    def __init__(self, split: str, img_size: int, mean, std, augment: bool = False, crop_scale=(0.8, 1.0)):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        idx = np.arange(len(digits.target))
        train_idx, val_idx = train_test_split(
            idx, train_size=DIGITS_TRAIN_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
        )
        chosen = np.sort(train_idx if split == "train" else val_idx)
        images = torch.from_numpy(digits.images[chosen]).float().div(16.0).unsqueeze(1)
        images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
        self.images = images.expand(-1, 3, -1, -1).contiguous()
        self.labels = digits.target[chosen].tolist()
        self.classes = [str(i) for i in range(10)]
        self.normalize = T.Normalize(mean, std)
        crop = T.RandomResizedCrop(img_size, scale=tuple(crop_scale), ratio=(0.9, 1.1), antialias=True)
        self.augment = crop if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.augment is not None:
            x = self.augment(x)
        return self.normalize(x), self.labels[i]
