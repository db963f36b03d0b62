"""The evaluation stage: a model on two labelled splits, and a run's student and teacher into RUN/eval.json.

The same code serves ``leapkit eval RUN`` and the closing evaluation of ``leapkit distill``. The
teacher is evaluated the same way, so the report shows the student/teacher gap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from leapkit.errors import ModelError
from leapkit.eval.features import extract_features, labelled_splits
from leapkit.eval.metrics import evaluate_features
from leapkit.eval.record import HEADLINE, EvalReport
from leapkit.eval.revisitop import evaluate_revisitop
from leapkit.host import resolve_device
from leapkit.models import create_teacher, normalization
from leapkit.paths import require_writable
from leapkit.run import CONFIG, READ_ONLY_FIX, STUDENT, load_student, read_run_config, resolve_run
from leapkit.types import Pool

log = logging.getLogger(__name__)


def evaluate_model(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    device: str | torch.device = "cpu",
    pool: Pool = "cls",
    batch_size: int = 256,
    seed: int = 0,
    workers: int = 0,
) -> dict[str, Any]:
    """Linear probe, kNN and class-as-relevance retrieval of a frozen backbone.

    Returns ``linear_probe_top1``, ``linear_probe_top5``, ``knn_top1``, ``knn_top5``,
    ``retrieval_map`` (all percent), ``n_train``, ``n_val``, ``feature_dim`` and ``pool``.

    Args:
        model: a timm ViT backbone.
        train_ds: labelled train split (probe training set, kNN bank, retrieval gallery).
        val_ds: labelled val split (probe test set, kNN and retrieval queries).
        device: where the model runs.
        pool: ``cls`` or ``avg`` (mean of the patch tokens).
        batch_size: images per forward pass.
        seed: linear-probe seed.
        workers: DataLoader worker processes for decoding images.
    """
    train_x, train_y = extract_features(model, train_ds, device, batch_size, pool, workers)
    val_x, val_y = extract_features(model, val_ds, device, batch_size, pool, workers)
    return {**evaluate_features(train_x, train_y, val_x, val_y, seed=seed, device=device), "pool": pool}


def evaluate_run(
    run: str | Path | None = None,
    data: str | Path | None = None,
    device: str | torch.device = "cpu",
    teacher: bool = True,
    pool: Pool = "cls",
    revisitop: Sequence[str | Path] = (),
    batch_size: int = 256,
) -> EvalReport:
    """Evaluate a run's student (and its teacher) and write ``RUN/eval.json``.

    The student's results are the top-level keys (``linear_probe_top1``, ``knn_top1``,
    ``retrieval_map`` in percent, ...); the teacher's sit under ``teacher`` and ``gap`` holds
    teacher minus student for the headline keys.

    Args:
        run: the run directory (default ``runs/latest``).
        data: an ImageFolder root with ``train/`` and ``val/``; default: the run's own data.
        device: where the models run (``auto`` picks CUDA when available).
        teacher: evaluate the teacher too.
        pool: ``cls`` or ``avg`` features.
        revisitop: prepared revisitop dataset folders to add Easy/Medium/Hard mAP for.
        batch_size: images per forward pass.
    """
    device = resolve_device(device)
    run_dir = resolve_run(run, need=(CONFIG, STUDENT))
    require_writable(run_dir, "eval.json", READ_ONLY_FIX)  # before the evaluation, not after it
    cfg = read_run_config(run_dir)
    train_ds, val_ds = labelled_splits(cfg, root=data)
    mean, std = normalization(cfg.model.teacher)
    models: dict[str, nn.Module] = {"student": load_student(run_dir)}
    if teacher:
        try:
            m, weights = cfg.model, cfg.model.teacher_weights
            models["teacher"] = create_teacher(m.teacher, m.img_size, weights=weights, pretrained=weights is None)
        except ModelError as e:
            raise ModelError(f"{e}; or skip the teacher with --no-teacher") from e

    # The digits live in memory; image folders are decoded by workers, never more than the CPUs.
    workers = 0 if data is None and cfg.data.source == "digits" else min(cfg.data.workers, os.cpu_count() or 1)
    results: dict[str, EvalReport] = {}
    for role, model in models.items():
        log.info("evaluating the %s on %d train / %d val images", role, len(train_ds), len(val_ds))
        res = EvalReport.from_dict(
            evaluate_model(model, train_ds, val_ds, device, pool, batch_size, seed=cfg.train.seed, workers=workers)
        )
        if revisitop:
            res.revisitop = {}
            for folder in revisitop:
                r = evaluate_revisitop(model, folder, cfg.model.img_size, mean, std, device=device)
                res.revisitop[r.pop("dataset")] = r
        results[role] = res
        models[role] = model.cpu()

    report = results["student"]
    report.data = str(data) if data is not None else (cfg.data.path or cfg.data.source)
    report.teacher = results.get("teacher")
    if report.teacher is not None:
        report.gap = {key: round(getattr(report.teacher, key) - getattr(report, key), 4) for _, key in HEADLINE}
    report.save(folder=run_dir)
    return report
