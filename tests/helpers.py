"""Helpers shared by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from leapkit.cli.main import main
from leapkit.config import resolve_config, save_config
from leapkit.deploy.onnx_graph import OPSET
from leapkit.models import Backbone, create_student
from leapkit.runtimes.base import INPUT_NAME, OUTPUT_NAMES


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real `leapkit` entry point with ``args``; returns its exit code and its stderr."""
    monkeypatch.setattr(sys, "argv", ["leapkit", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def make_run(root: Path, seed: int = 0) -> Path:
    """A finished demo run without training: the demo config at 32 px and a seeded random student."""
    root.mkdir(parents=True)
    save_config(resolve_config("demo", {"model": {"img_size": 32}}), root / "config.yaml")
    torch.manual_seed(seed)
    save_file(create_student("leapkit_demo_student", 32).state_dict(), str(root / "student.safetensors"))
    return root


def torchscript_export(model: torch.nn.Module, path: Path, img_size: int, opset: int = OPSET) -> str:
    """The TorchScript exporter: ~100x quicker than torch.export for tests that are not about the graph."""
    axes = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Backbone(model).eval(), (torch.zeros(2, 3, img_size, img_size),), str(path), dynamo=False,
                          opset_version=opset, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes)
    return "torchscript (test)"
