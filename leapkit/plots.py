"""PNG plots of a run, written into the run directory: curriculum trajectory, training FLOPs, loss.

matplotlib is imported lazily with the non-interactive Agg backend, so plotting works on a
headless machine and ``import leapkit`` stays cheap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from leapkit.errors import MissingDependency, RunError
from leapkit.run import (
    CONFIG,
    CURRICULUM,
    METRICS,
    atomic_write_bytes,
    read_json,
    read_metrics,
    read_run_config,
    resolve_run,
)

log = logging.getLogger(__name__)

Plot = Literal["curriculum", "train_flops", "loss"]
PLOTS: tuple[Plot, ...] = ("curriculum", "train_flops", "loss")
FILES: dict[Plot, str] = {"curriculum": "curriculum.png", "train_flops": "train_flops.png", "loss": "loss.png"}
DPI = 110
_LEVEL_UP_COLOR = "tab:red"
ARROW = " \u2192 "


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise MissingDependency("matplotlib", "plots", "drawing the run's plots") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _records(run_dir: Path) -> list[dict[str, Any]]:
    steps = read_metrics(run_dir)
    if not steps:
        raise RunError(f"{run_dir / METRICS} records no steps; nothing to plot, run `leapkit distill` first")
    return steps


def _curriculum(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CURRICULUM
    return read_json(path) if path.is_file() else {}


def _epoch_axis(ax: Any, steps: Sequence[float], epochs: Sequence[float]) -> None:
    """A secondary x axis on top labelled in epochs (the step -> epoch map is piecewise linear)."""
    import numpy as np

    if len(steps) < 2 or epochs[-1] <= epochs[0]:
        return
    # Extrapolated linearly past both ends: axis margins lie outside the data, and a clamped map
    # would not be invertible there.
    slope, far = epochs[-1] / steps[-1], 1e9
    s = np.asarray([-far, 0.0, *steps, steps[-1] + far])
    e = np.asarray([-far * slope, 0.0, *epochs, epochs[-1] + far * slope])
    top = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, s, e), lambda x: np.interp(x, e, s)))
    top.set_xlabel("epoch")


def _mark_level_ups(ax: Any, level_ups: list[dict[str, Any]], label: bool) -> None:
    for i, ev in enumerate(level_ups):
        ax.axvline(ev["step"], color=_LEVEL_UP_COLOR, linestyle=":", linewidth=1, alpha=0.8,
                   label="level-up" if label and i == 0 else None)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _scale(values: Sequence[float]) -> tuple[float, str]:
    """A power of 1000 and its prefix so that the largest value reads as a small number."""
    top = max((abs(v) for v in values), default=0.0)
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= factor:
            return factor, prefix
    return 1.0, ""


def plot_curriculum(run_dir: Path, out: Path | None = None) -> Path:
    """Target block (top) and per-step CKA with its EMA (bottom) against the step, level-ups marked.

    Args:
        run_dir: a run directory holding metrics.jsonl (and curriculum.json for the level-ups).
        out: the PNG to write; default ``RUN/curriculum.png``.
    """
    plt = _pyplot()
    recs, cur = _records(run_dir), _curriculum(run_dir)
    step = [r["step"] for r in recs]
    level_ups = cur.get("level_ups", [])
    num_blocks = int(cur.get("num_blocks") or max(r["target_block"] for r in recs))
    cfg = read_run_config(run_dir)
    metric = "CKA" if cfg.curriculum.metric == "cka" else "cosine"

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 5.6), height_ratios=(1, 1.3), constrained_layout=True
    )
    top.plot(step, [r["target_block"] for r in recs], drawstyle="steps-pre", color="tab:blue", linewidth=2,
             label="target block")
    top.set_ylim(0.5, num_blocks + 0.5)
    top.set_yticks(range(1, num_blocks + 1, max(1, math.ceil(num_blocks / 12))))
    top.set_ylabel(f"teacher block (of {num_blocks})")
    scan = cur.get("calibration") or {}  # curriculum.json's key for the start-block scan
    start = scan.get("start_block") if scan.get("scores") else None
    mode = cur.get("mode", cfg.curriculum.mode)
    for ev in level_ups:
        top.annotate(f"{ev['from_block']}{ARROW.strip()}{ev['to_block']}", (ev["step"], ev["to_block"]),
                     textcoords="offset points", xytext=(3, 3), fontsize=7, color=_LEVEL_UP_COLOR)
    _mark_level_ups(top, level_ups, label=True)
    top.legend(loc="lower right", fontsize=8)
    if mode != "baseline":
        visited = ARROW.join(map(str, cur.get("blocks_visited", []))) or "-"
        picked = f" (the start-block scan picked block {start})" if start is not None else ""
        title = f"{'LEAP' if mode == 'leap' else mode} curriculum: blocks {visited}{picked}"
    else:
        title = f"fixed-target baseline: block {num_blocks} every step ({metric} logged for monitoring only)"
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)

    alpha = float(cur.get("ema_alpha", cfg.curriculum.ema_alpha))
    key = cfg.curriculum.metric
    scores = [r.get(key, r.get("cka")) for r in recs]
    if alpha < 1:
        ema = [r.get(f"ema_{key}", r.get("ema_cka")) for r in recs]
        bottom.plot(step, scores, color="tab:gray", alpha=0.45, linewidth=0.8, label=f"{metric} per step")
        bottom.plot(step, ema, color="tab:green", linewidth=1.6, label=f"EMA (alpha {alpha:g})")
    else:
        bottom.plot(step, scores, color="tab:green", linewidth=1.4,
                    label=f"{metric} per step (EMA alpha 1: unsmoothed)")
    if mode == "leap":
        threshold = cfg.curriculum.threshold
        bottom.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    _mark_level_ups(bottom, level_ups, label=False)
    bottom.set_xlabel("optimizer step")
    bottom.set_ylabel(f"{metric} (projected student vs target)")
    bottom.legend(loc="lower right", fontsize=8)
    bottom.grid(alpha=0.3)
    _epoch_axis(top, step, [r["epoch"] for r in recs])
    return _save(fig, plt, out or run_dir / FILES["curriculum"])


def plot_train_flops(run_dir: Path, out: Path | None = None) -> Path:
    """Cumulative training FLOPs of the run against the fixed-target baseline, step by step.

    Args:
        run_dir: a run directory holding metrics.jsonl and config.yaml.
        out: the PNG to write; default ``RUN/train_flops.png``.
    """
    from leapkit.flops import cumulative_train_flops

    plt = _pyplot()
    curves = cumulative_train_flops(run_dir)
    cur = _curriculum(run_dir)
    mode = cur.get("mode", "leap")
    factor, prefix = _scale(curves["baseline"] + curves["run"])
    step = curves["step"]
    run_y = [v / factor for v in curves["run"]]  # includes the start-block scan from the first step
    base_y = [v / factor for v in curves["baseline"]]

    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    ax.plot(step, base_y, color="tab:orange", linewidth=1.8, linestyle="--",
            label="fixed-target baseline (all blocks every step)")
    ax.plot(step, run_y, color="tab:blue", linewidth=2, label=f"this run ({mode}, as executed)")
    below = [r < b for r, b in zip(run_y, base_y, strict=True)]
    if mode != "baseline" and any(below):
        ax.fill_between(step, run_y, base_y, where=below, color="tab:blue", alpha=0.12, label="saved")
    _mark_level_ups(ax, cur.get("level_ups", []), label=True)
    if mode == "baseline":
        verdict = "this run is the baseline"
    else:
        saving = 100.0 * (1 - curves["run"][-1] / curves["baseline"][-1])
        verdict = f"{saving:.1f}% fewer than the baseline" if saving >= 0 else f"{-saving:.1f}% more than the baseline"
    ax.set_title(f"cumulative training FLOPs: {run_y[-1]:.3g} vs {base_y[-1]:.3g} {prefix}FLOPs ({verdict})",
                 fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{prefix}FLOPs (2 x MACs)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, plt, out or run_dir / FILES["train_flops"])


def plot_loss(run_dir: Path, out: Path | None = None) -> Path:
    """Distillation loss against the step (log scale, with a moving average), level-ups marked.

    The loss jumps at a level-up because the target changes; the marks make that visible.

    Args:
        run_dir: a run directory holding metrics.jsonl.
        out: the PNG to write; default ``RUN/loss.png``.
    """
    plt = _pyplot()
    recs, cur = _records(run_dir), _curriculum(run_dir)
    step, loss = [r["step"] for r in recs], [r["loss"] for r in recs]
    window = max(1, len(recs) // 50)

    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    if window > 1:
        ax.plot(step, loss, color="tab:gray", alpha=0.4, linewidth=0.8, label="loss per step")
        ax.plot(step, _smooth(loss, window), color="tab:purple", linewidth=1.8,
                label=f"moving average ({window} steps)")
    else:
        ax.plot(step, loss, color="tab:purple", linewidth=1.6, label="loss per step")
    _mark_level_ups(ax, cur.get("level_ups", []), label=True)
    if min(loss) > 0:
        ax.set_yscale("log")
    ax.set_title(f"distillation loss (MSE to the target block; final {loss[-1]:.4g})", fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _epoch_axis(ax, step, [r["epoch"] for r in recs])
    return _save(fig, plt, out or run_dir / FILES["loss"])


def _save(fig: Any, plt: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    log.debug("wrote %s", path)
    return path


_DRAW = {"curriculum": plot_curriculum, "train_flops": plot_train_flops, "loss": plot_loss}


def plot_run(run: str | Path | None = None, which: Sequence[Plot] = PLOTS) -> dict[Plot, Path]:
    """Draw the run's plots into its directory and return their paths.

    Args:
        run: the run directory (default ``runs/latest``).
        which: the plots to draw, a subset of ``curriculum``, ``train_flops``, ``loss``.
    """
    unknown = [w for w in which if w not in _DRAW]
    if unknown:
        raise ValueError(f"unknown plot(s) {unknown}; known: {', '.join(PLOTS)}")
    run_dir = resolve_run(run, need=(CONFIG, METRICS))
    return {name: _DRAW[name](run_dir) for name in which}
