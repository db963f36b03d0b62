"""The plan's frontier as a PNG: inference GFLOPs (the accuracy proxy) against predicted latency, with the budget.

Each candidate is a point with its range as a horizontal bar, one colour per precision; the budget
is a vertical line. The candidates on the frontier (:func:`leapkit.planning.plan.frontier`) are joined
and named; their labels are stacked so that none overlaps another (:func:`spread`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leapkit.planning.plan import PlanReport, PlanRow, frontier
from leapkit.records import atomic_write_bytes

__all__ = ["draw", "figure", "frontier", "spread"]

COLOURS = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
MARKERS = {"fits": "o", "too close to call": "s", "does not fit": "x"}
LABEL_FONT = 6


def spread(ys: Sequence[float], gap: float, low: float, high: float) -> list[float]:
    """Label positions as near ``ys`` as they can be with at least ``gap`` between neighbours, within [low, high].

    Positions keep the order of ``ys`` (sorted ascending); labels pushed past ``high`` are pulled back down
    as a block, so that the stack stays inside the axes when it fits.
    """
    out: list[float] = []
    for y in ys:
        out.append(max(y, low) if not out else max(y, out[-1] + gap))
    overshoot = (out[-1] - high) if out else 0.0
    if overshoot > 0:
        out = [y - overshoot for y in out]
        for i in range(len(out) - 2, -1, -1):  # pulling down may now crowd the lower labels: push them down too
            out[i] = min(out[i], out[i + 1] - gap)
    return out


def draw(report: PlanReport, path: Path) -> Path:
    """Write the frontier PNG of ``report`` to ``path``."""
    import io

    import matplotlib.pyplot as plt

    fig = figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def figure(report: PlanReport) -> Any:
    """The frontier of ``report`` as a matplotlib figure (Agg), its labels placed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for precision, colour in COLOURS.items():
        mine = [r for r in report.rows if r.precision == precision]
        if not mine:
            continue
        for r in mine:
            low, high = r.predicted_range_ms
            ax.plot([low, high], [r.gflops, r.gflops], color=colour, alpha=0.25, linewidth=2)
            ax.scatter([r.predicted_ms], [r.gflops], color=colour, marker=MARKERS[r.verdict], s=28, zorder=3)
        ax.scatter([], [], color=colour, label=precision)
    best = frontier(report.rows)
    ax.plot([r.predicted_ms for r in best], [r.gflops for r in best], color="grey", linewidth=1, linestyle="--")
    ax.axvline(report.budget_ms, color="tab:red", linewidth=1.5, label=f"budget {report.budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted latency, ms (bar: range)")
    ax.set_ylabel("inference GFLOPs per image")
    kind = "fitted on the device" if report.calibrated else "not fitted on the device"
    ax.set_title(f"leapkit plan: {report.target} ({kind}); o fits, s too close, x does not fit", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    _label(fig, ax, best)
    return fig


def _label(fig: Any, ax: Any, rows: Sequence[PlanRow]) -> None:
    """Name each frontier point with a label left of the axes' right edge, stacked in display space (pixels) so
    that no two labels overlap, joined to its point by a thin line."""
    if not rows:
        return
    fig.canvas.draw()  # fixes the axes' limits and transforms
    to_px = ax.transData.transform
    points = [(r, *to_px((r.predicted_ms, r.gflops))) for r in sorted(rows, key=lambda r: r.gflops)]
    box = ax.get_window_extent()
    gap = LABEL_FONT * fig.dpi / 72 * 1.35  # a line of text and some air, in pixels
    ys = spread([y for _, _, y in points], gap, box.y0 + gap / 2, box.y1 - gap / 2)
    to_data = ax.transData.inverted().transform
    for (r, x, _), ly in zip(points, ys, strict=True):
        lx = min(x + 12, box.x1 - 4)
        ax.annotate(f"{r.student.removeprefix('vit_')} {r.img_size}px {r.precision}", (r.predicted_ms, r.gflops),
                    xytext=tuple(to_data((lx, ly))), textcoords="data", fontsize=LABEL_FONT, va="center",
                    ha="left" if lx + 150 < box.x1 else "right",
                    bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "alpha": 0.7, "edgecolor": "none"},
                    arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 2})
