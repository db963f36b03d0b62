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
  revisitop folder, see :func:`load_revisitop_gnd`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from leapkit.config import Config
from leapkit.errors import DataError, ModelError
from leapkit.models import normalization
from leapkit.threads import torch_threads

log = logging.getLogger(__name__)

EVAL = "eval.json"
Pool = Literal["cls", "avg"]
Protocol = Literal["easy", "medium", "hard"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when available; anything else is passed to torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def labelled_splits(cfg: Config, root: str | Path | None = None) -> tuple[Dataset, Dataset]:
    """The labelled train and val splits a run is evaluated on, without augmentation.

    Args:
        cfg: the run's config; ``data.source`` picks the embedded digits or an ImageFolder root.
        root: an ImageFolder root with ``train/`` and ``val/`` class folders; overrides the config.
    """
    from leapkit.data import DigitsDataset, ImageFolderDataset, eval_transform

    img_size = cfg.model.img_size
    mean, std = normalization(cfg.model.teacher)
    if root is None and cfg.data.source == "digits":
        return DigitsDataset("train", img_size, mean, std), DigitsDataset("val", img_size, mean, std)
    if root is None and cfg.data.path is None:
        raise DataError("the run's config names no data folder (data.path); pass --data DIR, an ImageFolder root with train/ and val/")
    root = Path(root if root is not None else cfg.data.path)
    if not root.is_dir():
        raise DataError(f"evaluation data folder not found: {root}; pass an ImageFolder root with train/ and val/ using --data DIR")
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} has no {' or '.join(m + '/' for m in missing)} folder; evaluation needs root/train/<class>/<image> "
            f"and root/val/<class>/<image>"
        )
    tf = eval_transform(img_size, mean, std)
    train = ImageFolderDataset(root / "train", tf, require_labels=True)
    val = ImageFolderDataset(root / "val", tf, require_labels=True)
    unknown = sorted(set(val.classes) - set(train.classes))
    if unknown:
        raise DataError(f"{root / 'val'} has classes missing from train/: {', '.join(unknown[:5])}; use the same class folders in both splits")
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
    for qx, qy in zip(query_x.to(device).split(rows), query_y.to(device).split(rows)):
        rel = (gallery_y[_ranking(qx, gallery_x)] == qy[:, None]).float()
        hits = rel.cumsum(dim=1)
        n_rel = rel.sum(dim=1)
        ap = (rel * hits / ranks).sum(dim=1) / n_rel.clamp_min(1)
        aps.append(ap[n_rel > 0].cpu())
    ap = torch.cat(aps)
    if ap.numel() == 0:
        raise DataError("no query has a relevant gallery item: the val classes do not occur in train/")
    return {"map": 100.0 * ap.mean().item(), "queries": int(ap.numel()), "skipped_queries": int(query_y.numel() - ap.numel())}


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


# --- revisited Oxford / Paris -------------------------------------------------------------------


@dataclass(frozen=True)
class RevisitopGnd:
    """Ground truth of a revisited dataset: database and query image names, one entry per query."""

    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict[str, Any]]  # bbx [x1, y1, x2, y2], easy, hard, junk (database indices)


def load_revisitop_gnd(path: str | Path) -> RevisitopGnd:
    """Read a revisitop ground truth converted to JSON.

    The official files (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``) are pickles, which leapkit
    never loads: unpickling runs code. Convert the file you downloaded from the official site once,
    yourself, then point leapkit at the folder holding the JSON::

        python -c "import json, pickle; g = pickle.load(open('gnd_roxford5k.pkl', 'rb')); \\
            json.dump(g, open('gnd_roxford5k.json', 'w'), default=lambda o: o.tolist())"

    Args:
        path: ``gnd_<dataset>.json`` with keys ``imlist``, ``qimlist`` and ``gnd``.
    """
    path = Path(path)
    if not path.is_file():
        pkl = path.with_suffix(".pkl")
        hint = f"convert {pkl.name} to JSON first (see leapkit.evaluate.load_revisitop_gnd)" if pkl.is_file() else "prepare the revisitop folder first"
        raise DataError(f"revisitop ground truth {path} not found; {hint}")
    try:
        raw = json.loads(path.read_text())
        data = RevisitopGnd(list(raw["imlist"]), list(raw["qimlist"]), list(raw["gnd"]))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a revisitop ground truth ({type(e).__name__}: {e}); it needs imlist, qimlist and gnd") from e
    if len(data.gnd) != len(data.qimlist):
        raise DataError(f"{path}: {len(data.gnd)} gnd entries for {len(data.qimlist)} queries; re-convert the ground truth")
    n = len(data.imlist)
    for q in data.gnd:
        for key in ("easy", "hard", "junk"):
            if any(not 0 <= int(i) < n for i in q.get(key, [])):
                raise DataError(f"{path}: a '{key}' index is outside the {n} database images; re-convert the ground truth")
    return data


def revisitop_positives(entry: dict[str, Any], protocol: Protocol) -> tuple[list[int], list[int]]:
    """Positive and junk (ignored) database indices of one query under a protocol.

    Easy: easy images are positive, hard ones are ignored. Medium: easy and hard are positive.
    Hard: hard images are positive, easy ones are ignored. Junk is always ignored.
    """
    easy, hard, junk = (list(map(int, entry.get(k, []))) for k in ("easy", "hard", "junk"))
    if protocol == "easy":
        return easy, junk + hard
    if protocol == "medium":
        return easy + hard, junk
    return hard, junk + easy


def revisitop_ap(ranking: Sequence[int], positives: Sequence[int], ignored: Sequence[int]) -> float:
    """Average precision of one ranked database list, the revisitop way (fraction, not percent).

    Ignored images are removed from the ranking. The precision-recall curve is integrated with the
    trapezoid rule between consecutive positives, the convention of the revisitop evaluation.
    """
    pos, ign = set(positives), set(ignored)
    kept = [i for i in ranking if i not in ign]
    ranks = [r for r, i in enumerate(kept) if i in pos]  # 0-based ranks of the positives
    if not pos:
        return float("nan")
    ap = 0.0
    for j, r in enumerate(ranks):
        before = 1.0 if r == 0 else j / r
        after = (j + 1) / (r + 1)
        ap += (before + after) / 2 / len(pos)
    return ap


def revisitop_map(query_x: Tensor, db_x: Tensor, gnd: RevisitopGnd) -> dict[str, float]:
    """Easy, Medium and Hard mAP (percent) of query features against database features.

    Args:
        query_x: (Q, D) features of the cropped queries, in ``gnd.qimlist`` order.
        db_x: (N, D) database features, in ``gnd.imlist`` order.
        gnd: the ground truth.
    """
    order = _ranking(query_x, db_x).tolist()
    out = {}
    for protocol in ("easy", "medium", "hard"):
        aps = []
        for ranking, entry in zip(order, gnd.gnd):
            pos, ign = revisitop_positives(entry, protocol)
            if pos:  # queries without positives under a protocol do not count
                aps.append(revisitop_ap(ranking, pos, ign))
        out[protocol] = 100.0 * sum(aps) / len(aps) if aps else float("nan")
    return out


class _RevisitopImages(Dataset):
    def __init__(self, root: Path, names: list[str], boxes: list[list[float]] | None, transform):
        self.root, self.names, self.boxes, self.transform = root, names, boxes, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[Tensor, int] | None:
        from PIL import Image

        path = self.root / "jpg" / f"{self.names[i]}.jpg"
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except OSError as e:
            raise DataError(f"cannot read revisitop image {path} ({e}); re-download the dataset") from e
        if self.boxes is not None:
            img = img.crop(tuple(int(round(float(v))) for v in self.boxes[i]))
        return self.transform(img), i


def evaluate_revisitop(
    model: nn.Module,
    root: str | Path,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Revisited Oxford/Paris mAP of a backbone's L2-normalised CLS features.

    Queries are cropped to their boxes. Every image is resized (short side) to ``img_size`` and
    centre-cropped, because a timm ViT runs at its configured resolution; the published numbers
    use larger inputs, so compare models with each other, not with the paper.

    Args:
        model: a timm ViT backbone.
        root: a revisitop dataset folder, e.g. ``data/datasets/roxford5k`` holding ``jpg/`` and
            ``gnd_roxford5k.json``.
        img_size: input resolution.
        mean: normalisation mean.
        std: normalisation std.
        device: where the model runs.
        batch_size: images per forward pass.
    """
    from leapkit.data import eval_transform

    root = Path(root)
    found = sorted(root.glob("gnd_*.json")) or sorted(root.glob("gnd_*.pkl"))
    if not root.is_dir() or not found:
        raise DataError(f"{root} is not a prepared revisitop folder (no gnd_<dataset>.json); see leapkit.evaluate.load_revisitop_gnd")
    gnd = load_revisitop_gnd(found[0].with_suffix(".json"))
    tf = eval_transform(img_size, mean, std, crop_pct=1.0)
    boxes = [q["bbx"] for q in gnd.gnd]
    qx, _ = extract_features(model, _RevisitopImages(root, gnd.qimlist, boxes, tf), device, batch_size)
    dx, _ = extract_features(model, _RevisitopImages(root, gnd.imlist, None, tf), device, batch_size)
    return {"dataset": found[0].stem.removeprefix("gnd_"), **revisitop_map(qx, dx, gnd)}


# --- a run --------------------------------------------------------------------------------------

_GAP_KEYS = ("linear_probe_top1", "linear_probe_top5", "knn_top1", "retrieval_map")


def evaluate_run(
    run: str | Path | None = None,
    data: str | Path | None = None,
    device: str | torch.device = "cpu",
    teacher: bool = True,
    pool: Pool = "cls",
    revisitop: Sequence[str | Path] = (),
    batch_size: int = 256,
) -> dict[str, Any]:
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
    from leapkit.models import create_teacher
    from leapkit.run import CONFIG, STUDENT, load_student, read_run_config, resolve_run, write_json

    run_dir = resolve_run(run, need=(CONFIG, STUDENT))
    cfg = read_run_config(run_dir)
    train_ds, val_ds = labelled_splits(cfg, root=data)
    mean, std = normalization(cfg.model.teacher)
    models: dict[str, nn.Module] = {"student": load_student(run_dir)}
    if teacher:
        try:
            models["teacher"] = create_teacher(
                cfg.model.teacher, cfg.model.img_size, weights=cfg.model.teacher_weights, pretrained=cfg.model.teacher_weights is None
            )
        except ModelError as e:
            raise ModelError(f"{e}; or skip the teacher with --no-teacher") from e

    # The digits live in memory; image folders are decoded by workers, never more than the CPUs.
    workers = 0 if data is None and cfg.data.source == "digits" else min(cfg.data.workers, os.cpu_count() or 1)
    results: dict[str, dict[str, Any]] = {}
    for role, model in models.items():
        log.info("evaluating the %s on %d train / %d val images", role, len(train_ds), len(val_ds))
        res = evaluate_model(
            model, train_ds, val_ds, device=device, pool=pool, batch_size=batch_size, seed=cfg.train.seed, workers=workers
        )
        if revisitop:
            res["revisitop"] = {}
            for folder in revisitop:
                r = evaluate_revisitop(model, folder, cfg.model.img_size, mean, std, device=device)
                res["revisitop"][r.pop("dataset")] = r
        results[role] = res
        models[role] = model.cpu()

    out: dict[str, Any] = {**results["student"], "data": str(data) if data is not None else (cfg.data.path or cfg.data.source)}
    if "teacher" in results:
        out["teacher"] = results["teacher"]
        out["gap"] = {k: round(results["teacher"][k] - results["student"][k], 4) for k in _GAP_KEYS}
    write_json(run_dir / EVAL, out)
    return out
