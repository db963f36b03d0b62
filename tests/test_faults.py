"""Pre-emption, crashes, full disks and bad files: nothing is lost."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import leapkit.run as rundir
import leapkit.trainer as trainer_mod
from leapkit.errors import DataError, Interrupted, RunError
from leapkit.train import distill


def same_weights(a, b):
    wa, wb = load_file(a / "student.safetensors"), load_file(b / "student.safetensors")
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(tiny_config, tmp_path, monkeypatch):
    distill(tiny_config, out=tmp_path / "full", show_progress=False)

    real_lr_at = trainer_mod.lr_at

    def signal_at_step_5(step, *args):
        if step == 4:  # during the 5th step (second epoch, second batch)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(step, *args)

    monkeypatch.setattr(trainer_mod, "lr_at", signal_at_step_5)
    stopped = "stopped by a signal at step 5; checkpoint written, continue with `leapkit distill --resume"
    with pytest.raises(Interrupted, match=stopped):
        distill(tiny_config, out=tmp_path / "cut", show_progress=False)
    ck = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["state"]["step"] == 5 and ck["state"]["epoch"] == 1 and ck["state"]["epoch_samples"] == 16
    monkeypatch.setattr(trainer_mod, "lr_at", real_lr_at)
    distill(None, out=tmp_path / "cut", resume=True, show_progress=False)
    assert same_weights(tmp_path / "full", tmp_path / "cut")


@pytest.mark.slow
def test_sigkill_leaves_a_loadable_checkpoint_and_resume_matches(tiny_config, tmp_path):
    from leapkit.config import save_config

    tiny_config.train.epochs = 12
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_config, recipe)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "leapkit", "distill", "--recipe", str(recipe), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process: bit-identical maths
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    # kill -9 in the third epoch (3 steps an epoch), after at least two checkpoints
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 7:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    ckpt = out / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)["state"]
    assert 2 <= state["epoch"] < 12, "the process should have died mid-run"
    assert subprocess.run(cmd + ["--resume"], capture_output=True, timeout=300, env=env).returncode == 0
    distill(tiny_config, out=tmp_path / "full", show_progress=False)
    assert same_weights(tmp_path / "full", out)


def test_full_disk_keeps_previous_checkpoint(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    tiny_config.train.epochs = 1
    distill(tiny_config, out=out, show_progress=False)
    before = (out / "checkpoints" / "last.pt").read_bytes()

    real_write = rundir.atomic_write_bytes

    def full_disk(path, data):
        if path.name == "last.pt":
            with open(path.with_name(".last.pt.partial.tmp"), "wb") as f:
                f.write(data[: len(data) // 2])
            os.unlink(path.with_name(".last.pt.partial.tmp"))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(rundir, "atomic_write_bytes", full_disk)
    tiny_config.train.epochs = 2
    full = r"cannot write the checkpoint .* \(No space left on device\); the previous checkpoint is intact"
    with pytest.raises(RunError, match=full):
        distill(tiny_config, out=out, resume=True, show_progress=False)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before



def test_a_really_full_disk_on_the_first_checkpoint_leaves_no_partial_file(tiny_config, small_disk):
    out = small_disk(400) / "run"  # room for a run's first files, not for its checkpoint
    tiny_config.train.epochs = 1
    full = r"cannot write the checkpoint .* \(No space left on device\); no checkpoint was written yet: .* --overwrite"
    with pytest.raises(RunError, match=full):
        distill(tiny_config, out=out, show_progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == []  # no last.pt, no temporary file
    assert (out / "config.yaml").is_file()


def test_odd_image_modes_are_converted(tiny_config, tmp_path):
    root = tmp_path / "modes" / "a"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(root / "grey.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(root / "deep.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "photo.jpg")
    (root / "truncated.jpg").write_bytes((root / "photo.jpg").read_bytes()[:60])
    tiny_config.data.path = str(tmp_path / "modes")
    tiny_config.train.epochs, tiny_config.train.batch_size = 1, 5
    summary = distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert summary.images_seen == 4 and summary.images_skipped == 1


def test_folder_of_only_bad_files_is_an_error(tiny_config, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(b"junk")
    tiny_config.data.path = str(root)
    with pytest.raises(DataError, match="no readable image"):
        distill(tiny_config, out=tmp_path / "run", show_progress=False)
