"""`leapkit distill`: flags and --set onto the config (the library call it makes: tests/test_stages.py)."""

import inspect
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from leapkit.cli.distill import FLAG_KEYS, config_delta, distill
from leapkit.config import SECTIONS, Config
from leapkit.errors import ConfigError


@pytest.fixture
def base_args(teacher_file, image_dir, tmp_path):
    return ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(image_dir),
            "--batch-size", "8", "--out", str(tmp_path / "out"), "--no-progress"]


def test_every_flag_names_a_parameter_and_a_config_key():
    params = inspect.signature(distill).parameters
    for name, key in FLAG_KEYS.items():
        section, field = key.split(".")
        assert name in params, name
        assert hasattr(SECTIONS[section](), field), key
    assert "set_" in params and hasattr(Config(), "optim")


def test_flags_and_set_items_make_one_delta():
    delta = config_delta(
        {"epochs": 3, "data": Path("/imgs"), "lr": None, "recipe": "demo", "compile": False},
        ["optim.accum_steps=4", "data.hflip=0"],
    )
    assert delta == {
        "optim": {"accum_steps": 4},
        "data": {"hflip": 0, "path": "/imgs", "source": "folder"},
        "train": {"epochs": 3, "compile": False},
    }


@pytest.mark.parametrize(
    "params, sets, message",
    [
        ({"epochs": 2}, ["train.epochs=3"], "train.epochs is given twice, by --epochs and by --set train.epochs=...; "),
        ({"data": Path("/imgs")}, ["data.source=digits"], "data.source is given twice, by --data and by --set"),
    ],
)
def test_a_key_given_by_a_flag_and_by_set_is_an_error(params, sets, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        config_delta(params, sets)


def test_set_reaches_any_key_through_the_entry_point(base_args, tmp_path, monkeypatch, capsys):
    args = base_args + ["--set", "optim.accum_steps=3", "--set", "train.epochs=1", "--set", "train.eval_at_end=false"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code in (0, None), err
    out = tmp_path / "out"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["optim"]["accum_steps"] == 3 and config["train"]["epochs"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # 3 micro-batches make one step


def test_conflict_through_the_entry_point_is_one_line_exit_2(base_args, tmp_path, monkeypatch, capsys):
    code, err = run_cli(base_args + ["--epochs", "1", "--set", "train.epochs=2"], monkeypatch, capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "train.epochs is given twice" in err
    assert not (tmp_path / "out").exists()


def test_help_documents_set(monkeypatch, capsys):
    from typer.testing import CliRunner

    from leapkit.cli.main import app

    result = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--set" in result.output and "not both" in result.output
