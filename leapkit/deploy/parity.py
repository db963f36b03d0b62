"""Does an exported artefact compute what the PyTorch student computes? Parity, probe accuracy, tolerances.

Two checks decide a variant's status, each against a threshold per precision:

- parity: the worst per-image cosine similarity to PyTorch, over every output, on real images,
  must reach :data:`MIN_COSINE`;
- accuracy: the linear-probe top-1 of its CLS features may fall at most :data:`MAX_TOP1_DROP`
  points below the PyTorch student's.

A variant that misses either is ``failed``; one whose parity could not run stays ``unchecked``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from leapkit.runtimes.base import Outputs, Runner, run_batched
from leapkit.types import Precision, Status

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from leapkit.deploy.export_data import ExportData
    from leapkit.deploy.manifest import Variant

# Worst per-image cosine similarity to PyTorch a variant must reach, for every output. bf16 keeps 8 significant
# bits to fp16's 11, and is held to fp16's thresholds all the same.
MIN_COSINE: dict[Precision, float] = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.999, "int8": 0.98}
# Largest linear-probe top-1 drop (percentage points) against the PyTorch student.
MAX_TOP1_DROP: dict[Precision, float] = {"fp32": 0.5, "fp16": 1.0, "bf16": 1.0, "int8": 3.0}
# The device check (check_outputs.py) allows TOL_FACTOR times what ONNX Runtime deviates on the reference images, and
# at least these floors: (per-image cosine gap, per-token cosine gap, max abs error / the output's RMS). fp32 engines
# are built without TF32, so their floor is true fp32's: GPU kernels sum in another order than ORT's CPU ones.
TOL_FACTOR = 4
TOL_FLOOR: dict[Precision, tuple[float, float, float]] = {
    "fp32": (1e-5, 1e-4, 0.01), "fp16": (1e-3, 5e-3, 0.1), "int8": (2e-2, 5e-2, 0.5),
}
# The probe's top-1 on the engine's CLS features must agree with PyTorch's on this share of the reference images, or
# on as many as ONNX Runtime's variant agrees on, when fewer.
MIN_PROBE_AGREEMENT = 0.99
RIDGE = 1e-2  # the probe's L2 penalty, relative to the number of images


def compare(reference: Outputs, got: Outputs) -> dict[str, dict[str, float]]:
    """Per output: max and mean abs difference, worst and mean per-image cosine similarity."""
    out = {}
    for name, ref in reference.items():
        a = ref.reshape(len(ref), -1).astype(np.float64)
        b = got[name].reshape(len(ref), -1).astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        diff = np.abs(a - b)
        finite = bool(np.isfinite(b).all())
        out[name] = {
            "max_abs": float(diff.max()) if finite else float("inf"),
            "mean_abs": float(diff.mean()) if finite else float("inf"),
            "cosine_min": float(cos.min()) if finite else float("nan"),
            "cosine_mean": float(cos.mean()) if finite else float("nan"),
        }
    return out


def parity_verdict(
    stats: dict[str, dict[str, float]], precision: Precision, images: int, min_cosine: float | None = None
) -> dict[str, Any]:
    """The parity entry of a variant: passed when the worst cosine of every output reaches the threshold.

    Args:
        stats: :func:`compare`'s result.
        precision: picks the threshold from :data:`MIN_COSINE`.
        images: how many images were compared.
        min_cosine: a threshold other than the precision's.
    """
    threshold = MIN_COSINE[precision] if min_cosine is None else min_cosine
    worst = min(s["cosine_min"] for s in stats.values())
    passed = bool(np.isfinite(worst) and worst >= threshold)
    return {"images": images, "min_cosine_required": threshold, "cosine_min": worst, "passed": passed, "outputs": stats}


def accuracy_passed(drop_top1: float, precision: Precision) -> bool:
    """Whether a probe top-1 ``drop_top1`` points below PyTorch's is within :data:`MAX_TOP1_DROP`."""
    return drop_top1 <= MAX_TOP1_DROP[precision]


def check_parity(
    variant: Variant, runner: Runner, reference: Outputs, images: np.ndarray, batch_size: int = 32
) -> None:
    """Run ``images`` through ``runner``, compare with ``reference`` and record the verdict on ``variant``."""
    stats = compare(reference, run_batched(runner, images, batch_size))
    variant.parity = parity_verdict(stats, variant.precision, len(images))
    if variant.parity["passed"]:
        variant.status = "ok"
    else:
        variant.status = "failed"
        variant.notes.append(
            f"parity: worst cosine {variant.parity['cosine_min']:.6f} < {variant.parity['min_cosine_required']}"
        )


def probe_accuracy(
    features: dict[str, tuple[np.ndarray, np.ndarray]], train_y: np.ndarray, val_y: np.ndarray, seed: int
) -> dict[str, dict[str, float]]:
    """Linear-probe top-1/top-5 (percent) of each model's CLS features (name -> (train, val))."""
    import torch

    from leapkit.eval.metrics import linear_probe

    ty, vy = torch.from_numpy(train_y).long(), torch.from_numpy(val_y).long()
    return {
        name: linear_probe(torch.from_numpy(tr).float(), ty, torch.from_numpy(va).float(), vy, seed=seed)
        for name, (tr, va) in features.items()
    }


def _cls_features(
    runners: Mapping[str, Runner], ds: Dataset, count: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from leapkit.deploy.export_data import image_batches

    feats: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    labels = []
    for x, y in image_batches(ds, count):  # streamed: a large split never sits in memory as pixels
        for name, runner in runners.items():
            feats[name].append(runner(x)["cls"])
        labels.append(y)
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(labels)


class Probe:
    """Linear-probe accuracy of CLS features against the PyTorch student's, whose features are computed once.

    Args:
        data: the export's images; the probe needs its labelled splits.
        probe_images: cap on train images (val: half of it); None uses all of them.
        seed: the probe's seed.
        reference: the PyTorch student's runner.
    """

    def __init__(self, data: ExportData, probe_images: int | None, seed: int, reference: Runner) -> None:
        self.data, self.probe_images, self.seed, self.reference = data, probe_images, seed, reference
        self._ref: dict[str, float] | None = None
        self._ref_features: tuple[np.ndarray, np.ndarray] | None = None
        self._labels: tuple[np.ndarray, np.ndarray] | None = None

    def classifier(self) -> tuple[np.ndarray, np.ndarray] | None:
        """A probe for the device check: :func:`ridge_probe` on the PyTorch student's CLS features of the train
        split, once :meth:`judge` has computed them (None before, or without labels)."""
        if self._ref_features is None or self._labels is None:
            return None
        return ridge_probe(self._ref_features[0], self._labels[0])

    @property
    def unavailable(self) -> str | None:
        """Why the probe cannot run, or None."""
        if self.data.train is None or self.data.val is None:
            return f"linear-probe accuracy: the run's data has no labels ({self.data.no_labels})"
        return None

    def judge(self, variants: Sequence[Variant], runners: Mapping[str, Runner]) -> None:
        """Record each variant's probe accuracy (those with a runner under their precision) and fail the ones
        that fall more than :data:`MAX_TOP1_DROP` below PyTorch's."""
        if self.unavailable:
            return
        assert self.data.train is not None and self.data.val is not None
        wanted = {v.precision: runners[v.precision] for v in variants if v.precision in runners}
        if not wanted:
            return
        if self._ref_features is None:
            wanted = {"pytorch": self.reference, **wanted}
        val_cap = None if self.probe_images is None else max(self.probe_images // 2, 1)
        train_f, train_y = _cls_features(wanted, self.data.train, self.probe_images)
        val_f, val_y = _cls_features(wanted, self.data.val, val_cap)
        if self._ref_features is None:
            self._ref_features, self._labels = (train_f.pop("pytorch"), val_f.pop("pytorch")), (train_y, val_y)
            self._ref = probe_accuracy({"pytorch": self._ref_features}, train_y, val_y, self.seed)["pytorch"]
        assert self._ref is not None and self._labels is not None
        train_y, val_y = self._labels
        acc = probe_accuracy({name: (train_f[name], val_f[name]) for name in train_f}, train_y, val_y, self.seed)
        ref = self._ref
        for v in variants:
            if v.precision not in acc:
                continue
            got = acc[v.precision]
            drop = ref["top1"] - got["top1"]
            v.accuracy = {
                "metric": "linear_probe_top1", "top1": round(got["top1"], 3), "top5": round(got["top5"], 3),
                "pytorch_top1": round(ref["top1"], 3), "pytorch_top5": round(ref["top5"], 3),
                "drop_top1": round(drop, 3), "max_drop_top1": MAX_TOP1_DROP[v.precision],
                "n_train": int(len(train_y)), "n_val": int(len(val_y)), "features": "cls",
            }
            if not accuracy_passed(drop, v.precision):
                v.status = "failed"
                v.notes.append(
                    f"accuracy: top-1 {got['top1']:.2f}% is {drop:.2f} points below PyTorch's {ref['top1']:.2f}%"
                )


def check_accuracy(
    variants: Sequence[Variant], runners: Mapping[str, Runner], data: ExportData, probe_images: int | None, seed: int
) -> str | None:
    """Linear-probe accuracy of each variant's CLS features against the PyTorch student's.

    Args:
        variants: the variants to judge; those without a runner in ``runners`` are left alone.
        runners: ``pytorch`` and one runner per precision.
        data: the export's images; the probe needs its labelled splits.
        probe_images: cap on train images (val: half of it); None uses all of them.
        seed: the probe's seed.

    Returns:
        Why the probe did not run, or None when it did.
    """
    probe = Probe(data, probe_images, seed, runners["pytorch"])
    probe.judge(variants, {k: r for k, r in runners.items() if k != "pytorch"})
    return probe.unavailable


def overall_status(variants: Sequence[Variant]) -> Status:
    """``failed`` when any variant failed, else ``unchecked`` when any is unchecked, else ``ok``."""
    statuses = {v.status for v in variants}
    return "failed" if "failed" in statuses else "unchecked" if "unchecked" in statuses else "ok"


def device_tolerances(
    reference: Outputs,
    runners: Mapping[Precision, Runner],
    x: np.ndarray,
    probe: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """What the device check (check_outputs.py) allows per precision, from ONNX Runtime's deviation on ``x``.

    :data:`TOL_FACTOR` times the worst per-image and per-token cosine gap and the largest absolute error
    (over the output's RMS) of the precision's ONNX variant, with the floors of :data:`TOL_FLOOR`; the
    probe's agreement is :data:`MIN_PROBE_AGREEMENT` or what the variant reached, when lower.

    Args:
        reference: the PyTorch outputs of ``x``.
        runners: the ONNX variants that ONNX Runtime could load.
        x: the reference images.
        probe: the linear probe shipped with the bundle, (weight (D, C), bias (C,)).
    """
    from leapkit.deploy.check_outputs import figures

    out: dict[str, dict[str, Any]] = {}
    for prec, (floor_image, floor_token, floor_abs) in TOL_FLOOR.items():
        measured: dict[str, float] | None = None
        agreement = 1.0
        if prec in runners:
            got = run_batched(runners[prec], x)
            figs = [figures(ref.astype(np.float64), got[name].astype(np.float64),
                            float(np.sqrt(np.mean(np.square(ref, dtype=np.float64)))))
                    for name, ref in reference.items()]
            measured = {"cosine_image_min": min(f["cosine_image_min"] for f in figs),
                        "cosine_token_min": min(f["cosine_token_min"] for f in figs),
                        "max_abs_rel": max(f["max_abs_rel"] for f in figs)}
            if probe is not None and "cls" in reference:
                agreement = probe_agreement(probe, reference["cls"], got["cls"])
                measured["probe_agreement"] = agreement
        gap_image = TOL_FACTOR * (1 - measured["cosine_image_min"]) if measured else 0.0
        gap_token = TOL_FACTOR * (1 - measured["cosine_token_min"]) if measured else 0.0
        abs_rel = TOL_FACTOR * measured["max_abs_rel"] if measured else 0.0
        out[prec] = {
            "min_cosine_image": round(1 - max(gap_image, floor_image), 8),
            "min_cosine_token": round(1 - max(gap_token, floor_token), 8),
            "max_abs_rel": round(max(abs_rel, floor_abs), 6),
            "min_probe_agreement": round(min(MIN_PROBE_AGREEMENT, agreement), 6),
            "measured_with_onnxruntime": measured,
        }
    return out


def probe_agreement(probe: tuple[np.ndarray, np.ndarray], ref_cls: np.ndarray, got_cls: np.ndarray) -> float:
    """The share of images whose probe top-1 on ``got_cls`` is the one on ``ref_cls``."""
    weight, bias = (np.asarray(a, np.float64) for a in probe)
    ref = (np.asarray(ref_cls, np.float64) @ weight + bias).argmax(1)
    got = (np.asarray(got_cls, np.float64) @ weight + bias).argmax(1)
    return float((ref == got).mean())


def ridge_probe(features: np.ndarray, labels: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """A linear classifier on CLS features in closed form: ridge regression onto one-hot labels, on standardised
    features, folded back into one (D, C) weight and (C,) bias in float32 (what the bundle ships)."""
    x = np.asarray(features, np.float64)
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-6)
    xs = (x - mean) / std
    onehot = np.eye(int(labels.max()) + 1)[labels.astype(int)]
    target = onehot - onehot.mean(0)
    w = np.linalg.solve(xs.T @ xs + ridge * len(xs) * np.eye(xs.shape[1]), xs.T @ target)
    weight = w / std[:, None]
    bias = onehot.mean(0) - mean @ weight
    return weight.astype(np.float32), bias.astype(np.float32)
