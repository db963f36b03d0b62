"""Two processes with gloo on CPU (torchrun) against the single-process run; a rank without readable images; two
torchrun agents meeting at a c10d rendezvous endpoint, as two machines do."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

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


def run_group(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` (a torchrun agent) with its output in ``log``: its workers, in sessions of their own, may
    outlive it, and a pipe they hold open would block the reader."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=ENV)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """The output of ``proc`` once it exits; still running after ``timeout`` s, it and its workers are killed and
    the test fails."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running after {timeout:.0f} s (a rank waits for the others): {log.read_text()[-2000:]}")
    return log.read_text()


@pytest.mark.slow
def test_a_rank_without_readable_images_does_not_hang_the_others(tmp_path, teacher_file, image_dir):
    """Rank 1's second batch of epoch 0 is all corrupt files: every rank skips that step, none waits forever."""
    from leapkit.data import list_images
    from leapkit.trainer import EpochSampler

    files, batch, world, epochs = list_images(image_dir), 4, 2, 3
    second_batch_of_rank_1 = EpochSampler(len(files), 0, 0, rank=1, world=world).indices()[batch:2 * batch]
    for i in second_batch_of_rank_1:
        files[i].write_bytes(b"not an image")
    corrupt = set(second_batch_of_rank_1)

    def step_taken(epoch: int, step: int) -> bool:  # every rank has a readable image in it
        shares = [EpochSampler(len(files), 0, epoch, r, world).indices() for r in range(world)]
        return all(set(s[step * batch:(step + 1) * batch]) - corrupt for s in shares)

    steps_per_epoch = len(files) // world // batch
    expected = sum(step_taken(e, k) for e in range(epochs) for k in range(steps_per_epoch))
    assert not step_taken(0, 1) and expected < epochs * steps_per_epoch

    out = tmp_path / "ddp"
    cmd = [*TORCHRUN, "-m", "leapkit", "distill", "--recipe", str(recipe(tmp_path, teacher_file, image_dir, batch)),
           "--out", str(out), "--no-progress", "--seed", "0"]
    log = finish(run_group(cmd, tmp_path / "torchrun.log"), tmp_path / "torchrun.log", 300)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == expected, log[-3000:]
    assert "step 2 skipped: another rank had no readable image in it" in log
    assert summary["unreadable_files"] == len(corrupt)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, expected + 1))


@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous(tmp_path, teacher_file, image_dir):
    """Two torchrun agents, one process each, meet at a c10d endpoint as two machines would; rank 0 alone writes.

    Each agent is given its own --out (two machines without a shared disk): the run lands in rank 0's, and the
    other agent's folder is never created.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = recipe(tmp_path, teacher_file, image_dir, 4)
    outs = [tmp_path / f"node{n}" / "run" for n in range(2)]
    agents = [
        run_group([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "leapkit-test",
                   "-m", "leapkit", "distill", "--recipe", str(rec), "--out", str(out), "--no-progress"],
                  tmp_path / f"agent{n}.log")
        for n, out in enumerate(outs)
    ]
    logs = [finish(agent, tmp_path / f"agent{n}.log", 600) for n, agent in enumerate(agents)]
    assert all(agent.returncode == 0 for agent in agents), "\n".join(log[-2000:] for log in logs)

    visited = dict(re.findall(r"rank (\d) of 2: blocks visited (\[[\d, ]+\])", "".join(logs)))
    assert set(visited) == {"0", "1"} and visited["0"] == visited["1"]  # the curriculum, identical on both
    written = [out for out in outs if out.exists()]
    assert len(written) == 1  # the other agent's --out is never created
    run = written[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 8 and (run / "checkpoints" / "last.pt").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, summary["steps"] + 1))  # one writer: no step twice
