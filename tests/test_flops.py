"""FLOPs: fvcore counts against torch's FlopCounterMode and the closed form; run accounting; CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from leapkit.config import Config, save_config
from leapkit.errors import RunError
from leapkit.flops import FlopsReport, cumulative_train_flops, inference_table, run_flops, train_flops_table
from leapkit.macs import activation_bytes, model_flops, teacher_block_flops
from leapkit.models import create_student, create_teacher
from leapkit.planning.shape import VitShape, vit_closed_form_macs
from leapkit.tables import si


def torch_counter_macs(model: torch.nn.Module, img_size: int) -> float:
    """MACs from torch's own counter, with attention through the explicit matmul path it knows."""
    for blk in model.blocks:
        blk.attn.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward_features(torch.zeros(1, 3, img_size, img_size))
    for blk in model.blocks:
        blk.attn.fused_attn = True
    return counter.get_total_flops() / 2


DEMO_STUDENT = VitShape(32, 4, 32, 4, heads=2, mlp_hidden=128)  # leapkit_demo_student at 32 px


@pytest.mark.parametrize(
    "name, img_size, shape",
    [
        ("leapkit_demo_student", 32, dict(patch_size=4, dim=32, depth=4, heads=2, mlp_hidden=128)),
        ("vit_small_patch14_dinov2", 56, dict(patch_size=14, dim=384, depth=12, heads=6, mlp_hidden=1536)),
        ("vit_small_patch14_reg4_dinov2", 56,
         dict(patch_size=14, dim=384, depth=12, heads=6, mlp_hidden=1536, prefix_tokens=5)),
    ],
)
def test_fvcore_counts_attention_and_agrees_with_torch_and_closed_form(name, img_size, shape):
    model = create_student(name, img_size).eval()
    res = model_flops(model, img_size, memory=False)
    assert res["flops"] == 2 * res["macs"]
    closed = vit_closed_form_macs(VitShape(img_size, **shape))
    assert res["macs"] == pytest.approx(closed, rel=0.02)
    # torch's counter ignores LayerNorm; fvcore counts 5 MACs per element (over 2% of a dim-32 ViT).
    layernorm = closed - vit_closed_form_macs(VitShape(img_size, **shape), layernorm=False)
    assert res["macs"] == pytest.approx(torch_counter_macs(model, img_size) + layernorm, rel=0.02)
    no_layernorm = vit_closed_form_macs(VitShape(img_size, **shape), layernorm=False)
    assert torch_counter_macs(model, img_size) == pytest.approx(no_layernorm, rel=1e-6)


def test_attention_is_not_skipped():
    model = create_student("leapkit_demo_student", 32).eval()
    attention = 4 * 2 * 65 * 65 * 32  # 4 blocks, q k^T and attn v: 2 N^2 D
    no_attention = vit_closed_form_macs(DEMO_STUDENT) - attention
    assert model_flops(model, 32, memory=False)["macs"] - no_attention == attention
    # The explicit path (no fused kernel) counts the same.
    for blk in model.blocks:
        blk.attn.fused_attn = False
    assert model_flops(model, 32, memory=False)["macs"] == vit_closed_form_macs(DEMO_STUDENT)


def test_teacher_blocks_sum_to_the_whole_model():
    teacher = create_teacher("leapkit_demo_teacher", 32, pretrained=False)
    parts = teacher_block_flops(teacher, 32)
    assert parts["num_blocks"] == 8 and len(set(parts["block_macs"])) == 1
    whole = model_flops(teacher, 32, memory=False)["macs"]
    assert parts["total_macs"] == whole == parts["embed_macs"] + sum(parts["block_macs"]) + parts["norm_macs"]
    assert parts["embed_macs"] == 64 * 3 * 4 * 4 * 96 and parts["norm_macs"] == 5 * 65 * 96


def test_giant_teacher_is_counted_on_the_meta_device():
    with torch.device("meta"):
        teacher = create_teacher("vit_giant_patch14_dinov2", 224, pretrained=False)
    parts = teacher_block_flops(teacher, 224)
    closed = vit_closed_form_macs(VitShape(224, 14, 1536, 40, heads=24, mlp_hidden=4096, gated_mlp=True))
    assert parts["total_macs"] == pytest.approx(closed, rel=0.02)
    assert parts["params"] > 1.1e9 and next(teacher.parameters()).is_meta


def test_activation_memory_is_a_peak_not_a_sum():
    deep = create_student("leapkit_demo_teacher", 32)  # 8 blocks
    shallow = create_student("leapkit_demo_teacher", 32, depth=2)
    one, eight = activation_bytes(deep, 32, 1), activation_bytes(deep, 32, 8)
    assert one == pytest.approx(activation_bytes(shallow, 32, 1), rel=0.1)
    tokens = 65 * 96 * 4  # one (N, D) float32 token map
    assert 2 * tokens < one < 30 * tokens
    assert eight == pytest.approx(8 * one, rel=0.1)


# --- a synthetic run ----------------------------------------------------------------------------

# Closed-form per-image MACs of the demo pair at 32 px (65 tokens, 64 patches).
EMBED, NORM = 64 * 3 * 16 * 96, 5 * 65 * 96
BLOCK = vit_closed_form_macs(VitShape(32, 4, 96, 1, heads=3, mlp_hidden=384)) - vit_closed_form_macs(
    VitShape(32, 4, 96, 0, heads=3, mlp_hidden=384))
STUDENT = vit_closed_form_macs(DEMO_STUDENT)
HEAD = (64 + 1) * 32 * 96  # 64 patch tokens and the CLS token through the 32 -> 96 projection
CKA = 3 * 64 * 96 * 96


def make_run(root: Path, blocks: list[int], mode: str = "leap", calibration: int = 16, batch: int = 16) -> Path:
    root.mkdir(parents=True)
    cfg = Config(recipe="test")
    cfg.data.source = "digits"
    cfg.model.teacher, cfg.model.student, cfg.model.img_size = "leapkit_demo_teacher", "leapkit_demo_student", 32
    cfg.curriculum.mode = mode
    cfg.train.batch_size = batch
    save_config(cfg, root / "config.yaml")
    lines = [json.dumps({"step": i + 1, "target_block": k, "teacher_blocks_run": k, "images": batch})
             for i, k in enumerate(blocks)]
    (root / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    cal = {"scores": [0.1] * 8, "start_block": blocks[0], "images": calibration} if mode == "leap" else None
    (root / "curriculum.json").write_text(json.dumps({"num_blocks": 8, "calibration": cal, "level_ups": []}))
    return root


def test_run_training_flops_against_the_closed_form(tmp_path):
    blocks = [2, 2, 3, 3, 5, 8]
    run = make_run(tmp_path / "run", blocks)
    res = run_flops(run, export_batch=4)
    b = 16
    teacher = sum(b * (EMBED + k * BLOCK + NORM) for k in blocks)
    student_head = len(blocks) * b * 3 * (STUDENT + HEAD)
    calibration = 16 * (EMBED + 8 * BLOCK + NORM + STUDENT + HEAD + 8 * CKA)
    leap = teacher + student_head + len(blocks) * b * CKA + calibration
    baseline = len(blocks) * b * (EMBED + 8 * BLOCK + NORM) + student_head
    assert res.train_macs_leap == leap and res.train_flops_leap == 2 * leap
    assert res.train_macs_baseline == baseline and res.train_flops_baseline == 2 * baseline
    assert res.train_flops_saving_pct == pytest.approx(100 * (1 - leap / baseline), abs=1e-3)
    assert res.student_inference_macs == STUDENT and res.student_inference_flops == 2 * STUDENT
    assert res.student_params == sum(p.numel() for p in create_student("leapkit_demo_student", 32).parameters())
    assert set(res.student_activation_bytes) == {"1", "4"}
    assert json.loads((run / "flops.json").read_text()) == res.to_dict()
    assert FlopsReport.load(run) == res
    parts = res.train_flops_breakdown.run
    assert parts.calibration == 2 * calibration and parts.signal == 2 * len(blocks) * b * CKA
    assert parts.total() == res.train_flops_run == res.train_flops_leap
    curve = cumulative_train_flops(run)
    assert curve["run"][-1] == 2 * leap and curve["baseline"][-1] == 2 * baseline
    assert curve["step"] == [1, 2, 3, 4, 5, 6]


def test_a_baseline_run_has_no_saving(tmp_path):
    res = run_flops(make_run(tmp_path / "run", [8, 8, 8], mode="baseline"))
    assert res.train_flops_leap is None and res.train_flops_saving_pct is None
    assert res.train_flops_run == res.train_flops_baseline
    assert res.train_flops_breakdown.run.calibration == 0 and res.train_flops_breakdown.run.signal == 0


def test_flops_json_carries_the_design_keys(tmp_path):
    data = json.loads(run_flops(make_run(tmp_path / "run", [1, 8])).save(tmp_path / "f.json").read_text())
    for key in ("train_flops_leap", "train_flops_baseline", "train_flops_saving_pct", "student_inference_flops",
                "student_params", "train_macs_leap", "train_macs_baseline", "student_inference_macs"):
        assert key in data, key


def test_tables_render_the_same_rows_to_rich_and_markdown(tmp_path):
    from rich.console import Console

    res = run_flops(make_run(tmp_path / "run", [2, 8]), write=False)
    train, infer = train_flops_table(res), inference_table(res)
    md = train.to_markdown()
    assert f"| **total** | **{si(res.train_flops_run)}** | **{si(res.train_flops_baseline)}** |" in md
    assert f"| **saving** | **{res.train_flops_saving_pct:.1f} %** |" in md
    assert "| curriculum cka |" in md and "| start-block scan |" in md
    assert f"| student | {si(res.student_params)} | {si(res.student_inference_macs)} |" in infer.to_markdown()
    console = Console(record=True, width=200)
    console.print(train.to_rich())
    console.print(infer.to_rich())
    text = console.export_text()
    assert si(res.train_flops_run) in text and "teacher leapkit_demo_teacher" in text


def test_bad_runs(tmp_path):
    (tmp_path / "notarun").mkdir()
    with pytest.raises(RunError, match="is not a leapkit run"):
        run_flops(tmp_path / "notarun")
    run = make_run(tmp_path / "empty", [1])
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(RunError, match="records no steps"):
        run_flops(run)
    (run / "metrics.jsonl").unlink()
    with pytest.raises(RunError, match="has no metrics.jsonl"):
        run_flops(run)


def leapkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leapkit", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_cli_flops_end_to_end(tmp_path):
    run = make_run(tmp_path / "run", [1, 4, 8])
    proc = leapkit("flops", str(run), "--export-batch", "4")
    assert proc.returncode == 0, proc.stderr
    assert "saving" in proc.stdout and "baseline" in proc.stdout
    assert json.loads((run / "flops.json").read_text())["export_batch"] == 4
    proc = leapkit("flops", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a leapkit run" in lines[0]
