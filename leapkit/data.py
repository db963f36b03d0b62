"""Datasets: any folder of images, the ImageFolder layout, and the embedded digits demo.

Unreadable images never crash a worker: the dataset returns an :class:`Unreadable` marker for them
(its index, so that a file skipped every epoch is counted once), the collate function drops them and
reports which it dropped, and the training loop counts them. A folder none of whose files can be read
is refused before training by :meth:`ImageFolderDataset.check_readable`.

Training images take one of two paths (``data.decode``). ``pil`` decodes the whole image with PIL
and applies torchvision's RandomResizedCrop, flip and normalisation to it. ``fast``
(:class:`CropDecoder`) draws the crop box from the file's header first, so that a JPEG is decoded
at the smallest DCT scale (PIL's ``draft``: 1/2, 1/4, 1/8) that still leaves the crop at least the
output size, and otherwise with libjpeg-turbo straight into a tensor (``torchvision.io.decode_jpeg``);
it hands back uint8 images, and the training loop normalises the batch on its device
(:class:`BatchNormalize`): a quarter of the bytes through the workers' shared memory and pinned
copies, and no per-image float work in the workers. Both draw the box from the same distribution
(area fraction uniform in ``crop_scale``, log aspect ratio uniform in [3/4, 4/3]):
``tests/test_data.py`` compares them; ``benchmarks/data_pipeline.py`` times them.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2 as T

from leapkit.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DIGITS_TRAIN_FRACTION = 0.8
DIGITS_SPLIT_SEED = 0
CROP_RATIO = (3 / 4, 4 / 3)
"""RandomResizedCrop's aspect-ratio range (torchvision's default, Szegedy et al. 2015)."""
DRAFT_SCALES = (8, 4, 2)
"""The reductions libjpeg applies while decoding (in the DCT), the ones PIL's ``draft`` offers."""
MAX_AUTO_WORKERS = 16
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError)
"""What PIL and torchvision raise for a file that is not a readable image (decode_jpeg: RuntimeError), or one
over PIL's pixel limit (twice ``Image.MAX_IMAGE_PIXELS``: a decompression bomb)."""
DecodePath = Literal["fast", "pil"]


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


@dataclass(frozen=True)
class CropBox:
    """A crop in pixels of the full-size image."""

    top: int
    left: int
    height: int
    width: int


def sample_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO
) -> CropBox:
    """RandomResizedCrop's box: area fraction uniform in ``scale``, log aspect ratio uniform in ``ratio``.

    Up to ten draws are tried for a box that fits; after ten misses the box is the centre crop, its
    aspect clamped to ``ratio`` (the rule of Szegedy et al. 2015 that torchvision implements too).
    Draws come from torch's global generator, which the training loop seeds per epoch and the
    loader per worker.
    """
    area, log_lo, log_hi = height * width, math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, ()).item())
            left = int(torch.randint(width - w + 1, ()).item())
            return CropBox(top, left, h, w)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def draft_scale(box: CropBox, out: int) -> int:
    """The largest DCT reduction (8, 4, 2, else 1) that leaves ``box`` at least ``out`` pixels on each side."""
    return next((s for s in DRAFT_SCALES if min(box.height, box.width) >= out * s), 1)


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's frame header, or None when ``data`` is not a JPEG that has one.

    Reads the markers up to the first start-of-frame: about 50 times faster than opening the file with PIL.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0-15, not DHT, JPG, DAC
            height, width = int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            return (height, width, data[i + 9]) if height and width else None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def check_pixels(height: int, width: int, path: Path) -> None:
    """Refuse an image over PIL's limit (twice ``Image.MAX_IMAGE_PIXELS``), as PIL does, before any decoder runs.

    Raises:
        Image.DecompressionBombError: the image has more pixels than the limit (a read error: skipped).
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > 2 * limit:
        raise Image.DecompressionBombError(
            f"{path.name} is {width}x{height} ({height * width} pixels), over PIL's limit of {2 * limit}"
        )


def draft_decode(data: bytes, scale: int) -> tuple[torch.Tensor, int]:
    """A JPEG decoded at 1/``scale`` in libjpeg's DCT (PIL's ``draft``) as (3, H, W) uint8; and the reduction."""
    with Image.open(io.BytesIO(data)) as img:
        width = img.width
        drafted = img.draft("RGB", (img.width // scale, img.height // scale))
        img.load()
        reduction = round(width / drafted[1][2]) if drafted else 1
        return torch.from_numpy(np.array(_to_rgb(img))).permute(2, 0, 1), reduction


class CropDecoder:
    """The fast training path: decode, RandomResizedCrop and flip from a file, as a uint8 (3, out, out) image.

    The box is drawn from the header's size before any pixel is decoded (:func:`sample_crop_box`); a
    JPEG is then decoded at the draft scale of :func:`draft_scale` by PIL when the crop allows a
    reduction, else whole by libjpeg-turbo (``torchvision.io.decode_jpeg``); other formats go through
    PIL. The crop is resized with antialiasing as the ``pil`` path resizes it. Normalisation is left
    to :class:`BatchNormalize` on the training device.

    Args:
        img_size: the output side.
        crop_scale: the crop's area fraction range.
        hflip: the probability of a horizontal flip.
    """

    def __init__(self, img_size: int, crop_scale: tuple[float, float] = (0.32, 1.0), hflip: float = 0.5):
        self.img_size, self.crop_scale, self.hflip = img_size, tuple(crop_scale), hflip

    def box(self, height: int, width: int) -> tuple[CropBox, int]:
        """The crop box in full-size pixels and the draft reduction it allows."""
        box = sample_crop_box(height, width, self.crop_scale)
        return box, draft_scale(box, self.img_size)

    def __call__(self, path: Path) -> torch.Tensor:
        data = path.read_bytes()
        frame = jpeg_frame(data)
        if frame is not None:
            check_pixels(frame[0], frame[1], path)
        if frame is not None and frame[2] in (1, 3):  # a grey or YCbCr JPEG
            box, s = self.box(frame[0], frame[1])
            if s == 1:
                x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            else:
                x, s = draft_decode(data, s)
        else:  # another format, or a CMYK JPEG: PIL reads the size and decodes
            with Image.open(io.BytesIO(data)) as img:
                box, s = self.box(img.height, img.width)[0], 1
                img.load()
                x = torch.from_numpy(np.array(_to_rgb(img))).permute(2, 0, 1)
        top, left, h, w = (round(v / s) for v in (box.top, box.left, box.height, box.width))
        # torchvision's resized_crop without its checks; torch's uint8 antialiased resize is fastest on a
        # channels-last block, the layout both decoders give
        crop = x[None, :, top : top + h, left : left + w].contiguous(memory_format=torch.channels_last)
        x = F.interpolate(crop, size=(self.img_size, self.img_size), mode="bilinear", antialias=True)[0]
        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            x = x.flip(-1)
        return x


class BatchNormalize:
    """Turns a uint8 batch (N, 3, H, W) into the normalised float batch the models take, on its device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = torch.tensor(mean) * 255.0, torch.tensor(std) * 255.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return images.float().sub_(mean).div_(std)


def resolve_workers(workers: int | Literal["auto"]) -> int:
    """Loader worker processes: ``auto`` is this process's share of the CPUs less one for itself (at most 16).

    Under torchrun the CPUs are shared by the node's processes (``LOCAL_WORLD_SIZE``).
    """
    if workers != "auto":
        return int(workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_AUTO_WORKERS, share - 1))


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
        decoder: reads each file itself instead (the fast path: decode, crop and flip in one); its
            uint8 batches are normalised by ``batch_transform`` where the training loop runs.
        batch_transform: what the training loop applies to each batch on its device.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        require_labels: bool = False,
        decoder: CropDecoder | None = None,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.root = Path(root)
        self.decoder, self.batch_transform = decoder, batch_transform
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
            if self.decoder is not None:
                return self.decoder(self.files[i]), self.labels[i]
            img = self._open(i)
        except READ_ERRORS as e:
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
            except READ_ERRORS as e:
                first = first or f"{path.name}: {e}"
        raise DataError(
            f"no readable image under {self.root}: none of its {len(self.files)} image files could be read (e.g. "
            f"{first}); replace the corrupt files or point --data at a folder of readable images"
        )


class EpochSeeded(Dataset):
    """``dataset`` with sample i of an epoch augmented from its own seed, whichever loader worker reads it.

    The epoch's seed lives in shared memory: the training loop sets it (:meth:`set_seed`) before each
    epoch's iteration, and the loader's persistent worker processes read it there. A sample's
    augmentation depends on the seed and its index only: not on the worker count, nor on where an
    interrupted epoch resumed.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.seed = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_seed(self, seed: int) -> None:
        self.seed.fill_(seed % 2**62)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        torch.manual_seed((int(self.seed) * 1_000_003 + i) % 2**63)
        return self.dataset[i]


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


DATA_WAIT_WARN = 0.2
"""The share of an epoch's step time spent waiting for the loader above which training warns (once)."""


@dataclass
class DataWait:
    """Time the training loop waited for the loader, against the time of its steps, over one epoch."""

    wait_s: float = 0.0
    step_s: float = 0.0

    def add(self, wait_s: float, step_s: float) -> None:
        self.wait_s += wait_s
        self.step_s += step_s

    @property
    def frac(self) -> float:
        return self.wait_s / self.step_s if self.step_s > 0 else 0.0


def data_wait_advice(frac: float, epoch: int, workers: int, decode: DecodePath | None) -> str:
    """The warning for an epoch whose steps waited for data more than :data:`DATA_WAIT_WARN` of their time.

    Args:
        frac: the epoch's share of step time spent waiting for the loader.
        epoch: the epoch (from 0).
        workers: the loader workers the run has.
        decode: the training images' decode path, or None where there is no file to decode (digits).
    """
    auto = resolve_workers("auto")
    if workers == 0:
        fix = f"the images are loaded in the training process: give it loader workers (--workers auto: {auto} here)"
    else:
        fix = f"raise --workers ({workers} now; --workers auto: {auto} here, one per CPU less one)"
    if decode == "pil":
        fix += ", and decode with the fast path (--set data.decode=fast)"
    return (
        f"the steps of epoch {epoch + 1} waited for data {frac:.0%} of their time (over {DATA_WAIT_WARN:.0%}): the "
        f"loader, not the model, sets the pace; {fix}"
    )
