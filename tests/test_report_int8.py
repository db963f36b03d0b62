"""The run report's export section shows an INT8 export's error per block and the fallback's steps, as the bundle
README does (the same tables)."""

from __future__ import annotations

from test_bundle import manifest_for

from leapkit.deploy.int8_report import BlockError, FallbackStep, Int8Report
from leapkit.deploy.manifest import MANIFEST
from leapkit.deploy.summary import int8_blocks_table, int8_steps_table
from leapkit.report import _export_section


def int8_report(moved: list[str]) -> Int8Report:
    blocks = [BlockError("blocks.0", "/blocks.0/Add_1_output_0", 0.9999, 0.99995, 0.01, 5e-5, 16),
              BlockError("blocks.1", "/blocks.1/Add_1_output_0", 0.9991, 0.9995, 0.03, 4.5e-4, 16),
              BlockError("cls", "cls", 0.998, 0.999, 0.04, None, 16)]
    steps = [FallbackStep([], "failed", 0.998, 80.0, 5.0, 4096, {"MatMul": 12}),
             FallbackStep(moved, "ok", 0.9995, 84.0, 1.0, 5120, {"MatMul": 10})]
    return Int8Report("weight-ops", "fp32", True, blocks, steps[:1 + bool(moved)], moved)


def test_the_report_shows_the_int8_tables_and_the_fallback(tmp_path):
    manifest = manifest_for("x86-cpu", precisions=("fp32", "int8"))
    manifest.int8 = int8_report(["blocks.1"])
    folder = tmp_path / "run" / "export" / "x86-cpu"
    folder.mkdir(parents=True)
    manifest.save(folder / MANIFEST)
    text = "\n".join(_export_section(tmp_path / "run", "RUN").lines)
    blocks, steps = int8_blocks_table(manifest), int8_steps_table(manifest)
    assert f"INT8 error per block, worst first:\n\n{blocks.to_markdown()}" in text
    assert f"INT8 fallback:\n\n{steps.to_markdown()}" in text
    assert "| 1 | blocks.1 | /blocks.1/Add_1_output_0 |" in text  # worst first
    assert "INT8 fallback: blocks.1 moved out of INT8 (they run in fp32)." in text


def test_a_strict_int8_export_shows_its_blocks_only(tmp_path):
    manifest = manifest_for("x86-cpu", precisions=("fp32", "int8"))
    manifest.int8 = int8_report([])
    folder = tmp_path / "run" / "export" / "x86-cpu"
    folder.mkdir(parents=True)
    manifest.save(folder / MANIFEST)
    text = "\n".join(_export_section(tmp_path / "run", "RUN").lines)
    assert "INT8 error per block, worst first:" in text
    assert "INT8 fallback" not in text
