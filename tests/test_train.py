"""leapkit.train.distill end to end: the run directory, the baseline, exact resume, bad images, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from leapkit.run import RunWriter, read_metrics
from leapkit.train import distill


def test_distill_writes_the_run_directory(tiny_config, tmp_path):
    out = tmp_path / "run"
    summary = distill(tiny_config, out=out, show_progress=False)
    for name in ("config.yaml", "metrics.jsonl", "curriculum.json", "checkpoints/last.pt", "student.safetensors",
                 "summary.json"):
        assert (out / name).is_file(), name
    rows = read_metrics(out)
    assert len(rows) == summary.steps == 9  # 3 epochs x 3 steps
    assert [r["step"] for r in rows] == list(range(1, 10))
    keys = {"step", "epoch", "loss", "cka", "ema_cka", "target_block", "lr", "teacher_blocks_run", "images_per_s"}
    assert keys <= set(rows[0])
    curriculum = json.loads((out / "curriculum.json").read_text())
    assert len(curriculum["calibration"]["scores"]) == 8
    assert curriculum["blocks_visited"][0] == curriculum["calibration"]["start_block"]
    # with one epoch per block at most, the target climbs at least once a epoch until the last block
    assert len(curriculum["blocks_visited"]) >= min(3, 9 - curriculum["calibration"]["start_block"])
    assert [r["target_block"] for r in rows] == sorted(r["target_block"] for r in rows)
    # the student loads into a plain timm model
    student = timm.create_model("leapkit_demo_student", img_size=16, num_classes=0)
    student.load_state_dict(load_file(out / "student.safetensors"))
    assert (out.parent / "latest").resolve() == out.resolve()
    assert summary.teacher_block_images == sum(r["teacher_blocks_run"] * r["images"] for r in rows) + 8 * 8
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()


def test_baseline_runs_every_block(tiny_config, tmp_path):
    tiny_config.curriculum.mode = "baseline"
    tiny_config.train.epochs = 1
    summary = distill(tiny_config, out=tmp_path / "base", show_progress=False)
    rows = read_metrics(tmp_path / "base")
    assert {r["target_block"] for r in rows} == {8}
    assert summary.teacher_blocks_saved_pct == 0.0


class Killed(Exception):
    pass


def test_resume_matches_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    full = distill(tiny_config, out=tmp_path / "full", show_progress=False)

    real_save = RunWriter.save_checkpoint
    calls = []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise Killed  # the process dies right after the epoch-2 checkpoint

    monkeypatch.setattr(RunWriter, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        distill(tiny_config, out=tmp_path / "cut", show_progress=False)
    monkeypatch.setattr(RunWriter, "save_checkpoint", real_save)
    resumed = distill(None, out=tmp_path / "cut", resume=True, show_progress=False)

    a = load_file(tmp_path / "full" / "student.safetensors")
    b = load_file(tmp_path / "cut" / "student.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed.blocks_visited == full.blocks_visited
    assert (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n") == 9
    curriculum = [json.loads((tmp_path / run / "curriculum.json").read_text()) for run in ("full", "cut")]
    assert curriculum[0] == curriculum[1]


def test_corrupt_images_are_skipped_and_counted(tiny_config, tmp_path):
    (Path(tiny_config.data.path) / "class0" / "broken.png").write_bytes(b"not a png")
    tiny_config.train.epochs = 1
    summary = distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert summary.images_skipped == 1
    assert summary.images_seen + summary.images_skipped == 24  # 3 full batches of the 25 files


@pytest.mark.slow
def test_cli_entry_point_end_to_end(teacher_file, image_dir, tmp_path):
    out = tmp_path / "cli-run"
    cmd = [sys.executable, "-m", "leapkit", "distill", "--teacher-weights", str(teacher_file), "--img-size", "16",
           "--data", str(image_dir), "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "blocks visited" in proc.stdout and "teacher blocks saved" in proc.stdout
    assert (out / "student.safetensors").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds files" in again.stderr
