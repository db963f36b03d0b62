"""Stages live in the library: `leapkit.distill(cfg)` writes what `leapkit distill` writes."""

import json

import pytest
from conftest import make_images
from helpers import run_cli

import leapkit
from leapkit.config import Config, resolve_config, save_config
from leapkit.errors import ConfigError
from leapkit.run import RunSummary

EVIDENCE = ("train_flops", "train_flops_baseline", "train_flops_saving_pct", "achieved_tflops_per_s", "eval")


@pytest.fixture
def labelled_config(teacher_file, tmp_path) -> Config:
    """One epoch of the demo architectures at 16 px on a folder with train/ and val/: the closing evaluation runs."""
    make_images(tmp_path / "data" / "train", n=24)
    make_images(tmp_path / "data" / "val", n=12)
    return resolve_config("demo", {
        "model": {"teacher_weights": str(teacher_file), "img_size": 16},
        "data": {"source": "folder", "path": str(tmp_path / "data"), "crop_scale": [0.5, 1.0]},
        "train": {"epochs": 1, "batch_size": 8, "eval_at_end": True, "log": "none"},
        "curriculum": {"max_epochs_per_block": 1},
    })


def test_the_library_and_the_command_write_the_same_run(labelled_config, tmp_path, monkeypatch, capsys):
    """The same config through `leapkit.distill` and through the real entry point: the same files and summary."""
    recipe = tmp_path / "tiny.yaml"
    save_config(labelled_config, recipe)
    code, err = run_cli(["distill", "--recipe", str(recipe), "--out", str(tmp_path / "cli"), "--no-progress"],
                        monkeypatch, capsys)
    assert code in (0, None), err
    returned = leapkit.distill(labelled_config, out=tmp_path / "lib", show_progress=False)

    lib, cli = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("lib", "cli"))
    assert set(lib) == set(cli) and set(EVIDENCE) <= set(lib) and "mfu_pct" not in lib  # no GPU here
    assert set(lib["eval"]) == set(cli["eval"]) and lib["eval"]["n_val"] == 12
    assert lib["train_flops"] == cli["train_flops"] > 0  # both trained the same steps on the same blocks
    assert returned == RunSummary.load(tmp_path / "lib")
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert (tmp_path / "lib" / "flops.json").is_file()


def test_eval_at_end_is_honoured_and_a_missing_val_split_skips_the_evaluation(tiny_config, tmp_path):
    """Without val/ the evaluation is left out (the FLOPs are not); with eval_at_end off, it is not attempted."""
    tiny_config.train.epochs, tiny_config.train.eval_at_end = 1, True  # tiny_config's folder has no val/
    summary = leapkit.distill(tiny_config, out=tmp_path / "run", show_progress=False)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary.train_flops > 0 and summary.achieved_tflops_per_s > 0 and "train_flops" in written
    assert summary.eval is None and "eval" not in written and summary.mfu_pct is None


def test_student_auto_is_resolved_by_the_library(tiny_config, tmp_path):
    """`model.student: auto` is the library's to resolve: without a target it stops before anything is written."""
    tiny_config.model.student = "auto"
    with pytest.raises(ConfigError, match="--student auto needs --target T"):
        leapkit.distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
