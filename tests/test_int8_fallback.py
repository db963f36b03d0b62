"""leapkit.deploy.int8_fallback: a failing INT8 export recovered block by block, strict mode, the cache reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import run_cli
from safetensors.torch import save_file

import leapkit.deploy.export as ex
import leapkit.deploy.onnx_int8 as q
from leapkit.config import resolve_config, save_config
from leapkit.data import DigitsDataset
from leapkit.deploy import parity
from leapkit.deploy.export_data import stack_images
from leapkit.deploy.int8_blocks import graph_units
from leapkit.deploy.int8_fallback import Int8Plan, build_int8
from leapkit.deploy.int8_report import ranked
from leapkit.deploy.manifest import ExportManifest, Variant
from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.models import create_student

# Tighter than the strict INT8 graph of the seeded demo student gets (worst cosine ~0.9998), looser than fp16.
TIGHT = 0.9999
SMALL = dict(calib_images=32, parity_images=16, probe_images=100)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fallback") / "run"
    root.mkdir()
    save_config(resolve_config("demo", {"model": {"img_size": 32}}), root / "config.yaml")
    torch.manual_seed(0)
    save_file(create_student("leapkit_demo_student", 32).state_dict(), str(root / "student.safetensors"))
    return root


@pytest.fixture
def tight(monkeypatch):
    """A tightened INT8 parity tolerance; the probe's is opened, since a random student's probe is noise."""
    monkeypatch.setitem(parity.MIN_COSINE, "int8", TIGHT)
    monkeypatch.setitem(parity.MAX_TOP1_DROP, "int8", 100.0)


@pytest.fixture
def calibrations(monkeypatch) -> list[str]:
    """Records each calibration the quantizer runs."""
    calls: list[str] = []
    real = q.calibrate

    def counting(model, images, method, *args, **kwargs):
        calls.append(method)
        return real(model, images, method, *args, **kwargs)

    monkeypatch.setattr(q, "calibrate", counting)
    return calls


def test_fallback_recovers_a_failing_int8_export_and_names_the_blocks(run_dir, tight, calibrations):
    result = ex.export(run_dir, target="jetson", precision="int8", **SMALL)  # raises CheckFailed if it failed
    manifest = ExportManifest.load(result.out_dir)
    int8 = manifest.variant("model_int8.onnx")
    report = manifest.int8
    assert result.passed and int8.status == "ok" and int8.parity["cosine_min"] >= TIGHT
    assert report.fallback and report.moved and calibrations == ["percentile"]  # one calibration for every step
    # The units that add the most error go first, one per step; every step but the last failed.
    order = [e.name for e in ranked(report.blocks)]
    assert report.moved == order[:len(report.moved)]
    steps = report.steps
    assert [s.moved for s in steps] == [report.moved[:k] for k in range(len(report.moved) + 1)]
    assert [s.status for s in steps] == ["failed"] * len(report.moved) + ["ok"]
    assert steps[0].cosine_min < TIGHT <= steps[-1].cosine_min
    ops = [sum(s.quantized_ops.values()) for s in steps]
    assert ops[0] == 25 and ops == sorted(ops, reverse=True) and ops[-1] > 0
    assert steps[-1].size_bytes == int8.size_bytes > steps[0].size_bytes  # moved blocks keep fp16 weights
    names = ", ".join(report.moved)
    assert int8.notes[0].startswith(f"INT8 fallback: {names} moved out of INT8 (fp16); the graph passes "
                                    f"(strict INT8: parity: worst cosine 0.99")
    # The exported graph: no Q/DQ left in the moved units, all still there in the others.
    units = {u.name: u for u in graph_units(onnx.load(str(result.out_dir / "model.onnx")))}
    model = onnx.load(str(result.out_dir / "model_int8.onnx"))
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed = {n.name: any(i in dq_out for i in n.input[:2]) for n in model.graph.node if n.op_type in ("MatMul", "Conv")}
    for name, unit in units.items():
        assert all(fed[n] != (name in report.moved) for n in unit.int8_nodes), name
    readme = (result.out_dir / "README.md").read_text()
    assert f"Fallback: {names} moved out of INT8 (they run in fp16)." in readme
    assert report.steps_table().to_markdown() in readme and report.blocks_table().to_markdown() in readme


def test_fallback_off_fails_strictly_and_reuses_the_calibration(run_dir, tight, calibrations, monkeypatch, capsys):
    """With --int8-fallback off the tightened export fails (exit 1); a re-export with other options (fewer parity
    images, no fallback) reads the ranges from the previous export's calibration cache."""
    code, err = run_cli(["export", str(run_dir), "-t", "jetson", "-p", "int8", "--int8-fallback", "off", "--overwrite",
                         "--calibration-images", "32", "--parity-images", "8", "--probe-images", "100"],
                        monkeypatch, capsys)
    assert code == 1
    assert "export for jetson-orin-nano failed its checks: model_int8.onnx (parity: worst cosine 0.99" in err
    assert f"< {TIGHT}" in err and err.strip().count("\n") == 0
    manifest = ExportManifest.load(run_dir / "export" / "jetson-orin-nano")
    assert manifest.calibration["cache"] == "hit" and calibrations == []
    assert not manifest.int8.fallback and manifest.int8.moved == [] and len(manifest.int8.steps) == 1
    # Another method is another key: calibrated, and both entries kept.
    ex.export(run_dir, target="jetson", precision="int8", calib_method="minmax", int8_fallback=False, check=False,
              overwrite=True, **SMALL)
    cache = json.loads((run_dir / "export" / "jetson-orin-nano" / "calibration_cache.json").read_text())
    assert calibrations == ["minmax"] and sorted(e["method"] for e in cache["entries"].values()) == [
        "minmax", "percentile"]


def test_a_fallback_that_leaves_no_int8_op_fails(tmp_path):
    """A judge that passes only a graph without Q/DQ: every unit is moved, in ranked order, and the variant fails."""
    torch.manual_seed(0)
    fp32 = tmp_path / "model.onnx"
    with quiet_exporters():
        export_onnx(create_student("leapkit_demo_student", 32).eval(), fp32, 32)
    images = stack_images(DigitsDataset("train", 32, (0.5,) * 3, (0.5,) * 3), 8)[0]
    plan = Int8Plan(fp32=fp32, dst=tmp_path / "model_int8.onnx", layout=q.int8_layout("tensorrt"), method="minmax",
                    calib_images=images, cache_from=None, cache_to=tmp_path / "cache.json", fallback=True,
                    error_images=images[:4])

    def judge(path: Path, always_probe: bool) -> Variant:
        has_qdq = any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
        v = Variant(precision="int8", format="onnx", file=path.name, size_bytes=path.stat().st_size,
                    status="failed" if has_qdq else "ok", parity={"cosine_min": 0.5 if has_qdq else 1.0})
        v.accuracy = {"top1": 50.0, "drop_top1": 0.0}
        if has_qdq:
            v.notes.append("parity: worst cosine 0.500000 < 0.98")
        return v

    variant, calibration, report = build_int8(plan, judge)
    assert report.moved == [e.name for e in ranked(report.blocks)] and len(report.moved) == 5
    assert variant.failed and report.steps[-1].status == "failed" and report.steps[-1].quantized_ops == {}
    assert "INT8 fallback: no INT8 op is left; export fp16 instead" in variant.why_failed()
    assert calibration["cache"] == "miss" and calibration["quantized_ops"] == {}
    assert np.isclose(report.steps[-1].cosine_min, 1.0)
