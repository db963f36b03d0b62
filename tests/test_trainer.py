"""The Trainer: the sampler, the AMP path, one optimizer step's numbers and what metrics.jsonl records.

Tests named after a defect fail on leapkit 0.1.0's loop.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

import leapkit.trainer as trainer_mod
from leapkit.run import read_metrics
from leapkit.train import distill
from leapkit.trainer import EpochSampler


def test_epoch_sampler_is_a_pure_function_of_seed_and_epoch():
    a = EpochSampler(10, seed=1, epoch=3).indices()
    assert a == EpochSampler(10, seed=1, epoch=3).indices()
    assert a != EpochSampler(10, seed=1, epoch=4).indices()
    assert sorted(a) == list(range(10))
    assert EpochSampler(10, seed=1, epoch=3, skip=4).indices() == a[4:]
    shards = [EpochSampler(10, 1, 3, rank=r, world=3).indices() for r in range(3)]
    assert all(len(s) == 3 for s in shards) and len(set(sum(shards, []))) == 9


def test_mixed_precision_path_runs_with_a_half_teacher(tiny_config, tmp_path, monkeypatch):
    """The AMP code path (autocast, teacher in half precision, the start-block scan included) on CPU.

    amp_dtype only enables AMP on CUDA; forcing bf16 here runs the same dtype plumbing on CPU, so a
    float32 student fed a half-precision batch (a bug first seen on an H100) fails on any machine.
    """
    monkeypatch.setattr(trainer_mod, "amp_dtype", lambda amp, device: torch.bfloat16)
    tiny_config.train.epochs, tiny_config.train.teacher_half = 1, True
    summary = distill(tiny_config, out=tmp_path / "amp", show_progress=False)
    rows = read_metrics(tmp_path / "amp")
    assert len(rows) == summary.steps == 3
    assert all(0 < r["loss"] < float("inf") for r in rows)
    scan = json.loads((tmp_path / "amp" / "curriculum.json").read_text())["calibration"]  # the file's key
    assert len(scan["scores"]) == 8 and all(s == s for s in scan["scores"])
    student = load_file(tmp_path / "amp" / "student.safetensors")
    assert all(v.dtype == torch.float32 for v in student.values())  # master weights stay float32


def test_nan_loss_stops_and_keeps_checkpoint(tiny_config, tmp_path, monkeypatch):
    from leapkit.errors import TrainingDiverged

    tiny_config.train.epochs = 2
    out = tmp_path / "run"
    distill(tiny_config, out=out, show_progress=False)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    real_loss = trainer_mod.distill_loss
    monkeypatch.setattr(trainer_mod, "distill_loss", lambda *a: real_loss(*a) * float("nan"))
    tiny_config.train.epochs = 3
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 7"):
        distill(tiny_config, out=out, resume=True, show_progress=False)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "n, world, rank, skip", [(10, 1, 0, 0), (10, 3, 2, 0), (10, 3, 1, 2), (7, 2, 0, 9), (0, 1, 0, 0)]
)
def test_epoch_sampler_length_is_arithmetic(n, world, rank, skip):
    sampler = EpochSampler(n, seed=1, epoch=0, rank=rank, world=world, skip=skip)
    assert len(sampler) == len(sampler.indices())


def test_one_permutation_per_epoch_under_gradient_accumulation(tiny_config, tmp_path, monkeypatch):
    """len(loader) once per epoch, and a sampler's length never draws a permutation."""
    draws = []
    real_indices = EpochSampler.indices
    monkeypatch.setattr(EpochSampler, "indices", lambda self: draws.append(self.epoch) or real_indices(self))
    tiny_config.optim.accum_steps, tiny_config.train.batch_size = 4, 4  # 6 micro-batches: steps of 4 and 2
    summary = distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert summary.steps == 2 * tiny_config.train.epochs
    assert draws == [0, 0, 1, 2]  # the start-block scan's batch, then one per epoch


def test_loss_and_score_are_averaged_over_the_micro_batches(tiny_config, tmp_path, monkeypatch):
    from leapkit.curriculum import METRICS

    losses, scores = [], []
    real_loss, real_cka = trainer_mod.distill_loss, METRICS["cka"]

    def recorded_loss(*args):
        loss = real_loss(*args)
        losses.append(loss.item())
        return loss

    def recorded_cka(x, y):
        scores.append(real_cka(x, y))
        return scores[-1]

    monkeypatch.setattr(trainer_mod, "distill_loss", recorded_loss)
    monkeypatch.setitem(METRICS, "cka", recorded_cka)
    tiny_config.optim.accum_steps, tiny_config.train.epochs = 3, 2  # one step of 3 micro-batches an epoch
    distill(tiny_config, out=tmp_path / "run", show_progress=False)
    rows = read_metrics(tmp_path / "run")
    step_scores = scores[8:]  # after the start-block scan's 8 blocks
    assert len(rows) == 2 and len(losses) == len(step_scores) == 6
    for i, row in enumerate(rows):
        assert row["loss"] == pytest.approx(sum(losses[3 * i : 3 * i + 3]) / 3, rel=1e-6)
        assert row["cka"] == pytest.approx(sum(step_scores[3 * i : 3 * i + 3]) / 3, rel=1e-9)


def test_score_fields_are_named_for_the_metric(tiny_config, tmp_path):
    tiny_config.curriculum.metric, tiny_config.train.epochs = "cosine", 1
    distill(tiny_config, out=tmp_path / "run", show_progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"cosine", "ema_cosine"} <= set(row) and not {"cka", "ema_cka"} & set(row)


def test_teacher_blocks_run_is_what_the_teacher_ran(tiny_config, tmp_path, monkeypatch):
    """Count the images through every teacher block: the rows and the start-block scan account for all of them."""
    from timm.models.vision_transformer import Block

    ran = []

    def count(module, inputs, output):
        if isinstance(module, Block) and output.shape[-1] == 96:  # the demo teacher's width (the student's is 32)
            ran.append(output.shape[0])

    tiny_config.train.log = "none"  # the dashboard's FLOPs count runs a teacher block on one image
    monkeypatch.setattr("leapkit.train.add_evidence", lambda summary, cfg: summary)  # so does the closing one
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        summary = distill(tiny_config, out=tmp_path / "run", show_progress=False)
    finally:
        handle.remove()
    rows = read_metrics(tmp_path / "run")
    assert sum(ran) == summary.teacher_block_images == sum(r["teacher_blocks_run"] * r["images"] for r in rows) + 8 * 8
    assert all(r["teacher_blocks_run"] == r["target_block"] for r in rows)  # early exit at the target block


def test_lr_scales_with_the_global_batch_when_asked(tiny_config, tmp_path):
    plain = distill(tiny_config, out=tmp_path / "plain", show_progress=False)
    assert (plain.global_batch, plain.peak_lr) == (8, tiny_config.optim.lr)
    tiny_config.optim.scale_lr = True
    scaled = distill(tiny_config, out=tmp_path / "scaled", show_progress=False)
    assert scaled.peak_lr == pytest.approx(tiny_config.optim.lr * 8 / 256)
    rows = read_metrics(tmp_path / "scaled")
    assert max(r["lr"] for r in rows) == pytest.approx(scaled.peak_lr)  # the end of the warm-up epoch


def test_a_level_up_onto_snap_to_last_at_records_both_level_ups(tiny_config, tmp_path, caplog):
    """A level-up that lands on snap_to_last_at is two level-ups: both are logged, and the row keeps the EMA.

    Defect: the loop read the one event that controller.update returns (the snap), so the level-up
    before it went unlogged and the step's ema_cka read the snap's reset EMA, 0.
    """
    import logging

    from leapkit.run import read_json

    c = tiny_config.curriculum
    c.calibrate, c.threshold, c.snap_to_last_at = False, 0.999, 2  # from block 1, a level-up after one epoch
    tiny_config.train.epochs = 2
    with caplog.at_level(logging.INFO, logger="leapkit.trainer"):
        distill(tiny_config, out=tmp_path / "run", show_progress=False)
    level_ups = read_json(tmp_path / "run" / "curriculum.json")["level_ups"]
    assert [(e["step"], e["from_block"], e["to_block"], e["reason"]) for e in level_ups] == [
        (3, 1, 2, "max_epochs"), (3, 2, 8, "snap")
    ]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("level-up")]
    assert [m.split(" (", 1)[0] for m in logged] == ["level-up at step 3", "level-up at step 3"]
    assert "block 1 -> 2 (max_epochs" in logged[0] and "block 2 -> 8 (snap" in logged[1]
    row = read_metrics(tmp_path / "run")[2]
    assert row["ema_cka"] == level_ups[0]["ema"] > 0
    assert [r["target_block"] for r in read_metrics(tmp_path / "run")] == [1, 1, 1, 8, 8, 8]
