"""The `leapkit` app: complete on a fresh import, every command's help lists its headline flags."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from leapkit.cli.main import app
from leapkit.cli.options import CalibMethodOpt, StatOpt, split_choices
from leapkit.errors import ConfigError
from leapkit.types import PRECISIONS

FRESH_IMPORT = """
from typer.testing import CliRunner
from leapkit.cli.main import app
result = CliRunner().invoke(app, ["profiles", "list"])
print(result.exit_code)
print(result.output)
"""


def test_profiles_list_works_on_a_fresh_import():
    proc = subprocess.run([sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    code, _, output = proc.stdout.partition("\n")
    assert code == "0", output
    assert "No such command" not in output
    assert "jetson-orin-nano" in output and "demo" in output


# The flags docs/contracts.md names as the contract for scripts and CI jobs, and the other headline options.
HEADLINE_FLAGS = {
    "distill": ["--recipe", "--teacher", "--teacher-weights", "--student", "--data", "--img-size", "--epochs",
                "--batch-size", "--curriculum", "--cka-threshold", "--ema-alpha", "--max-epochs-per-block", "--seed",
                "--device", "--out", "--resume", "--overwrite", "--set"],
    "flops": ["--export-batch"],
    "eval": ["--data", "--device", "--teacher", "--pool", "--batch-size"],
    "export": ["--target", "--precision", "--overwrite", "--calib-method", "--batch", "--input-size"],
    "bench": ["--target", "--budget-ms", "--runtime", "--stat", "--batch", "--precision"],
    "report": ["--eval", "--plots", "--device"],
}


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", sorted(HEADLINE_FLAGS))
def test_help_lists_the_headline_flags(command):
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text(command)))
    missing = [f for f in HEADLINE_FLAGS[command] if f not in flags]
    assert not missing, f"`leapkit {command} --help` lacks {missing}"


def test_every_command_is_registered():
    text = help_text()
    for command in [*HEADLINE_FLAGS, "profiles"]:
        assert re.search(rf"^\W*{command}\b", text, re.M), command
    for sub in ("list", "show", "validate"):
        assert sub in help_text("profiles")


def test_literal_aliases_are_checked_by_the_parser():
    tiny = typer.Typer()

    @tiny.command()
    def show(stat: StatOpt = None, calib: CalibMethodOpt = "percentile") -> None:
        typer.echo(f"{stat} {calib}")

    assert CliRunner().invoke(tiny, ["--stat", "p90", "--calib-method", "minmax"]).output.strip() == "p90 minmax"
    result = CliRunner().invoke(tiny, ["--stat", "p42"])
    assert result.exit_code == 2 and "Invalid value for '--stat'" in result.output and "'p99'" in result.output


@pytest.mark.parametrize(
    "values, expected",
    [(None, None), ([], None), (["fp16"], ["fp16"]), (["fp16,int8", "fp16"], ["fp16", "int8"]),
     (["all"], ["fp32", "fp16", "bf16", "int8"]), ([" int8 , fp32 "], ["int8", "fp32"])],
)
def test_split_choices(values, expected):
    assert split_choices(values, PRECISIONS, "--precision") == expected


@pytest.mark.parametrize(
    "values, message",
    [(["fp8"], "unknown --precision 'fp8'; use fp32, fp16, bf16, int8 or all"),
     (["all,fp16"], "--precision all cannot be combined with other --precision values")],
)
def test_split_choices_rejects(values, message):
    with pytest.raises(ConfigError) as e:
        split_choices(values, PRECISIONS, "--precision")
    assert str(e.value) == message
