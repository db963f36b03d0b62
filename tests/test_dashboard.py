"""TensorBoard dashboards of a distillation run, read back with TensorBoard's own event reader."""

import dataclasses
import shutil
import sys
from collections import Counter

import pytest
from helpers import run_cli

from leapkit.dashboard import FLOPS_BASELINE, FLOPS_RUN, FLOPS_SAVING, LEVEL_UP, SCALARS, NoDashboard, backend
from leapkit.errors import MissingDependency
from leapkit.flops import cumulative_train_flops, run_flops
from leapkit.run import read_json, read_metrics
from leapkit.train import distill

TEXT = LEVEL_UP + "/text_summary"  # where TensorBoard's text summary keeps a tag


@pytest.fixture
def events():
    """``events(run_dir)``: {tag: [(step, value)]} as TensorBoard shows the run (orphaned steps purged)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    def read(run_dir):
        acc = pea.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={pea.TENSORS: 0})  # 0: keep all
        acc.Reload()
        out = {}
        for tag in acc.Tags()["tensors"]:
            values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
            out[tag] = [(s, v.item() if v.dtype.kind == "f" else v.item().decode()) for s, v in values]
        return out

    return read


def assert_matches_metrics(shown, run_dir):
    """Every step of metrics.jsonl once per tag, with its values; the level-ups of curriculum.json as text."""
    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    for key, tag in SCALARS.items():
        if key in rows[0]:
            assert [s for s, _ in shown[tag]] == steps, tag
            assert [v for _, v in shown[tag]] == pytest.approx([r[key] for r in rows], rel=1e-6), tag
    level_ups = read_json(run_dir / "curriculum.json")["level_ups"]
    assert [s for s, _ in shown.get(TEXT, [])] == [e["step"] for e in level_ups]
    for (_, text), e in zip(shown.get(TEXT, []), level_ups, strict=True):
        assert f"block {e['from_block']} -> {e['to_block']} ({e['reason']}" in text
    curve = cumulative_train_flops(run_dir)
    assert [s for s, _ in shown[FLOPS_RUN]] == curve["step"] == steps
    assert [v for _, v in shown[FLOPS_RUN]] == pytest.approx(curve["run"], rel=1e-6)
    assert [v for _, v in shown[FLOPS_BASELINE]] == pytest.approx(curve["baseline"], rel=1e-6)


def test_a_run_shows_every_step_of_metrics_jsonl(tiny_config, tmp_path, events):
    # The random tiny teacher calibrates near its last block; from block 1, one level-up an epoch.
    tiny_config.curriculum.calibrate, tiny_config.curriculum.threshold = False, 0.999
    out = tmp_path / "run"
    distill(tiny_config, out=out, show_progress=False)
    shown = events(out)
    assert_matches_metrics(shown, out)
    assert {"train/loss", "train/lr", "train/images_per_s", "curriculum/cka", "curriculum/ema_cka",
            "curriculum/target_block", FLOPS_SAVING} <= set(shown)
    assert [s for s, _ in shown[TEXT]] == [3, 6, 9]
    assert [v for _, v in shown["curriculum/target_block"]][::3] == [1, 2, 3]

    run = [v for _, v in shown[FLOPS_RUN]]
    baseline = [v for _, v in shown[FLOPS_BASELINE]]
    assert run == sorted(set(run)) and baseline == sorted(set(baseline))  # strictly increasing
    assert run[-1] < baseline[-1]
    report = run_flops(out, write=False)
    assert run[-1] == pytest.approx(report.train_flops_leap, rel=1e-6)
    assert shown[FLOPS_SAVING][-1][1] == pytest.approx(report.train_flops_saving_pct, abs=1e-3)


def test_a_baseline_run_costs_what_its_baseline_costs(tiny_config, tmp_path, events):
    tiny_config.curriculum.mode, tiny_config.train.epochs = "baseline", 1
    distill(tiny_config, out=tmp_path / "run", show_progress=False)
    shown = events(tmp_path / "run")
    assert shown[FLOPS_RUN] == shown[FLOPS_BASELINE] and TEXT not in shown


def test_a_resumed_run_continues_the_log_without_duplicated_steps(tiny_config, tmp_path, monkeypatch, events):
    """Steps logged after the checkpoint, then run again on --resume, are shown once, as re-run."""
    from leapkit.run import RunWriter

    out = tmp_path / "run"
    checkpoint = out / "checkpoints" / "last.pt"
    real_save = RunWriter.save_checkpoint

    def save_and_keep_step_6(self, payload):
        real_save(self, payload)
        if payload["state"]["step"] == 6:
            shutil.copy(checkpoint, tmp_path / "step6.pt")

    monkeypatch.setattr(RunWriter, "save_checkpoint", save_and_keep_step_6)
    distill(tiny_config, out=out, show_progress=False)
    shutil.copy(tmp_path / "step6.pt", checkpoint)  # a crash after step 9, before its checkpoint was written
    distill(tiny_config, out=out, resume=True, show_progress=False)

    assert len(list((out / "tensorboard").iterdir())) == 2  # one event file per session, in one log
    shown = events(out)
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 10))
    for tag, points in shown.items():
        assert not [s for s, n in Counter(s for s, _ in points).items() if n > 1], tag
    assert_matches_metrics(shown, out)


def test_log_none_writes_no_tensorboard_folder(teacher_file, image_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(image_dir),
            "--batch-size", "8", "--epochs", "1", "--set", "train.eval_at_end=false", "--out", str(out),
            "--no-progress", "--log", "none"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code in (0, None), err
    assert len(read_metrics(out)) == 3 and not (out / "tensorboard").exists()


def without_tensorboard(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails as when not installed


def test_log_tensorboard_without_the_package_names_the_extra(teacher_file, image_dir, tmp_path, monkeypatch, capsys):
    without_tensorboard(monkeypatch)
    out = tmp_path / "run"
    args = ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(image_dir),
            "--batch-size", "8", "--epochs", "1", "--out", str(out), "--no-progress", "--log", "tensorboard"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "--log tensorboard (train.log) needs the 'tensorboard' package: pip install 'leapkit[tensorboard]'" in err
    assert not out.exists()


def test_auto_is_tensorboard_only_when_the_package_imports(monkeypatch):
    assert backend("none") == "none"
    without_tensorboard(monkeypatch)
    assert backend("auto") == "none"
    with pytest.raises(MissingDependency, match=r"pip install 'leapkit\[tensorboard\]'"):
        backend("tensorboard")


def test_auto_without_the_package_trains_without_a_dashboard(tiny_config, tmp_path, monkeypatch):
    without_tensorboard(monkeypatch)
    tiny_config.train.epochs = 1
    distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert len(read_metrics(tmp_path / "run")) == 3 and not (tmp_path / "run" / "tensorboard").exists()


def test_only_rank_0_opens_a_dashboard(tiny_config, tmp_path):
    from leapkit.run import RunWriter
    from leapkit.train import prepare
    from leapkit.trainer import Trainer

    setup = prepare(tiny_config, tmp_path / "run", resume=False, overwrite=False)
    trainer = Trainer(dataclasses.replace(setup, dist=dataclasses.replace(setup.dist, rank=1)),
                      RunWriter(setup.run_dir, active=False))
    assert isinstance(trainer.start_dashboard(), NoDashboard) and not (tmp_path / "run").exists()
