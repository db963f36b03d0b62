"""Evaluation of a frozen backbone: linear probe, kNN and retrieval mAP on a labelled split.

The same code serves ``leapkit eval RUN`` and the closing summary of ``leapkit distill``. The
teacher is evaluated the same way, so the report shows the student/teacher gap.

Protocols (sized for small data, deterministic for a given seed):

- Linear probe: frozen features (CLS token or mean of patch tokens), standardised with the train
  statistics, a linear classifier trained with SGD (momentum 0.9, lr 0.1 per 256 images, cosine
  schedule, batch 256, 100 epochs, at least ``min_steps`` steps), as in the LEAP paper.
- kNN: cosine similarity to the train set, the k = 20 nearest neighbours vote with weight
  exp(sim / 0.07), as in DINO.
- Retrieval: each val image queries the train gallery by cosine similarity; an item is relevant
  when it has the query's class; mean average precision over the queries.
- Revisited Oxford/Paris (Radenovic et al., 2018): Easy, Medium and Hard mAP on a prepared
  revisitop folder, see :mod:`leapkit.revisitop`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from leapkit.config import Config
from leapkit.devices import resolve_device
from leapkit.errors import DataError, ModelError
from leapkit.records import Record
from leapkit.tables import Table
from leapkit.threads import torch_threads
from leapkit.types import Pool

log = logging.getLogger(__name__)

EVAL = "eval.json"

_HEADLINE = (
    ("linear probe top-1 (%)", "linear_probe_top1"),
    ("linear probe top-5 (%)", "linear_probe_top5"),
    ("kNN top-1 (%)", "knn_top1"),
    ("retrieval mAP (%)", "retrieval_map"),
)


@dataclass
class EvalReport(Record):
    """eval.json: a backbone's linear probe, kNN and retrieval results, in percent.

    ``evaluate_run`` writes the student's results at the top level, the teacher's under
    ``teacher`` and teacher minus student under ``gap``; the closing evaluation of
    ``leapkit distill`` stores the student's alone in summary.json. Keys without a value are left
    out of the file.
    """

    FILE: ClassVar[str] = EVAL

    linear_probe_top1: float
    linear_probe_top5: float
    knn_top1: float
    knn_top5: float
    retrieval_map: float
    n_train: int
    n_val: int
    feature_dim: int
    pool: Pool = "cls"
    revisitop: dict[str, dict[str, Any]] | None = None
    """Dataset name -> easy/medium/hard mAP (percent) and the query count."""
    data: str | None = None
    teacher: EvalReport | None = None
    gap: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}

    def table(self) -> Table:
        """The student's results, with the teacher's and the gap beside them when evaluated."""
        t = self.teacher
        titles = ("metric", "student", "teacher", "gap") if t else ("metric", "student")
        table = Table.of(
            *titles, right=titles[1:],
            title=f"evaluation on {self.n_train} train / {self.n_val} val images ({self.pool} features)",
        )
        rows = [(label, getattr(self, key), getattr(t, key) if t else None) for label, key in _HEADLINE]
        for name, r in (self.revisitop or {}).items():
            theirs = (t.revisitop or {}).get(name, {}) if t else {}
            rows += [(f"{name} {p} mAP (%)", r[p], theirs.get(p)) for p in ("easy", "medium", "hard")]
        for label, mine, theirs in rows:
            extra = [f"{theirs:.2f}", f"{theirs - mine:+.2f}"] if t and theirs is not None else ["-", "-"] if t else []
            table.add(label, f"{mine:.2f}", *extra)
        return table


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


def _check_labels(train_y: Tensor, what: str) -> None:
    if torch.unique(train_y).numel() < 2:
        raise DataError(f"the train split has a single class; {what} needs at least two classes")


def _topk_percent(scores: Tensor, y: Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    hit = (scores.topk(k, dim=1).indices == y[:, None]).any(dim=1)
    return 100.0 * hit.float().mean().item()


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    min_steps: int = 500,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Train a linear classifier on frozen features; top-1 and top-5 val accuracy in percent.

    Args:
        train_x: (N, D) train features.
        train_y: (N,) train labels.
        val_x: (M, D) val features.
        val_y: (M,) val labels.
        epochs: passes over the train features (the paper's 100).
        batch_size: mini-batch size, capped at the train size.
        lr: learning rate for a batch of 256, scaled linearly with the actual batch.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        min_steps: small train sets get more epochs so that the classifier takes at least this
            many steps.
        seed: seeds the mini-batch order; the classifier starts at zero, so results are exact
            functions of the seed (on a given device).
        device: where the classifier trains; a GPU pays off from about a million features.
    """
    _check_labels(train_y, "a linear probe")
    device = resolve_device(device)
    train_x, val_x, train_y = train_x.to(device).float(), val_x.to(device).float(), train_y.to(device)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, vs = (train_x - mean) / std, (val_x - mean) / std
    n, d = xs.shape
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    batch = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = max(epochs * steps_per_epoch, min_steps)
    base_lr = lr * batch / 256

    weight = torch.zeros(d, num_classes, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    opt = torch.optim.SGD([weight, bias], lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    # The probe's matrices are small: with several threads, spin-waits on a busy machine cost
    # more than the arithmetic (seconds instead of milliseconds).
    with torch_threads(1 if device.type == "cpu" else torch.get_num_threads()):
        while step < total:
            order = torch.randperm(n, generator=gen).to(device)
            for idx in order.split(batch):
                if step == total:
                    break
                for group in opt.param_groups:
                    group["lr"] = 0.5 * base_lr * (1 + math.cos(math.pi * step / total))
                loss = F.cross_entropy(xs[idx] @ weight + bias, train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        with torch.no_grad():
            logits = (vs @ weight + bias).cpu()
    return {"top1": _topk_percent(logits, val_y.cpu(), 1), "top5": _topk_percent(logits, val_y.cpu(), 5)}


def knn(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Weighted kNN on cosine similarity (DINO's protocol); top-1 and top-5 accuracy in percent.

    Args:
        train_x: (N, D) train features.
        train_y: (N,) train labels.
        val_x: (M, D) val features.
        val_y: (M,) val labels.
        k: neighbours that vote, capped at the train size.
        temperature: each neighbour votes with weight exp(similarity / temperature).
        device: where the similarities are computed.
    """
    _check_labels(train_y, "kNN")
    device = resolve_device(device)
    bank = F.normalize(train_x.to(device).float(), dim=1)
    bank_y = train_y.to(device)
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    k = min(k, bank.shape[0])
    votes = []
    for q in F.normalize(val_x.to(device).float(), dim=1).split(_rows_per_block(bank.shape[0])):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        scores = torch.zeros(q.shape[0], num_classes, device=device)
        scores.scatter_add_(1, bank_y[idx], (sim / temperature).exp())
        votes.append(scores.cpu())
    scores = torch.cat(votes)
    return {"top1": _topk_percent(scores, val_y, 1), "top5": _topk_percent(scores, val_y, 5)}


def _rows_per_block(columns: int, budget: int = 1 << 24) -> int:
    """Query rows per block so that a (rows, columns) similarity block stays near ``budget`` elements."""
    return max(1, budget // max(columns, 1))


def _ranking(query_x: Tensor, gallery_x: Tensor) -> Tensor:
    """Gallery indices of each query sorted by decreasing cosine similarity (M, N)."""
    sim = F.normalize(query_x.float(), dim=1) @ F.normalize(gallery_x.float(), dim=1).T
    return sim.argsort(dim=1, descending=True, stable=True)


def retrieval_map(
    gallery_x: Tensor,
    gallery_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Class-as-relevance retrieval: mean average precision in percent over the queries.

    Every gallery item of the query's class is relevant. AP is the mean of the precision at the
    rank of each relevant item; queries without a relevant item are left out (and counted).

    Args:
        gallery_x: (N, D) gallery features (the train split).
        gallery_y: (N,) gallery labels.
        query_x: (M, D) query features (the val split).
        query_y: (M,) query labels.
        device: where the similarities are computed.
    """
    device = resolve_device(device)
    gallery_x, gallery_y = gallery_x.to(device), gallery_y.to(device)
    rows = _rows_per_block(gallery_x.shape[0])
    ranks = torch.arange(1, gallery_x.shape[0] + 1, dtype=torch.float32, device=device)
    aps = []
    for qx, qy in zip(query_x.to(device).split(rows), query_y.to(device).split(rows), strict=True):
        rel = (gallery_y[_ranking(qx, gallery_x)] == qy[:, None]).float()
        hits = rel.cumsum(dim=1)
        n_rel = rel.sum(dim=1)
        ap = (rel * hits / ranks).sum(dim=1) / n_rel.clamp_min(1)
        aps.append(ap[n_rel > 0].cpu())
    ap = torch.cat(aps)
    if ap.numel() == 0:
        raise DataError("no query has a relevant gallery item: the val classes do not occur in train/")
    queries = int(ap.numel())
    return {"map": 100.0 * ap.mean().item(), "queries": queries, "skipped_queries": int(query_y.numel()) - queries}


def evaluate_features(
    train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """All three protocols on precomputed features; keys in percent (see :func:`evaluate_model`)."""
    probe = linear_probe(train_x, train_y, val_x, val_y, seed=seed, device=device)
    nn_ = knn(train_x, train_y, val_x, val_y, device=device)
    ret = retrieval_map(train_x, train_y, val_x, val_y, device=device)
    return {
        "linear_probe_top1": round(probe["top1"], 4),
        "linear_probe_top5": round(probe["top5"], 4),
        "knn_top1": round(nn_["top1"], 4),
        "knn_top5": round(nn_["top5"], 4),
        "retrieval_map": round(ret["map"], 4),
        "n_train": int(train_y.numel()),
        "n_val": int(val_y.numel()),
        "feature_dim": int(train_x.shape[1]),
    }


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


# --- a run --------------------------------------------------------------------------------------

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
    from leapkit.models import create_teacher, normalization
    from leapkit.paths import require_writable
    from leapkit.revisitop import evaluate_revisitop
    from leapkit.run import CONFIG, READ_ONLY_FIX, STUDENT, load_student, read_run_config, resolve_run

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
        report.gap = {key: round(getattr(report.teacher, key) - getattr(report, key), 4) for _, key in _HEADLINE}
    report.save(folder=run_dir)
    return report
