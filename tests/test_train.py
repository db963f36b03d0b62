import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import leapkit.train as train_mod
from leapkit.train import EpochSampler, distill


def test_epoch_sampler_is_a_pure_function_of_seed_and_epoch():
    a = EpochSampler(10, seed=1, epoch=3).indices()
    assert a == EpochSampler(10, seed=1, epoch=3).indices()
    assert a != EpochSampler(10, seed=1, epoch=4).indices()
    assert sorted(a) == list(range(10))
    assert EpochSampler(10, seed=1, epoch=3, skip=4).indices() == a[4:]
    shards = [EpochSampler(10, 1, 3, rank=r, world=3).indices() for r in range(3)]
    assert all(len(s) == 3 for s in shards) and len(set(sum(shards, []))) == 9


def test_distill_writes_the_run_directory(tiny_config, tmp_path):
    out = tmp_path / "run"
    summary = distill(tiny_config, out=out, show_progress=False)
    for name in ("config.yaml", "metrics.jsonl", "curriculum.json", "checkpoints/last.pt", "student.safetensors", "summary.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == summary["steps"] == 9  # 3 epochs x 3 steps
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
    assert summary["teacher_block_images"] == sum(r["teacher_blocks_run"] * r["images"] for r in rows) + 8 * 8


def test_baseline_runs_every_block(tiny_config, tmp_path):
    tiny_config.curriculum.mode = "baseline"
    tiny_config.train.epochs = 1
    summary = distill(tiny_config, out=tmp_path / "base", show_progress=False)
    rows = [json.loads(l) for l in (tmp_path / "base" / "metrics.jsonl").read_text().splitlines()]
    assert {r["target_block"] for r in rows} == {8}
    assert summary["teacher_blocks_saved_pct"] == 0.0


def test_mixed_precision_path_runs_with_a_half_teacher(tiny_config, tmp_path, monkeypatch):
    """The AMP code path (autocast, teacher in half precision, calibration included) on CPU.

    amp_dtype only enables AMP on CUDA; forcing bf16 here runs the same dtype plumbing on CPU, so a
    float32 student fed a half-precision batch (a bug first seen on an H100) fails on any machine.
    """
    monkeypatch.setattr(train_mod, "amp_dtype", lambda cfg, device: torch.bfloat16)
    tiny_config.train.epochs, tiny_config.train.teacher_half = 1, True
    summary = distill(tiny_config, out=tmp_path / "amp", show_progress=False)
    rows = [json.loads(l) for l in (tmp_path / "amp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == summary["steps"] == 3
    assert all(0 < r["loss"] < float("inf") for r in rows)
    calibration = json.loads((tmp_path / "amp" / "curriculum.json").read_text())["calibration"]
    assert len(calibration["scores"]) == 8 and all(s == s for s in calibration["scores"])
    student = load_file(tmp_path / "amp" / "student.safetensors")
    assert all(v.dtype == torch.float32 for v in student.values())  # master weights stay float32


class Killed(Exception):
    pass


def test_resume_matches_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    full = distill(tiny_config, out=tmp_path / "full", show_progress=False)

    real_save = train_mod.save_checkpoint
    calls = []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise Killed  # the process dies right after the epoch-2 checkpoint

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        distill(tiny_config, out=tmp_path / "cut", show_progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = distill(None, out=tmp_path / "cut", resume=True, show_progress=False)

    a = load_file(tmp_path / "full" / "student.safetensors")
    b = load_file(tmp_path / "cut" / "student.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed["blocks_visited"] == full["blocks_visited"]
    assert (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n") == 9
    assert json.loads((tmp_path / "full" / "curriculum.json").read_text()) == json.loads((tmp_path / "cut" / "curriculum.json").read_text())


def test_corrupt_images_are_skipped_and_counted(tiny_config, tmp_path):
    (Path(tiny_config.data.path) / "class0" / "broken.png").write_bytes(b"not a png")
    tiny_config.train.epochs = 1
    summary = distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert summary["images_skipped"] == 1
    assert summary["images_seen"] + summary["images_skipped"] == 24  # 3 full batches of the 25 files


def test_nan_loss_stops_and_keeps_checkpoint(tiny_config, tmp_path, monkeypatch):
    from leapkit.errors import TrainingDiverged

    tiny_config.train.epochs = 2
    out = tmp_path / "run"
    distill(tiny_config, out=out, show_progress=False)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    real_loss = train_mod.distill_loss
    monkeypatch.setattr(train_mod, "distill_loss", lambda *a: real_loss(*a) * float("nan"))
    tiny_config.train.epochs = 3
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 7"):
        distill(tiny_config, out=out, resume=True, show_progress=False)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


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
