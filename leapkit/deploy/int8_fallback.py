"""The INT8 variant of an export: calibrate (or read the cache), quantize, find the blocks that lose accuracy, and
move the worst of them out of INT8 until the variant passes its checks.

    variant, calibration, report = build_int8(plan, judge)

The strict graph quantizes every unit (patch embedding and blocks). When it fails its gate (parity
cosine or probe accuracy) and the fallback is on, the unit that adds the most error
(:func:`leapkit.deploy.int8_blocks.ranked`) loses its Q/DQ pairs, the graph is quantized again from
the same ranges, and judged again; one unit at a time until it passes or no unit is left. The moved
units run in the layout's high precision (fp16 for TensorRT 10+, fp32 on the CPU). Every step's
accuracy and size are recorded in :class:`Int8Report` (the manifest's ``int8``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leapkit.deploy.int8_blocks import block_errors, graph_units
from leapkit.deploy.int8_calibration import METHOD_WHY, CalibrationCache
from leapkit.deploy.int8_report import FallbackStep, Int8Report, ranked
from leapkit.deploy.onnx_int8 import Int8Quantizer, QdqLayout
from leapkit.types import CalibMethod

if TYPE_CHECKING:
    from leapkit.deploy.manifest import Variant
    from leapkit.deploy.progress import Steps

log = logging.getLogger(__name__)

# Images whose block outputs are compared: enough for a ranking, few enough to keep every tensor of a batch.
BLOCK_ERROR_IMAGES = 16

Judge = Callable[[Path, bool], "Variant"]
"""Checks the INT8 file at a path and returns its variant; the flag asks for the probe even when parity failed."""


@dataclass(frozen=True)
class Int8Plan:
    """What the INT8 variant is made from and how hard it is checked.

    Args:
        fp32: the fp32 graph.
        dst: the INT8 graph to write.
        layout: where the Q/DQ pairs go.
        method: the calibration method.
        calib_images: real calibration images (train split).
        cache_from: a calibration cache to reuse (the previous export's), if any.
        cache_to: where the calibration cache of this export goes.
        fallback: move the worst units out of INT8 until the variant passes.
        error_images: real images for the per-block error (val split).
        threads: ONNX Runtime's threads for the per-block error.
    """

    fp32: Path
    dst: Path
    layout: QdqLayout
    method: CalibMethod
    calib_images: np.ndarray
    cache_from: Path | None
    cache_to: Path
    fallback: bool
    error_images: np.ndarray
    threads: int | None = None


def _step(variant: Variant, moved: list[str], info: dict[str, Any]) -> FallbackStep:
    acc = variant.accuracy or {}
    return FallbackStep(
        moved=list(moved), status=variant.status,
        cosine_min=variant.parity["cosine_min"] if variant.parity else None,
        top1=acc.get("top1"), drop_top1=acc.get("drop_top1"), size_bytes=variant.size_bytes,
        quantized_ops=dict(info["quantized_ops"]),
    )


def build_int8(plan: Int8Plan, judge: Judge, steps: Steps | None = None) -> tuple[Variant, dict[str, Any], Int8Report]:
    """Calibrate, quantize and judge the INT8 variant, falling back block by block when it fails.

    Args:
        plan: what to build.
        judge: checks a file (parity, then the probe) and returns its variant.
        steps: the export's progress, to announce the fallback steps.

    Returns:
        The final variant, the manifest's ``calibration`` entry and the manifest's ``int8`` report.
    """
    import onnx

    cache = CalibrationCache.read(plan.cache_from) if plan.cache_from is not None else CalibrationCache()
    with Int8Quantizer(plan.fp32, plan.layout) as quantizer:
        ranges, hit = quantizer.calibrate(plan.calib_images, plan.method, cache)
        cache.write(plan.cache_to)
        info = quantizer.quantize(plan.dst, ranges, plan.method)
        variant = judge(plan.dst, not plan.fallback)
        units = {u.name: u for u in graph_units(onnx.load(str(plan.fp32), load_external_data=False))}
        errors = block_errors(plan.fp32, plan.dst, list(units.values()), plan.error_images, plan.threads)
        history = [_step(variant, [], info)]
        moved: list[str] = []
        strict_notes = list(variant.notes)
        candidates = [e.name for e in ranked(errors) if units[e.name].int8_nodes] if plan.fallback else []
        for name in candidates:
            if not variant.failed:
                break
            moved.append(name)
            if steps is not None:
                steps.step(f"INT8 fallback: moving {', '.join(moved)} out of INT8")
            excluded = [n for m in moved for n in units[m].int8_nodes]
            info = quantizer.quantize(plan.dst, ranges, plan.method, exclude=excluded)
            variant = judge(plan.dst, name == candidates[-1])
            history.append(_step(variant, moved, info))
        if variant.failed and variant.accuracy is None:
            variant = judge(plan.dst, True)  # the exported graph gets its accuracy even when parity failed
            history[-1] = _step(variant, moved, info)
    if moved and not variant.failed and not info["quantized_ops"]:
        variant.status = "failed"
        variant.notes.append(f"INT8 fallback: no INT8 op is left; export {plan.layout.high_precision} instead, or "
                             "calibrate on more images "
                             "(--calibration-images) or with another --calibration method")
        history[-1].status = "failed"
    if moved:
        outcome = "passes" if not variant.failed else "still fails"
        variant.notes.insert(0, (
            f"INT8 fallback: {', '.join(moved)} moved out of INT8 ({plan.layout.high_precision}); the graph "
            f"{outcome} (strict INT8: {'; '.join(strict_notes) or 'failed'})"
        ))
        log.info("INT8 fallback moved %s out of INT8; the variant %s", ", ".join(moved), outcome)
    calibration = {
        "images": int(len(plan.calib_images)), "method": plan.method, "method_why": METHOD_WHY[plan.method],
        "cache": "hit" if hit else "miss", **info,
    }
    report = Int8Report(layout=plan.layout.name, high_precision=plan.layout.high_precision, fallback=plan.fallback,
                        blocks=errors, steps=history, moved=moved)
    return variant, calibration, report
