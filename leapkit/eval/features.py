"""Frozen features of a backbone, and the labelled train/val splits a run is evaluated on."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from leapkit.config import Config
from leapkit.errors import DataError, ModelError
from leapkit.host import resolve_device
from leapkit.types import Pool

log = logging.getLogger(__name__)


def labelled_splits(cfg: Config, root: str | Path | None = None) -> tuple[Dataset, Dataset]:
    """The labelled train and val splits a run is evaluated on, without augmentation.

    Args:
        cfg: the run's config; ``data.source`` picks the embedded digits or an ImageFolder root.
        root: an ImageFolder root with ``train/`` and ``val/`` class folders; overrides the config.
    """
    from leapkit.data import DigitsDataset, ImageFolderDataset, eval_transform
    from leapkit.models import normalization

    img_size = cfg.model.img_size
    mean, std = normalization(cfg.model.teacher)
    if root is None and cfg.data.source == "digits":
        return DigitsDataset("train", img_size, mean, std), DigitsDataset("val", img_size, mean, std)
    if root is None and cfg.data.path is None:
        raise DataError(
            "the run's config names no data folder (data.path); "
            "pass --data DIR, an ImageFolder root with train/ and val/"
        )
    root = Path(root if root is not None else cfg.data.path)
    if not root.is_dir():
        raise DataError(
            f"evaluation data folder not found: {root}; pass an ImageFolder root with train/ and val/ using --data DIR"
        )
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} has no {' or '.join(m + '/' for m in missing)} folder; "
            f"evaluation needs root/train/<class>/<image> "
            f"and root/val/<class>/<image>"
        )
    tf = eval_transform(img_size, mean, std)
    train = ImageFolderDataset(root / "train", tf, require_labels=True)
    val = ImageFolderDataset(root / "val", tf, require_labels=True)
    unknown = sorted(set(val.classes) - set(train.classes))
    if unknown:
        raise DataError(
            f"{root / 'val'} has classes missing from train/: {', '.join(unknown[:5])}; "
            f"use the same class folders in both splits"
        )
    # Index val labels by the train class list so that both splits share one label space.
    index = {c: i for i, c in enumerate(train.classes)}
    val.labels = [index[val.classes[y]] for y in val.labels]
    val.classes = list(train.classes)
    return train, val


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    dataset: Dataset,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    pool: Pool = "cls",
    workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """Frozen features of every readable image: (N, D) float32 and (N,) labels, on the CPU.

    Args:
        model: a timm ViT; its ``forward_features`` gives (B, prefix + N, D) final-normalised tokens.
        dataset: yields (image tensor, label); unreadable items (None) are skipped and counted.
        device: where the model runs.
        batch_size: images per forward pass.
        pool: ``cls`` for the CLS token, ``avg`` for the mean of the patch tokens.
        workers: DataLoader worker processes.
    """
    from leapkit.data import collate

    prefix = int(getattr(model, "num_prefix_tokens", 1))
    if pool == "cls" and getattr(model, "cls_token", None) is None:
        raise ModelError(f"{type(model).__name__} has no CLS token; evaluate with pool='avg' (--pool avg)")
    device = resolve_device(device)
    was_training = model.training
    model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    feats, labels, skipped = [], [], 0
    for batch in loader:
        skipped += batch.skipped
        if batch.images.numel() == 0:
            continue
        tokens = model.forward_features(batch.images.to(device, non_blocking=True))
        pooled = tokens[:, 0] if pool == "cls" else tokens[:, prefix:].mean(dim=1)
        feats.append(pooled.float().cpu())
        labels.append(batch.labels)
    model.train(was_training)
    if skipped:
        log.warning("skipped %d unreadable images during feature extraction", skipped)
    if not feats:
        raise DataError("no readable images to evaluate on; check the evaluation folder")
    return torch.cat(feats), torch.cat(labels)
