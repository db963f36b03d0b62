"""Bad inputs around the run directory (issue 19): nothing lost, every error one line with exit 2.

A run's config.yaml and summary.json change only when the work they describe has succeeded: a
resume that would change the run is refused before anything is written, a finished run resumed
with nothing to do is left byte for byte, damaged checkpoints and students name the file and the
fix, folders leapkit cannot write to are refused before the work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import distil_demo
from PIL import Image

import leapkit
from leapkit.cli.main import main
from leapkit.config import resolve_config
from leapkit.errors import ConfigError

KEPT = ("config.yaml", "summary.json", "checkpoints/last.pt", "student.safetensors")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, teacher_file) -> Path:
    """One real 1-epoch demo run, shared: tests work on copies (:func:`copy_run`)."""
    return distil_demo(tmp_path_factory.mktemp("demo"), teacher_file)


@pytest.fixture
def run(finished_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the finished run, beside a ``latest`` link to it; the working folder is its parent."""
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    (tmp_path / "latest").symlink_to("run", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return dst


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The real entry point: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["leapkit", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in KEPT if (run / name).is_file()}


def one_line(err: str) -> str:
    assert err.strip().count("\n") == 0, err
    return err.strip()


# --- items 1 and 3: --resume never relabels a run ------------------------------------------------


@pytest.mark.parametrize("state", ["finished", "interrupted"])
@pytest.mark.parametrize(
    "flags, changes",
    [
        (["--student", "vit_tiny_patch16_224"], "model.student (leapkit_demo_student -> vit_tiny_patch16_224)"),
        (["--curriculum", "baseline"], "curriculum.mode (leap -> baseline)"),
        (["--recipe", "imagenet100-vits14-from-vitg14"], "recipe (demo -> imagenet100-vits14-from-vitg14)"),
        (["--lr", "0.1", "--seed", "3"], "optim.lr (0.002 -> 0.1), train.seed (0 -> 3)"),
    ],
)
def test_resume_refuses_to_change_the_run(run, state, flags, changes, monkeypatch, capsys):
    if state == "interrupted":
        (run / "student.safetensors").unlink()
        (run / "summary.json").unlink()
    before = snapshot(run)
    code, _, err = cli(["distill", "--resume", "--out", str(run), "--no-progress", *flags], monkeypatch, capsys)
    assert code == 2
    assert one_line(err) == (
        f"error: --resume cannot change {changes}: drop those options to continue {run}, or start a new run with "
        f"--out NEW_DIR"
    )
    assert snapshot(run) == before


def test_library_resume_refuses_another_model(run, teacher_file):
    cfg = resolve_config("demo", {"model": {"student": "vit_tiny_patch16_224", "teacher_weights": str(teacher_file)}})
    with pytest.raises(ConfigError, match=r"--resume cannot change model\.student"):
        leapkit.distill(cfg, out=run, resume=True, show_progress=False)


@pytest.mark.parametrize("flags", [[], ["--device", "cpu", "--workers", "0"]])
def test_resuming_a_finished_run_changes_nothing(run, flags, monkeypatch, capsys):
    before = snapshot(run)
    mtimes = {name: (run / name).stat().st_mtime_ns for name in KEPT}
    code, out, err = cli(["distill", "--resume", "--out", str(run), "--no-progress", *flags], monkeypatch, capsys)
    assert code == 0, err
    assert "is already complete (1 epochs): nothing to do, no file changed" in " ".join((out + err).split())
    assert snapshot(run) == before
    assert {name: (run / name).stat().st_mtime_ns for name in KEPT} == mtimes


# --- item 6: damaged checkpoints and students ----------------------------------------------------


@pytest.mark.parametrize("state", ["finished", "interrupted"])
@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_damaged_checkpoint_is_one_line(run, state, damage, monkeypatch, capsys):
    ckpt = run / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3] if damage == "truncated" else np.random.default_rng(0).bytes(4096))
    if state == "interrupted":
        (run / "summary.json").unlink()
    before = snapshot(run)
    code, _, err = cli(["distill", "--resume", "--out", str(run), "--no-progress"], monkeypatch, capsys)
    assert code == 2
    assert one_line(err) == (
        f"error: {ckpt} is not a readable checkpoint (truncated or corrupt): resume from an intact copy or start "
        f"again with --overwrite"
    )
    assert snapshot(run) == before


def test_a_truncated_student_names_the_fix_and_resume_restores_it(run, monkeypatch, capsys):
    student = run / "student.safetensors"
    good = student.read_bytes()
    student.write_bytes(good[: len(good) // 2])
    code, _, err = cli(["eval", str(run), "--no-teacher"], monkeypatch, capsys)
    assert code == 2
    assert one_line(err) == (
        f"error: {student} is not a readable student (truncated or corrupt): write it again from the checkpoint "
        f"with `leapkit distill --resume --out {run}`, or train again with --overwrite"
    )
    config = (run / "config.yaml").read_bytes()
    code, _, err = cli(["distill", "--resume", "--out", str(run), "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    assert student.read_bytes() == good  # the same weights, from the final checkpoint
    assert (run / "config.yaml").read_bytes() == config


# --- item 13: --overwrite on a link, data without a readable image, skipped files ----------------


def test_overwrite_refuses_a_symlink_and_keeps_its_target(run, tmp_path, monkeypatch, capsys):
    before = snapshot(run)
    link = tmp_path / "latest"
    code, _, err = cli(["distill", "--out", str(link), "--overwrite", "--no-progress"], monkeypatch, capsys)
    assert code == 2
    assert one_line(err) == (
        f"error: {link} is a symbolic link (to run), and --overwrite does not replace links or what they point to; "
        f"pass the run folder itself (--out {run}) or a new --out DIR"
    )
    assert link.is_symlink() and snapshot(run) == before


def test_data_without_a_readable_image_leaves_no_stub(run, teacher_file, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "stub"
    args = ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(bad), "--epochs", "1",
            "--batch-size", "8", "--out", str(out), "--no-progress"]
    code, _, err = cli(args, monkeypatch, capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"error: no readable image under {bad}: none of its 3 image files could be read (e.g. 0.jpg")
    assert line.endswith("replace the corrupt files or point --data at a folder of readable images")
    assert not out.exists()
    assert os.readlink(tmp_path / "latest") == "run"


def test_corrupt_files_are_counted_once_over_epochs(tiny_config, tmp_path, capsys):
    from leapkit.cli.distill import print_summary

    root = Path(tiny_config.data.path)
    photo = root / "class0" / "photo.jpg"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photo)
    for name in ("cut1.jpg", "cut2.jpg"):
        (root / "class1" / name).write_bytes(photo.read_bytes()[:60])
    photo.unlink()
    tiny_config.train.epochs, tiny_config.train.batch_size = 2, 13  # 26 files, 2 batches: every file every epoch
    summary = leapkit.distill(tiny_config, out=tmp_path / "run", show_progress=False)
    assert summary.unreadable_files == 2 and summary.images_skipped == 4
    print_summary(summary)
    assert "2 files, 4 reads over 2 epochs" in capsys.readouterr().out


# --- item 5: folders leapkit cannot write to -----------------------------------------------------

DROP = "-dac_override,-dac_read_search,-fowner"
SETPRIV = ["setpriv", "--bounding-set", DROP, "--inh-caps", DROP]

SCRIPT = textwrap.dedent("""
    import sys
    from leapkit.cli.main import main

    for args in sys.argv[1:]:
        sys.argv = ["leapkit", *args.split("|")]
        try:
            main()
        except SystemExit as e:
            print(f"@@ {e.code}", file=sys.stderr, flush=True)
""")


def non_root(tmp_path: Path) -> None:
    """Skip unless a process without the file-permission capabilities can be started (and is refused a 555 folder)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed: cannot drop the capabilities that let root write anywhere")
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        proc = subprocess.run([*SETPRIV, "touch", str(probe / "x")], capture_output=True, timeout=30)
    except OSError as e:
        pytest.skip(f"setpriv cannot run here: {e}")
    finally:
        probe.chmod(0o755)
    if proc.returncode == 0:
        pytest.skip("a 555 folder stays writable with the capabilities dropped (not a permission-checking filesystem)")


@pytest.mark.slow  # a fresh interpreter that imports torch: about 6 s
def test_read_only_folders_are_refused_before_the_work(run, tmp_path):
    non_root(tmp_path)
    parent = tmp_path / "ro"
    parent.mkdir()
    commands = [
        f"distill|--out|{parent / 'new'}|--no-progress",
        f"flops|{run}",
        f"eval|{run}",
        f"report|{run}|--no-plots",
    ]
    for folder in (parent, run):
        folder.chmod(0o555)
    try:
        proc = subprocess.run([*SETPRIV, sys.executable, "-c", SCRIPT, *commands], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
    finally:
        for folder in (parent, run):
            folder.chmod(0o755)
    # stderr: output 1, "@@ code 1", output 2, "@@ code 2", ...
    chunks = ("\n" + proc.stderr).split("\n@@ ")
    codes = [int(c.split("\n", 1)[0]) for c in chunks[1:]]
    outputs = [chunks[0], *(c.split("\n", 1)[1] if "\n" in c else "" for c in chunks[1:-1])]
    results = [(code, out.strip().splitlines()) for code, out in zip(codes, outputs, strict=True)]
    assert len(results) == 4, proc.stderr
    denied = "is not writable (permission denied)"
    expected = [
        f"error: cannot write the run into {parent / 'new'}: {parent} {denied}; pass --out DIR in a folder you can "
        f"write to",
        f"error: cannot write flops.json into {run}: {run} {denied}; fix the folder's permissions, or copy the run "
        f"to a folder you can write to",
        f"error: cannot write eval.json into {run}: {run} {denied}; fix the folder's permissions, or copy the run "
        f"to a folder you can write to",
        f"error: cannot write report.md and its plots into {run}: {run} {denied}; fix the folder's permissions, or "
        f"copy the run to a folder you can write to",
    ]
    for (code, lines), line in zip(results, expected, strict=True):
        assert (code, lines[-1:]) == (2, [line]), proc.stderr
        assert len(lines) == 1, proc.stderr
    assert not (parent / "new").exists() and not (run / "eval.json").exists() and not (run / "report.md").exists()
