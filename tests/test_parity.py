"""leapkit.deploy.parity: the pass/fail rule on known inputs, probe accuracy, device-check tolerances.

The thresholds are a contract (README, manifest ``thresholds``): the cases below spell out values
on either side of them rather than recomputing the rule from the constants.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leapkit.deploy.export_data import ExportData
from leapkit.deploy.manifest import Variant
from leapkit.deploy.parity import (
    Probe,
    accuracy_passed,
    check_accuracy,
    check_parity,
    compare,
    device_tolerances,
    overall_status,
    parity_verdict,
    probe_agreement,
    ridge_probe,
)


def stats(*cosines: float) -> dict[str, dict[str, float]]:
    return {f"out{i}": {"max_abs": 0.0, "mean_abs": 0.0, "cosine_min": c, "cosine_mean": c}
            for i, c in enumerate(cosines)}


@pytest.mark.parametrize(
    "precision,cosine,passed",
    [
        ("fp32", 1.0, True), ("fp32", 0.9999, True), ("fp32", 0.99995, True), ("fp32", 0.9998, False),
        ("fp16", 0.9995, True), ("fp16", 0.999, True), ("fp16", 0.998, False), ("fp16", 0.9985, False),
        ("int8", 0.985, True), ("int8", 0.98, True), ("int8", 0.979, False), ("int8", 0.5, False),
        ("fp32", float("nan"), False), ("int8", float("nan"), False),
    ],
)
def test_parity_verdict_on_known_cosines(precision, cosine, passed):
    verdict = parity_verdict(stats(cosine), precision, images=8)
    assert verdict["passed"] is passed
    assert verdict["images"] == 8 and verdict["outputs"] == stats(cosine)


def test_parity_verdict_takes_the_worst_output():
    verdict = parity_verdict(stats(1.0, 0.99999, 0.97), "int8", images=4)
    assert verdict["cosine_min"] == 0.97 and verdict["passed"] is False
    assert verdict["min_cosine_required"] == 0.98
    assert parity_verdict(stats(0.97), "int8", 4, min_cosine=0.95)["passed"] is True


@pytest.mark.parametrize(
    "precision,drop,passed",
    [
        ("fp32", -2.0, True), ("fp32", 0.0, True), ("fp32", 0.5, True), ("fp32", 0.51, False),
        ("fp16", 1.0, True), ("fp16", 1.2, False),
        ("int8", 2.9, True), ("int8", 3.0, True), ("int8", 3.5, False), ("int8", 10.0, False),
    ],
)
def test_accuracy_rule_on_known_drops(precision, drop, passed):
    assert accuracy_passed(drop, precision) is passed


def test_compare_identical_and_non_finite():
    ref = {"cls": np.arange(12, dtype=np.float32).reshape(3, 4) + 1}
    same = compare(ref, {"cls": ref["cls"].copy()})["cls"]
    assert same["max_abs"] == 0.0 and same["cosine_min"] == pytest.approx(1.0)
    broken = compare(ref, {"cls": np.full((3, 4), np.nan, np.float32)})["cls"]
    assert broken["max_abs"] == float("inf") and np.isnan(broken["cosine_min"])
    assert parity_verdict({"cls": broken}, "int8", 3)["passed"] is False


def test_check_parity_marks_the_variant():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 3, 4, 4)).astype(np.float32)
    reference = {"cls": images.reshape(6, -1)}
    good = Variant(precision="fp32", format="onnx", file="model.onnx")
    check_parity(good, lambda x: {"cls": x.reshape(len(x), -1)}, reference, images, batch_size=4)
    assert good.status == "ok" and good.parity["passed"] and good.notes == []
    bad = Variant(precision="fp32", format="onnx", file="model.onnx")
    check_parity(bad, lambda x: {"cls": x.reshape(len(x), -1) + rng.standard_normal((len(x), 48))}, reference, images)
    assert bad.status == "failed" and bad.parity["passed"] is False
    assert bad.notes == [f"parity: worst cosine {bad.parity['cosine_min']:.6f} < 0.9999"]


class Blobs(torch.utils.data.Dataset):
    """Two classes of 3x4x4 images: class c sits at +-1 plus a little noise."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % 2 for i in range(n)]
        self.images = [torch.full((3, 4, 4), 2.0 * c - 1) + 0.3 * torch.randn(3, 4, 4, generator=g)
                       for c in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def test_check_accuracy_fails_a_variant_whose_features_lost_the_classes():
    train, val = Blobs(40, seed=0), Blobs(20, seed=1)
    data = ExportData(calib=train, parity=val, train=train, val=val, source="blobs")
    rng = np.random.default_rng(0)

    def pytorch(x):
        return {"cls": x.reshape(len(x), -1)[:, :8]}

    def close(x):
        return {"cls": pytorch(x)["cls"] + 0.01 * rng.standard_normal((len(x), 8)).astype(np.float32)}

    def noise(x):
        return {"cls": rng.standard_normal((len(x), 8)).astype(np.float32)}

    fp16 = Variant(precision="fp16", format="onnx", file="model_fp16.onnx", status="ok")
    int8 = Variant(precision="int8", format="onnx", file="model_int8.onnx", status="ok")
    engine = Variant(precision="int8", format="tensorrt", file="model_int8.engine", status="ok")
    reason = check_accuracy([fp16, int8], {"pytorch": pytorch, "fp16": close, "int8": noise}, data, probe_images=40,
                            seed=0)
    assert reason is None
    assert fp16.status == "ok" and fp16.accuracy["pytorch_top1"] == 100.0 and fp16.accuracy["drop_top1"] <= 1.0
    assert fp16.accuracy["n_train"] == 40 and fp16.accuracy["n_val"] == 20 and fp16.accuracy["max_drop_top1"] == 1.0
    assert int8.status == "failed" and int8.accuracy["drop_top1"] > 20
    assert int8.notes == [f"accuracy: top-1 {int8.accuracy['top1']:.2f}% is {int8.accuracy['drop_top1']:.2f} points "
                          f"below PyTorch's 100.00%"]
    assert engine.accuracy is None and engine.status == "ok"  # not probed: not in the list
    assert overall_status([fp16, int8]) == "failed"


def test_probe_runs_the_student_once_across_calls():
    """The INT8 fallback judges one graph after another: the PyTorch student's features are computed once."""
    train, val = Blobs(40, seed=0), Blobs(20, seed=1)
    data = ExportData(calib=train, parity=val, train=train, val=val, source="blobs")
    calls = []

    def pytorch(x):
        calls.append(len(x))
        return {"cls": x.reshape(len(x), -1)[:, :8]}

    probe = Probe(data, probe_images=40, seed=0, reference=pytorch)
    assert probe.classifier() is None  # nothing judged yet: no features to fit the bundle's probe on
    first = Variant(precision="int8", format="onnx", file="model_int8.onnx", status="ok")
    second = Variant(precision="int8", format="onnx", file="model_int8.onnx", status="ok")
    probe.judge([first], {"int8": lambda x: {"cls": x.reshape(len(x), -1)[:, :8]}})
    seen = sum(calls)
    probe.judge([second], {"int8": lambda x: {"cls": x.reshape(len(x), -1)[:, :8] + 0.01}})
    assert seen == 60 and sum(calls) == seen  # 40 train + 20 val images, once
    assert first.accuracy["drop_top1"] == 0.0 and second.accuracy["pytorch_top1"] == first.accuracy["pytorch_top1"]
    assert probe.unavailable is None
    weight, bias = probe.classifier()  # the bundle's probe, fit on the train features already computed
    assert weight.shape == (8, 2) and sum(calls) == seen
    val_x = torch.stack(val.images).numpy()
    assert ((pytorch(val_x)["cls"] @ weight + bias).argmax(1) == np.asarray(val.labels)).mean() > 0.9


def test_check_accuracy_needs_labels():
    data = ExportData(calib=[], parity=[], train=None, val=None, source="folder", no_labels="no class folders")
    v = Variant(precision="fp32", format="onnx", file="model.onnx", status="ok")
    reason = check_accuracy([v], {"pytorch": lambda x: x}, data, probe_images=10, seed=0)
    assert reason == "linear-probe accuracy: the run's data has no labels (no class folders)"
    assert v.accuracy is None and v.status == "ok"


def test_overall_status():
    def v(status):
        return Variant(precision="fp32", format="onnx", file="m", status=status)

    assert overall_status([v("ok"), v("ok")]) == "ok"
    assert overall_status([v("ok"), v("unchecked")]) == "unchecked"
    assert overall_status([v("unchecked"), v("failed")]) == "failed"


def test_device_tolerances():
    """Four times what ONNX Runtime's variant deviates, never below the floors; the floors alone where it is exact
    or was not exported."""
    x = np.zeros((1, 3, 4, 4), np.float32)
    v = np.linspace(1, 2, 16)
    reference = {"cls": v[None].astype(np.float32)}
    off = {"cls": v[::-1][None].astype(np.float32)}  # the int8 variant: every value moved
    probe = (np.stack([v - 1.5, 1.5 - v], 1), np.zeros(2))  # class 0 on the reference, 1 on the reversed vector
    tol = device_tolerances(reference, {"fp32": lambda _: reference, "int8": lambda _: off}, x, probe)
    floors = {"min_cosine_image": 0.99999, "min_cosine_token": 0.9999, "max_abs_rel": 0.01,
              "min_probe_agreement": 0.99}
    assert {k: tol["fp32"][k] for k in floors} == floors  # exact: the floors
    assert tol["fp32"]["measured_with_onnxruntime"]["probe_agreement"] == 1.0
    assert tol["fp16"]["measured_with_onnxruntime"] is None and tol["fp16"]["min_cosine_image"] == 0.999
    cos = v @ v[::-1] / (v @ v)
    assert tol["int8"]["min_cosine_image"] == pytest.approx(1 - 4 * (1 - cos), abs=1e-6)
    assert tol["int8"]["min_cosine_token"] == tol["int8"]["min_cosine_image"]  # one token: the same figure
    assert tol["int8"]["max_abs_rel"] == pytest.approx(4 * 1.0 / np.sqrt(np.mean(v**2)), rel=1e-5)
    assert tol["int8"]["min_probe_agreement"] == 0.0  # ONNX Runtime's int8 already disagrees on the only image


def test_ridge_probe_separates_classes_and_folds_the_standardisation():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 5, (3, 8))
    features = centres[labels] + rng.normal(0, 1, (120, 8)) + 100  # an offset the folded bias must absorb
    weight, bias = ridge_probe(features, labels)
    assert weight.shape == (8, 3) and bias.shape == (3,) and weight.dtype == np.float32
    assert ((features @ weight + bias).argmax(1) == labels).mean() > 0.95
    assert probe_agreement((weight, bias), features, features) == 1.0
