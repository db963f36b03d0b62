"""The table of an export's artefacts, for the terminal, the bundle README and the run report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from leapkit.tables import Table, human_size

if TYPE_CHECKING:
    from leapkit.deploy.manifest import ExportManifest, Variant

_STYLES = {"failed": "red", "unchecked": "yellow"}
PARITY = "parity (worst cos / max abs diff)"


def _parity(v: Variant) -> str:
    if not v.parity:
        return "not run"
    worst = max(s["max_abs"] for s in v.parity["outputs"].values())
    return f"{v.parity['cosine_min']:.6f} / {worst:.2g}"


def _accuracy(v: Variant) -> str:
    if not v.accuracy:
        return "not run"
    return f"{v.accuracy['top1']:.2f}% ({v.accuracy['pytorch_top1']:.2f}%)"


def variants_table(manifest: ExportManifest, title: str = "") -> Table:
    """One row per artefact: format, precision, size, parity, probe accuracy and status.

    Args:
        manifest: the export's record.
        title: a title above the table (the terminal shows where the export went).
    """
    table = Table.of(
        "file", "format", "precision", "size", PARITY, "probe top-1 (PyTorch)", "status",
        title=title, right=("size", PARITY, "probe top-1 (PyTorch)"),
    )
    for v in manifest.variants:
        table.add(v.file, v.format, v.precision, human_size(v.size_bytes), _parity(v), _accuracy(v), v.status,
                  style=_STYLES.get(v.status))
    return table
