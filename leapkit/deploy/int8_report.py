"""The record of an INT8 export's diagnosis: the error each block adds, and the fallback's steps.

These are the manifest's ``int8`` entry and the tables the bundle README and the run report show
(:meth:`Int8Report.blocks_table`, :meth:`Int8Report.steps_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from leapkit.records import Record
from leapkit.tables import Table, human_size
from leapkit.types import Status


@dataclass
class BlockError(Record):
    """How far one unit's output (or a final output) of the INT8 graph is from the fp32 graph's.

    Args:
        name: the unit (``blocks.3``) or the final output (``cls``).
        tensor: the ONNX tensor compared.
        cosine_min: the worst per-image cosine similarity.
        cosine_mean: the mean per-image cosine similarity.
        rel_l2: the mean per-image ``|int8 - fp32| / |fp32|``.
        added: the rise of ``1 - cosine_mean`` over the unit before (the unit's own share); None for final outputs.
        images: how many images were compared.
    """

    name: str
    tensor: str
    cosine_min: float
    cosine_mean: float
    rel_l2: float
    added: float | None
    images: int

    @property
    def final(self) -> bool:
        return self.added is None


def ranked(errors: Sequence[BlockError]) -> list[BlockError]:
    """The units, the one that adds the most error first."""
    return sorted((e for e in errors if not e.final), key=lambda e: e.added or 0.0, reverse=True)


def block_error_table(errors: Sequence[BlockError], moved: Sequence[str] = (), title: str = "") -> Table:
    """The per-block error table, worst first, then the final outputs.

    Args:
        errors: :func:`block_errors`' result (for the strict INT8 graph).
        moved: the units the fallback moved out of INT8 (marked in the table).
        title: a title above the table.
    """
    table = Table.of(
        "rank", "unit", "tensor", "worst cos", "mean cos", "rel. L2", "added 1-cos", "INT8",
        title=title, caption=f"fp32 vs INT8 graph on {errors[0].images if errors else 0} images, ONNX Runtime",
        right=("rank", "worst cos", "mean cos", "rel. L2", "added 1-cos"),
    )
    for k, e in enumerate(ranked(errors), 1):
        table.add(str(k), e.name, e.tensor, f"{e.cosine_min:.6f}", f"{e.cosine_mean:.6f}", f"{e.rel_l2:.4f}",
                  f"{e.added:.2e}", "moved" if e.name in moved else "yes",
                  style="yellow" if e.name in moved else None)
    for e in errors:
        if e.final:
            table.add("", f"output {e.name}", e.tensor, f"{e.cosine_min:.6f}", f"{e.cosine_mean:.6f}",
                      f"{e.rel_l2:.4f}", "", "", style="bold")
    return table


@dataclass
class FallbackStep(Record):
    """One INT8 graph the export judged: the units out of INT8 so far, and how it fared."""

    moved: list[str]
    status: Status
    cosine_min: float | None
    top1: float | None
    drop_top1: float | None
    size_bytes: int
    quantized_ops: dict[str, int] = field(default_factory=dict)


@dataclass
class Int8Report(Record):
    """Where the INT8 variant loses accuracy, and what the fallback did about it (the manifest's ``int8``).

    Args:
        layout: the Q/DQ layout.
        high_precision: the type of what is not INT8, moved units included.
        fallback: whether the fallback was allowed.
        blocks: the strict graph's error per unit and final output (:func:`block_errors`).
        steps: the strict graph, then one entry per unit moved.
        moved: the units out of INT8 in the exported graph, in the order they were moved.
    """

    layout: str
    high_precision: str
    fallback: bool
    blocks: list[BlockError]
    steps: list[FallbackStep]
    moved: list[str] = field(default_factory=list)

    def blocks_table(self, title: str = "INT8 error per block, worst first") -> Table:
        return block_error_table(self.blocks, self.moved, title=title)

    def steps_table(self, title: str = "INT8 fallback") -> Table:
        table = Table.of("step", "out of INT8", "INT8 ops", "worst cos", "probe top-1", "top-1 drop", "size",
                         "status", title=title, right=("step", "INT8 ops", "worst cos", "probe top-1", "top-1 drop",
                                                       "size"))
        for k, s in enumerate(self.steps):
            table.add(str(k), ", ".join(s.moved) or "none (strict)", str(sum(s.quantized_ops.values())),
                      "-" if s.cosine_min is None else f"{s.cosine_min:.6f}",
                      "-" if s.top1 is None else f"{s.top1:.2f}%",
                      "-" if s.drop_top1 is None else f"{s.drop_top1:.2f}", human_size(s.size_bytes), s.status,
                      style="red" if s.status == "failed" else None)
        return table
