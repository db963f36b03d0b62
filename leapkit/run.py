"""The run directory: the contract between stages (see DESIGN.md).

    runs/<name>/config.yaml, metrics.jsonl, curriculum.json, checkpoints/last.pt,
    student.safetensors, summary.json, ...      and runs/latest -> the newest run
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leapkit.config import Config, load_config
from leapkit.errors import RunError
from leapkit.records import atomic_write_bytes, read_json, write_json  # noqa: F401 - re-exported for the stages

RUNS_DIR = Path("runs")
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CURRICULUM = "curriculum.json"
CHECKPOINT = "checkpoints/last.pt"
STUDENT = "student.safetensors"
SUMMARY = "summary.json"


def latest_link(runs_dir: Path = RUNS_DIR) -> Path:
    return runs_dir / "latest"


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a relative symlink to ``run_dir`` (replaced atomically)."""
    link = latest_link(run_dir.parent)
    tmp = link.with_name(f".latest.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, link)


def resolve_run(run: str | Path | None, need: tuple[str, ...] = (CONFIG,)) -> Path:
    """The run directory named by ``run`` (default ``runs/latest``), checked to hold ``need``."""
    path = Path(run) if run is not None else latest_link()
    if run is None and not path.exists():
        raise RunError("no run found at runs/latest; run `leapkit distill` first or pass a run directory")
    if not path.is_dir():
        raise RunError(f"run directory not found: {path}; pass the folder that `leapkit distill` wrote")
    path = path.resolve()
    if not (path / CONFIG).is_file():
        raise RunError(f"{path} is not a leapkit run (no {CONFIG}); pass the folder that `leapkit distill` wrote")
    for name in need:
        if not (path / name).exists():
            hint = "the run did not finish; resume it with `leapkit distill --resume --out RUN`" if name == STUDENT else "run the stage that writes it first"
            raise RunError(f"{path} has no {name}; {hint}")
    return path


def read_run_config(run_dir: Path) -> Config:
    return load_config(run_dir / CONFIG)


def load_student(run_dir: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The distilled student backbone of a run, in eval mode.

    Its ``forward_features`` output (B, prefix + N, D, final-normalised) is what the ONNX export
    reproduces.
    """
    from leapkit.models import create_student, load_weights

    run_dir = resolve_run(run_dir, need=(CONFIG, STUDENT))
    cfg = read_run_config(run_dir)
    model = create_student(cfg.model.student, cfg.model.img_size)
    load_weights(model, run_dir / STUDENT, role="student")
    return model.eval().to(device)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """One dict per optimizer step, in order."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
