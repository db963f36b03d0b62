"""The run directory: what --overwrite may replace, the latest link, the writer and summary.json."""

import json
import logging
import os

import pytest
import yaml
from helpers import run_cli

from leapkit.config import Config, save_config
from leapkit.errors import RunError
from leapkit.run import RunSummary, RunWriter, check_writable, is_run, point_latest, read_metrics

# summary.json as the training loop of leapkit 0.1.0 wrote it for the demo.
OLD_SUMMARY = {
    "run_dir": "runs/demo", "mode": "leap", "world_size": 1, "epochs": 16, "steps": 352, "train_seconds": 62.53,
    "images_seen": 22528, "images_per_s": 360.3, "images_skipped": 0, "teacher_blocks": 8,
    "blocks_visited": [1, 2, 3, 4, 5, 6, 7, 8], "final_block": 8, "teacher_block_images": 104768,
    "teacher_block_images_baseline": 180224, "teacher_blocks_saved_pct": 41.87, "train_flops": 569835487232,
    "train_flops_baseline": 843872206848, "train_flops_saving_pct": 32.474, "achieved_tflops_per_s": 0.0091,
    "eval": {"linear_probe_top1": 90.8333, "linear_probe_top5": 99.4444, "knn_top1": 90.5556, "knn_top5": 99.4444,
             "retrieval_map": 78.0583, "n_train": 1437, "n_val": 360, "feature_dim": 32, "pool": "cls"},
    "wall_seconds": 64.4,
}




def fake_run(path, metrics: bool = True):
    path.mkdir(parents=True)
    save_config(Config(recipe="demo"), path / "config.yaml")
    if metrics:
        (path / "metrics.jsonl").write_text('{"step": 1}\n')
    return path


# --- what --overwrite may replace ------------------------------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_run(teacher_file, image_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    args = ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(image_dir),
            "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-progress", "--overwrite"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert f"{out} is not a leapkit run" in err and "--overwrite will not delete it" in err
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_overwrite_replaces_a_run(tiny_config, tmp_path):
    from leapkit.train import distill

    out = fake_run(tmp_path / "old")
    (out / "eval.json").write_text("{}")
    tiny_config.train.epochs = 1
    distill(tiny_config, out=out, overwrite=True, show_progress=False)
    assert not (out / "eval.json").exists() and len(read_metrics(out)) == 3


def test_what_counts_as_a_run(tmp_path):
    assert is_run(fake_run(tmp_path / "trained"))
    assert is_run(fake_run(tmp_path / "stopped_before_step_1", metrics=False))
    other = tmp_path / "lightning"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.yaml").write_text(yaml.safe_dump({"seed_everything": 0, "trainer": {}, "model": {}}))
    assert not is_run(other)
    stray = fake_run(tmp_path / "config_and_notes", metrics=False)
    (stray / "notes.txt").write_text("mine")
    assert not is_run(stray)
    (tmp_path / "empty").mkdir()
    check_writable(tmp_path / "empty", overwrite=False)
    check_writable(tmp_path / "absent", overwrite=False)
    with pytest.raises(RunError, match="already holds files; pass --resume"):
        check_writable(tmp_path / "trained", overwrite=False)
    with pytest.raises(RunError, match="lightning is not a leapkit run"):
        check_writable(other, overwrite=True)


# --- the latest link -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "file", "foreign link"])
def test_latest_that_leapkit_did_not_make_is_left_alone(tmp_path, caplog, kind):
    run = fake_run(tmp_path / "runs" / "new")
    latest = tmp_path / "runs" / "latest"
    if kind == "folder":
        latest.mkdir()
        (latest / "keep.txt").write_text("mine")
    elif kind == "file":
        latest.write_text("mine")
    else:
        latest.symlink_to(tmp_path)
    with caplog.at_level(logging.WARNING, logger="leapkit.run"):
        point_latest(run)
    assert "is not a link leapkit made; left as is" in caplog.text
    if kind == "folder":
        assert (latest / "keep.txt").read_text() == "mine"
    elif kind == "file":
        assert latest.read_text() == "mine"
    else:
        assert os.readlink(latest) == str(tmp_path)


def test_latest_link_moves_to_the_newest_run(tmp_path):
    first, second = fake_run(tmp_path / "a"), fake_run(tmp_path / "b")
    point_latest(first)
    point_latest(second)
    assert os.readlink(tmp_path / "latest") == "b"
    (tmp_path / "b").rename(tmp_path / "gone")  # a dangling link leapkit made is still replaced
    point_latest(first)
    assert os.readlink(tmp_path / "latest") == "a"


# --- the writer and summary.json -------------------------------------------------------------


def test_inactive_writer_writes_nothing(tmp_path):
    writer = RunWriter(tmp_path / "rank1", active=False)
    writer.start(Config(), overwrite=False)
    writer.log_step({"step": 1})
    writer.save_checkpoint({"state": {}})
    writer.save_curriculum({})
    writer.close()
    assert not (tmp_path / "rank1").exists()


def test_resume_drops_metric_lines_after_the_checkpoint(tmp_path):
    writer = RunWriter(fake_run(tmp_path / "run", metrics=False))
    for step in (1, 2, 3):
        writer.log_step({"step": step})
    writer.close()
    writer.resume(step=2)
    assert [r["step"] for r in read_metrics(writer.path)] == [1, 2]



def test_a_last_metric_line_cut_short_is_dropped_with_a_warning_and_resume_goes_on(tmp_path, caplog):
    writer = RunWriter(fake_run(tmp_path / "run", metrics=False))
    for step in (1, 2, 3):
        writer.log_step({"step": step, "loss": 0.5})
    writer.close()
    path = writer.path / "metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 4, "loss": 0.')  # the write a kill interrupted
    with caplog.at_level(logging.WARNING):
        assert [r["step"] for r in read_metrics(writer.path)] == [1, 2, 3]
    assert "cut short" in caplog.text
    writer.resume(step=3)
    assert path.read_text().endswith('{"step": 3, "loss": 0.5}\n')
    writer.log_step({"step": 4, "loss": 0.25})
    writer.close()
    assert [r["step"] for r in read_metrics(writer.path)] == [1, 2, 3, 4]


@pytest.mark.parametrize("line", ["garbage", '{"step": 2, "loss"', "[1, 2]", '{"loss": 1.0}'])
def test_a_damaged_metric_line_is_one_line_naming_it(line, tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "run", metrics=False)
    rows = [json.dumps({"step": 1}), line, json.dumps({"step": 3})]
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(RunError, match=r"metrics.jsonl line 2 is not a (JSON record|training step)"):
        read_metrics(run)
    code, err = run_cli(["flops", str(run)], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {run / 'metrics.jsonl'} line 2 is not a")

def test_summary_reads_the_files_leapkit_wrote(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(OLD_SUMMARY))
    summary = RunSummary.load(tmp_path)
    assert summary.eval is not None and summary.eval.linear_probe_top1 == 90.8333
    assert summary.to_dict() == OLD_SUMMARY  # no new keys appear as null
    assert list(summary.to_dict()) == list(OLD_SUMMARY)


def test_a_latest_link_to_a_deleted_run_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "latest").symlink_to("demo-20261204-1200")
    code, err = run_cli(["flops"], monkeypatch, capsys)
    assert code == 2 and err.strip() == ("error: runs/latest points to demo-20261204-1200, which no longer exists; "
                                         "pass a run directory, or run `leapkit distill` to make a new latest run")

