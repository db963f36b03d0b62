"""Revisited Oxford and Paris (Radenovic et al., 2018): Easy, Medium and Hard mAP of a backbone.

The ground truth is read from JSON converted once from the official pickles (see
:func:`load_revisitop_gnd`); images are embedded with :func:`leapkit.eval.features.extract_features`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from leapkit.data import READ_ERRORS
from leapkit.errors import DataError
from leapkit.eval.features import extract_features
from leapkit.eval.metrics import ranking

Protocol = Literal["easy", "medium", "hard"]
PROTOCOLS: tuple[Protocol, ...] = ("easy", "medium", "hard")


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
        hint = "prepare the revisitop folder first"
        if pkl.is_file():
            hint = f"convert {pkl.name} to JSON first (see leapkit.eval.revisitop.load_revisitop_gnd)"
        raise DataError(f"revisitop ground truth {path} not found; {hint}")
    try:
        raw = json.loads(path.read_text())
        data = RevisitopGnd(list(raw["imlist"]), list(raw["qimlist"]), list(raw["gnd"]))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(
            f"{path} is not a revisitop ground truth ({type(e).__name__}: {e}); it needs imlist, qimlist and gnd"
        ) from e
    if len(data.gnd) != len(data.qimlist):
        raise DataError(
            f"{path}: {len(data.gnd)} gnd entries for {len(data.qimlist)} queries; re-convert the ground truth"
        )
    n = len(data.imlist)
    for q in data.gnd:
        for key in ("easy", "hard", "junk"):
            if any(not 0 <= int(i) < n for i in q.get(key, [])):
                raise DataError(
                    f"{path}: a '{key}' index is outside the {n} database images; re-convert the ground truth"
                )
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
    order = ranking(query_x, db_x).tolist()
    out = {}
    for protocol in ("easy", "medium", "hard"):
        aps = []
        for ranked, entry in zip(order, gnd.gnd, strict=True):
            pos, ign = revisitop_positives(entry, protocol)
            if pos:  # queries without positives under a protocol do not count
                aps.append(revisitop_ap(ranked, pos, ign))
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
        except READ_ERRORS as e:  # missing, corrupt, or over PIL's pixel limit
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
        raise DataError(
            f"{root} is not a prepared revisitop folder (no gnd_<dataset>.json); "
            f"see leapkit.eval.revisitop.load_revisitop_gnd"
        )
    gnd = load_revisitop_gnd(found[0].with_suffix(".json"))
    tf = eval_transform(img_size, mean, std, crop_pct=1.0)
    boxes = [q["bbx"] for q in gnd.gnd]
    qx, _ = extract_features(model, _RevisitopImages(root, gnd.qimlist, boxes, tf), device, batch_size)
    dx, _ = extract_features(model, _RevisitopImages(root, gnd.imlist, None, tf), device, batch_size)
    return {"dataset": found[0].stem.removeprefix("gnd_"), **revisitop_map(qx, dx, gnd)}
