"""The metrics of a frozen backbone's features: linear probe, kNN and class-as-relevance retrieval mAP.

Protocols (sized for small data, deterministic for a given seed):

- Linear probe: frozen features (CLS token or mean of patch tokens), standardised with the train
  statistics, a linear classifier trained with SGD (momentum 0.9, lr 0.1 per 256 images, cosine
  schedule, batch 256, 100 epochs, at least ``min_steps`` steps), as in the LEAP paper.
- kNN: cosine similarity to the train set, the k = 20 nearest neighbours vote with weight
  exp(sim / 0.07), as in DINO.
- Retrieval: each val image queries the train gallery by cosine similarity; an item is relevant
  when it has the query's class; mean average precision over the queries.

Revisited Oxford/Paris ranks with the same :func:`ranking` (see :mod:`leapkit.eval.revisitop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leapkit.errors import DataError
from leapkit.host import resolve_device
from leapkit.threads import torch_threads


@dataclass(frozen=True)
class ProbeOptions:
    """The linear probe's training protocol (the LEAP paper's by default).

    Args:
        epochs: passes over the train features (the paper's 100).
        batch_size: mini-batch size, capped at the train size.
        lr: learning rate for a batch of 256, scaled linearly with the actual batch.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        min_steps: small train sets get more epochs so that the classifier takes at least this
            many steps.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    min_steps: int = 500


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
    seed: int = 0,
    device: str | torch.device = "cpu",
    options: ProbeOptions | None = None,
) -> dict[str, float]:
    """Train a linear classifier on frozen features; top-1 and top-5 val accuracy in percent.

    Args:
        train_x: (N, D) train features.
        train_y: (N,) train labels.
        val_x: (M, D) val features.
        val_y: (M,) val labels.
        seed: seeds the mini-batch order; the classifier starts at zero, so results are exact
            functions of the seed (on a given device).
        device: where the classifier trains; a GPU pays off from about a million features.
        options: the training protocol; default the paper's (:class:`ProbeOptions`).
    """
    o = options or ProbeOptions()
    _check_labels(train_y, "a linear probe")
    device = resolve_device(device)
    train_x, val_x, train_y = train_x.to(device).float(), val_x.to(device).float(), train_y.to(device)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, vs = (train_x - mean) / std, (val_x - mean) / std
    n, d = xs.shape
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    batch = min(o.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = max(o.epochs * steps_per_epoch, o.min_steps)
    base_lr = o.lr * batch / 256

    weight = torch.zeros(d, num_classes, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    opt = torch.optim.SGD([weight, bias], lr=base_lr, momentum=o.momentum, weight_decay=o.weight_decay)
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


def ranking(query_x: Tensor, gallery_x: Tensor) -> Tensor:
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
        rel = (gallery_y[ranking(qx, gallery_x)] == qy[:, None]).float()
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
    """All three protocols on precomputed features, for an :class:`~leapkit.eval.record.EvalReport`.

    Returns ``linear_probe_top1``, ``linear_probe_top5``, ``knn_top1``, ``knn_top5``,
    ``retrieval_map`` (all percent), ``n_train``, ``n_val`` and ``feature_dim``.
    """
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
