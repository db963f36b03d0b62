"""The plan's frontier as a PNG: inference GFLOPs (the accuracy proxy) against predicted latency, with the budget.

Each candidate is a point with its range as a horizontal bar, one colour per precision; the budget
is a vertical line. The candidates on the frontier (no other is both faster and bigger) are joined
and named.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from leapkit.planning.plan import PlanReport, PlanRow
from leapkit.records import atomic_write_bytes

COLOURS = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
MARKERS = {"fits": "o", "too close to call": "s", "does not fit": "x"}


def frontier(rows: Sequence[PlanRow]) -> list[PlanRow]:
    """The rows no other row beats on both latency (lower) and GFLOPs (higher), fastest first."""
    out: list[PlanRow] = []
    for r in sorted(rows, key=lambda r: (r.predicted_ms, -r.gflops)):
        if not out or r.gflops > out[-1].gflops:
            out.append(r)
    return out


def draw(report: PlanReport, path: Path) -> Path:
    """Write the frontier PNG of ``report`` to ``path``."""
    import io

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
    for r in best:
        ax.annotate(f"{r.student.removeprefix('vit_')} {r.img_size}px {r.precision}", (r.predicted_ms, r.gflops),
                    fontsize=6, xytext=(4, 2), textcoords="offset points")
    ax.axvline(report.budget_ms, color="tab:red", linewidth=1.5, label=f"budget {report.budget_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted latency, ms (bar: range)")
    ax.set_ylabel("inference GFLOPs per image")
    kind = "calibrated" if report.calibrated else "not calibrated"
    ax.set_title(f"leapkit plan: {report.target} ({kind}); o fits, s too close, x does not fit", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
