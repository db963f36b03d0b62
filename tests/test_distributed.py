"""Two processes with gloo on CPU (torchrun) against the single-process run."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def recipe(tmp_path, teacher_file, image_dir, batch_size: int):
    path = tmp_path / f"recipe-b{batch_size}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"teacher": "leapkit_demo_teacher", "teacher_weights": str(teacher_file),
                  "student": "leapkit_demo_student", "img_size": 16},
        "data": {"source": "folder", "path": str(image_dir), "augment": False, "workers": 0},
        # level-ups by epoch count only, so that both runs must climb at the same steps
        "curriculum": {"threshold": 1.0, "max_epochs_per_block": 1, "calibrate": False},
        "optim": {"lr": 0.002, "warmup_epochs": 1},
        "train": {"epochs": 3, "batch_size": batch_size, "device": "cpu", "eval_at_end": False},
    }))
    return path


@pytest.mark.slow
def test_ddp_two_ranks_match_single_process(tmp_path, teacher_file, image_dir):
    single = tmp_path / "single"
    cmd = [sys.executable, "-m", "leapkit", "distill", "--recipe", str(recipe(tmp_path, teacher_file, image_dir, 8)),
           "--out", str(single), "--no-progress"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0

    ddp = tmp_path / "ddp"
    cmd = [*TORCHRUN, "-m", "leapkit", "distill", "--recipe", str(recipe(tmp_path, teacher_file, image_dir, 4)),
           "--out", str(ddp), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = dict(re.findall(r"rank (\d) of 2: blocks visited (\[[\d, ]+\])", proc.stdout + proc.stderr))
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"]

    a = json.loads((single / "summary.json").read_text())
    b = json.loads((ddp / "summary.json").read_text())
    assert b["world_size"] == 2 and a["global_batch"] == b["global_batch"] == 8
    assert (a["steps"], a["images_seen"], a["blocks_visited"]) == (b["steps"], b["images_seen"], b["blocks_visited"])

    def level_ups(run):
        return [(e["step"], e["to_block"]) for e in json.loads((run / "curriculum.json").read_text())["level_ups"]]

    assert level_ups(single) == level_ups(ddp)
    # the same 8 images per step, gradients averaged over ranks: the same student up to float error
    wa, wb = load_file(single / "student.safetensors"), load_file(ddp / "student.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.slow
def test_checkpoint_resumes_on_another_number_of_processes(tmp_path, teacher_file, image_dir):
    """Two epochs in one process, the third under torchrun with two: the same as three in one."""
    single_recipe = recipe(tmp_path, teacher_file, image_dir, 8)
    full, cut = tmp_path / "full", tmp_path / "cut"
    base = [sys.executable, "-m", "leapkit", "distill", "--recipe", str(single_recipe), "--no-progress"]
    assert subprocess.run(base + ["--out", str(full)], capture_output=True, env=ENV, timeout=300).returncode == 0
    cut_after_2 = subprocess.run(base + ["--out", str(cut), "--epochs", "2"], capture_output=True, env=ENV, timeout=300)
    assert cut_after_2.returncode == 0
    # The cut run's learning-rate schedule was planned for 2 epochs, so its weights differ from the
    # 3-epoch run's; its curriculum (level-ups by epoch count) and counters must not.
    resume = [*TORCHRUN, "-m", "leapkit", "distill", "--resume", "--out", str(cut), "--epochs", "3",
              "--batch-size", "4", "--no-progress"]
    proc = subprocess.run(resume, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((cut / "summary.json").read_text())
    assert b["world_size"] == 2 and b["steps"] == a["steps"] == 9
    assert b["images_seen"] == a["images_seen"] and b["blocks_visited"] == a["blocks_visited"]
