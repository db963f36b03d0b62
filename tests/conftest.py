"""Shared fixtures: tiny teachers, tiny image folders, tiny configs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import leapkit
from leapkit.config import resolve_config
from leapkit.models import create_teacher

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_job_summary(monkeypatch):
    """Commands append to GitHub's job summary when GITHUB_STEP_SUMMARY is set: not from inside the tests."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory) -> Path:
    """Random weights for the demo teacher architecture."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "teacher.safetensors"
    model = create_teacher("leapkit_demo_teacher", 16, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_images(root: Path, n: int = 24, classes: int = 2, size: int = 20) -> Path:
    """``n`` small RGB PNGs in ``classes`` class folders: class c is brighter on side c."""
    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        img[:, c * size // classes : (c + 1) * size // classes] += 150
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"class{c}" / f"{i:03d}.png")
    return root


@pytest.fixture
def image_dir(tmp_path) -> Path:
    return make_images(tmp_path / "images")


@pytest.fixture
def tiny_config(teacher_file, image_dir):
    """The demo architectures at 16 px on a 24-image folder: 3 steps an epoch."""
    return resolve_config("demo", {
        "model": {"teacher_weights": str(teacher_file), "img_size": 16},
        "data": {"source": "folder", "path": str(image_dir), "crop_scale": [0.5, 1.0]},
        "train": {"epochs": 3, "batch_size": 8, "eval_at_end": False},
        "curriculum": {"max_epochs_per_block": 1},
    })


def distil_demo(root: Path, teacher_file: Path) -> Path:
    """A real 1-epoch demo distillation at 16 px on 24 train and 12 val images under ``root``; the run folder."""
    make_images(root / "data" / "train", n=24)
    make_images(root / "data" / "val", n=12)
    cfg = resolve_config("demo", {
        "model": {"teacher_weights": str(teacher_file), "img_size": 16},
        "data": {"source": "folder", "path": str(root / "data"), "crop_scale": [0.5, 1.0]},
        "train": {"epochs": 1, "batch_size": 8, "eval_at_end": False},
        "curriculum": {"max_epochs_per_block": 1},
    })
    leapkit.distill(cfg, out=root / "run", show_progress=False)
    return root / "run"


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(kb)``: a real file system (tmpfs) of ``kb`` kB, mounted for this test, to fill up for real.

    Skips where a tmpfs cannot be mounted (not root, or no CAP_SYS_ADMIN in a container).
    """
    mounted: list[Path] = []

    def mount(kb: int) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(disk)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", str(disk)], check=True)
