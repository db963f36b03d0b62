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


def int8_blocks_table(manifest: ExportManifest) -> Table | None:
    """The INT8 error per block, worst first, then the final outputs; None when the export has no INT8 variant."""
    if manifest.int8 is None or not manifest.int8.blocks:
        return None
    return manifest.int8.blocks_table()


def int8_steps_table(manifest: ExportManifest) -> Table | None:
    """The INT8 fallback's steps (accuracy and size of each graph judged); None when no unit was moved."""
    if manifest.int8 is None or len(manifest.int8.steps) < 2:
        return None
    return manifest.int8.steps_table()


def int8_section(manifest: ExportManifest) -> list[str]:
    """Markdown lines on the INT8 variant: layout, calibration, Q/DQ facts, error per block, fallback."""
    calib, report = manifest.calibration, manifest.int8
    if calib is None or report is None:
        return []
    facts = calib.get("facts", {})
    quantized = ", ".join(f"{n} {op}" for op, n in calib.get("quantized_ops", {}).items()) or "none"
    lines = [
        "## INT8",
        "",
        f"Layout `{calib['layout']}` ({calib['activations']} activations, {calib['weights']} weights; the rest "
        f"{calib['high_precision']}, LayerNorm and Softmax fp32): {calib['why']}.",
        "",
        f"Calibrated with `{calib['method']}` ({calib.get('method_why', '')}) on {calib['images']} {calib['split']} "
        f"images; ranges {'read from' if calib.get('cache') == 'hit' else 'written to'} calibration_cache.json. "
        f"The graph holds {facts.get('quantize_nodes', 0)} QuantizeLinear nodes, INT8 ops: {quantized}; "
        f"{facts.get('quantized_outputs', 0)} weighted-op outputs are quantized.",
        "",
    ]
    blocks = int8_blocks_table(manifest)
    if blocks is not None:
        lines += [blocks.to_markdown(), ""]
    steps = int8_steps_table(manifest)
    if report.moved:
        lines += [f"Fallback: {', '.join(report.moved)} moved out of INT8 (they run in {report.high_precision}).", ""]
    elif not report.fallback:
        lines += ["Fallback: off (--int8-fallback off).", ""]
    if steps is not None:
        lines += [steps.to_markdown(), ""]
    return lines
