"""Revisited Oxford/Paris: average precision, the protocols, the ground truth and the image reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from leapkit.errors import DataError
from leapkit.eval.revisitop import (
    evaluate_revisitop,
    load_revisitop_gnd,
    revisitop_ap,
    revisitop_map,
    revisitop_positives,
)
from leapkit.models import create_student


def test_revisitop_ap_and_protocols():
    # Ignored image 3 leaves [0, 1, 2, 4]; positives 0 and 2 sit at ranks 0 and 2.
    ap = revisitop_ap([3, 0, 1, 2, 4], positives=[0, 2], ignored=[3])
    assert ap == pytest.approx((1 + 1) / 2 / 2 + (1 / 2 + 2 / 3) / 2 / 2)
    entry = {"easy": [1], "hard": [2], "junk": [3]}
    assert revisitop_positives(entry, "easy") == ([1], [3, 2])
    assert revisitop_positives(entry, "medium") == ([1, 2], [3])
    assert revisitop_positives(entry, "hard") == ([2], [3, 1])


def test_revisitop_map_on_a_tiny_ground_truth(tmp_path):
    gnd = {
        "imlist": ["d0", "d1", "d2", "d3"],
        "qimlist": ["q0"],
        "gnd": [{"bbx": [0, 0, 8, 8], "easy": [0], "hard": [2], "junk": [1]}],
    }
    (tmp_path / "gnd_toy.json").write_text(json.dumps(gnd))
    g = load_revisitop_gnd(tmp_path / "gnd_toy.json")
    db = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]])
    res = revisitop_map(torch.tensor([[1.0, 0.05]]), db, g)
    # Ranking d0, d1, d3, d2. Easy: d0 at rank 0 -> 1. Hard: d2 at rank 1 once d0, d1 are ignored.
    assert res["easy"] == pytest.approx(100.0)
    assert res["hard"] == pytest.approx(100 * (0 + 1 / 2) / 2)
    assert res["medium"] == pytest.approx(100 * (1.0 + (1 / 2 + 2 / 3) / 2) / 2)


def test_revisitop_ground_truth_errors(tmp_path):
    (tmp_path / "gnd_roxford5k.pkl").write_bytes(b"not read")
    with pytest.raises(DataError, match="convert gnd_roxford5k.pkl to JSON"):
        load_revisitop_gnd(tmp_path / "gnd_roxford5k.json")
    (tmp_path / "gnd_bad.json").write_text(json.dumps({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [5]}]}))
    with pytest.raises(DataError, match="outside the 1 database images"):
        load_revisitop_gnd(tmp_path / "gnd_bad.json")


def test_evaluate_revisitop_reads_images_and_crops_queries(tmp_path):
    (tmp_path / "jpg").mkdir()
    rng = np.random.default_rng(0)
    for name in ("d0", "d1", "d2", "q0"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "jpg" / f"{name}.jpg")
    query = {"bbx": [2, 2, 30, 30], "easy": [0], "hard": [1], "junk": []}
    gnd = {"imlist": ["d0", "d1", "d2"], "qimlist": ["q0"], "gnd": [query]}
    (tmp_path / "gnd_toy.json").write_text(json.dumps(gnd))
    res = evaluate_revisitop(create_student("leapkit_demo_student", 32), tmp_path, 32, (0.5,) * 3, (0.5,) * 3)
    assert res["dataset"] == "toy" and all(0 <= res[p] <= 100 for p in ("easy", "medium", "hard"))


# --- data ----------------------------------------------------------------------------------------
