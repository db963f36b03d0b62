"""eval.json: the record of a backbone's evaluation (and its teacher's), and its table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from leapkit.records import Record
from leapkit.tables import Table
from leapkit.types import Pool

EVAL = "eval.json"

HEADLINE = (
    ("linear probe top-1 (%)", "linear_probe_top1"),
    ("linear probe top-5 (%)", "linear_probe_top5"),
    ("kNN top-1 (%)", "knn_top1"),
    ("retrieval mAP (%)", "retrieval_map"),
)
"""The metrics the table leads with and the gap is taken of: (label, key)."""


@dataclass
class EvalReport(Record):
    """eval.json: a backbone's linear probe, kNN and retrieval results, in percent.

    ``evaluate_run`` writes the student's results at the top level, the teacher's under
    ``teacher`` and teacher minus student under ``gap``; the closing evaluation of
    ``leapkit distill`` stores the student's alone in summary.json. Keys without a value are left
    out of the file.
    """

    FILE: ClassVar[str] = EVAL

    linear_probe_top1: float
    linear_probe_top5: float
    knn_top1: float
    knn_top5: float
    retrieval_map: float
    n_train: int
    n_val: int
    feature_dim: int
    pool: Pool = "cls"
    revisitop: dict[str, dict[str, Any]] | None = None
    """Dataset name -> easy/medium/hard mAP (percent) and the query count."""
    data: str | None = None
    teacher: EvalReport | None = None
    gap: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}

    def table(self) -> Table:
        """The student's results, with the teacher's and the gap beside them when evaluated."""
        t = self.teacher
        titles = ("metric", "student", "teacher", "gap") if t else ("metric", "student")
        table = Table.of(
            *titles, right=titles[1:],
            title=f"evaluation on {self.n_train} train / {self.n_val} val images ({self.pool} features)",
        )
        rows = [(label, getattr(self, key), getattr(t, key) if t else None) for label, key in HEADLINE]
        for name, r in (self.revisitop or {}).items():
            theirs = (t.revisitop or {}).get(name, {}) if t else {}
            rows += [(f"{name} {p} mAP (%)", r[p], theirs.get(p)) for p in ("easy", "medium", "hard")]
        for label, mine, theirs in rows:
            extra = [f"{theirs:.2f}", f"{theirs - mine:+.2f}"] if t and theirs is not None else ["-", "-"] if t else []
            table.add(label, f"{mine:.2f}", *extra)
        return table
