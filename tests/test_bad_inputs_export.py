"""Bad inputs to export, bench and profiles (issue 19): names that are paths, results kept on --overwrite,
no export to bench, killed and interrupted exports, a read-only run, a missing profile file."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_run, run_cli, torchscript_export

import leapkit.deploy.export as ex
from leapkit import config
from leapkit.config import load_config, resolve_config
from leapkit.deploy.folder import tmp_folder
from leapkit.errors import ConfigError, Interrupted
from leapkit.profiles import load_target, targets_dir

FAST = dict(precision="fp32", calib_images=16, parity_images=8, probe_images=100)
FAST_CLI = ["-p", "fp32", "--calibration-images", "16", "--parity-images", "8", "--probe-images", "100"]
NAME_RULE = config.NAME_RULE
DROP_CAPS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
             "--inh-caps", "-dac_override,-dac_read_search,-fowner"]


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)  # ~100x quicker; the graph is not under test
    return make_run(tmp_path / "R")


def target_file(folder: Path, name: str) -> Path:
    """The shipped x86-cpu profile under another ``name``, as a user's .yaml file."""
    text = (targets_dir() / "x86-cpu.yaml").read_text().replace("name: x86-cpu", f"name: {json.dumps(name)}", 1)
    path = folder / "evil.yaml"
    path.write_text(text)
    return path


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


# Item 2: names from profiles, recipes and configs are names, never paths.

@pytest.mark.parametrize("name", ["../../victim", "..", ".", "a/b", ".hidden", "", "x" * 65])
def test_a_target_name_that_is_a_path_is_refused(name, run, tmp_path, monkeypatch, capsys):
    """`name: ../../victim` passed validate, and export --overwrite replaced W/victim; `..` crashed with EBUSY."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    evil = target_file(tmp_path, name)
    wrong = f"name {name!r} is not a valid name: use {NAME_RULE}"
    code, err = run_cli(["profiles", "validate", str(evil)], monkeypatch, capsys)
    assert code == 2 and one_line(err) == f"error: target {evil} is invalid: {wrong}"
    code, err = run_cli(["export", str(run), "--target", str(evil), "--overwrite", *FAST_CLI], monkeypatch, capsys)
    assert code == 2 and one_line(err) == f"error: target profile {evil} is invalid: {wrong}"
    assert (victim / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "R", "evil.yaml", "victim"]
    assert not (run / "export").exists()


def test_valid_target_names_load():
    path = targets_dir() / "x86-cpu.yaml"
    assert load_target(path).name == "x86-cpu"
    for name in ("x86-cpu", "jetson_orin.v2", "A1"):
        assert config.name_problem(name, "name") is None


def test_a_recipe_name_that_is_a_path_is_refused(tmp_path, monkeypatch, capsys):
    """The recipe name becomes the default run folder runs/<recipe>-<mode>-<time>."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("recipe: ../../elsewhere\ndata:\n  source: digits\n")
    line = f"recipe name '../../elsewhere' is not a valid name: use {NAME_RULE}"
    assert config.recipe_problems(str(recipe)) == [line]
    with pytest.raises(ConfigError, match="recipe name '../../elsewhere' is not a valid name"):
        resolve_config(str(recipe))
    code, err = run_cli(["profiles", "validate", str(recipe)], monkeypatch, capsys)
    assert code == 2 and one_line(err) == f"error: recipe {recipe} is invalid: {line}"
    # A run's config.yaml is a config too.
    run_config = tmp_path / "config.yaml"
    run_config.write_text("recipe: ..\n")
    with pytest.raises(ConfigError, match="recipe name '..' is not a valid name"):
        load_config(run_config)
    # Without a recipe key, the file's name is the recipe's name.
    plain = tmp_path / "ok.yaml"
    plain.write_text("data:\n  source: digits\n")
    assert resolve_config(str(plain)).recipe == "ok"


def test_profiles_validate_a_missing_file_says_file_not_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["profiles", "validate", "missing.yaml"], monkeypatch, capsys)
    assert code == 2
    assert one_line(err) == ("error: file not found: missing.yaml; pass an existing .yaml file, or a shipped target "
                             "or recipe name (`leapkit profiles list`)")


def test_profiles_validate_a_file_that_is_not_yaml(tmp_path, monkeypatch, capsys):
    """A real file without the .yaml suffix was reported as 'neither a target nor a recipe'."""
    path = tmp_path / "profile.txt"
    path.write_text("name: x\n")
    code, err = run_cli(["profiles", "validate", str(path)], monkeypatch, capsys)
    assert code == 2
    assert one_line(err) == f"error: {path} is not a .yaml file; a target or recipe file's name ends in .yaml or .yml"


def test_a_shipped_name_never_reaches_outside_the_shipped_folders():
    """targets_dir() / '../recipes/demo.yaml' is a path, not a shipped target."""
    with pytest.raises(ConfigError, match=r"unknown target '../recipes/demo'"):
        load_target("../recipes/demo")
    with pytest.raises(ConfigError, match=r"unknown recipe '../targets/x86-cpu'"):
        resolve_config("../targets/x86-cpu")


# Item 4: --overwrite deletes nothing leapkit did not write.

def test_overwrite_moves_the_devices_results_aside(run, caplog):
    """The README copies results/ from the device back into RUN/export/<target>/; a re-export removed it."""
    first = ex.export(run, target="x86-cpu", **FAST)
    results = first.out_dir / "results" / "fp32"
    results.mkdir(parents=True)
    (results / "check.json").write_text('{"passed": true}\n')
    (first.out_dir / "model.engine").write_bytes(b"built on the device")
    leapkit_files = sorted([*first.manifest.files, "manifest.json"])
    with caplog.at_level(logging.INFO, logger="leapkit.deploy.folder"):
        second = ex.export(run, target="x86-cpu", overwrite=True, **FAST)
    assert sorted(p.name for p in second.out_dir.iterdir()) == leapkit_files
    kept = [p for p in (run / "export").iterdir() if p.name.startswith("x86-cpu.kept-")]
    assert len(kept) == 1
    assert (kept[0] / "results" / "fp32" / "check.json").read_text() == '{"passed": true}\n'
    assert (kept[0] / "model.engine").read_bytes() == b"built on the device"
    assert sorted(p.name for p in kept[0].iterdir()) == ["model.engine", "results"]
    lines = [r.getMessage() for r in caplog.records if "kept what leapkit did not write" in r.getMessage()]
    assert lines == [f"kept what leapkit did not write in the old export (model.engine, results/): moved to "
                     f"{kept[0]} (it belongs to the export this one replaced)"]
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")]


def test_overwrite_of_a_clean_export_keeps_nothing_aside(run):
    ex.export(run, target="x86-cpu", **FAST)
    ex.export(run, target="x86-cpu", overwrite=True, **FAST)
    assert sorted(p.name for p in (run / "export").iterdir()) == ["latest", "x86-cpu"]


# Item 8: no export to bench; a killed export's tmp folder.

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_bench_a_run_without_an_export_says_how_to_make_one(run, monkeypatch, capsys):
    """It timed the PyTorch student alone and exited 1 'FAIL ... PyTorch eager'."""
    final = run / "export" / "x86-cpu"
    for case in ("never exported", "export killed"):
        if case == "export killed":
            killed = tmp_folder(final, dead_pid())
            killed.mkdir(parents=True)
            (killed / "model.onnx").write_bytes(b"half")
        code, err = run_cli(["bench", str(run), "--target", "x86-cpu", "-n", "5", "--warmup", "0"], monkeypatch, capsys)
        assert code == 2, case
        assert one_line(err) == (f"error: {run} has no export for x86-cpu: run `leapkit export {run} --target x86-cpu` "
                                 f"first (or pass --runtime torch to time the PyTorch student alone)")
    assert not (run / "bench").exists()
    # Eager timing asked for by name is still there.
    code, err = run_cli(["bench", str(run), "--target", "x86-cpu", "--runtime", "torch", "-n", "5", "--warmup", "0",
                         "--threads", "1", "--budget-ms", "1000000"], monkeypatch, capsys)
    assert code == 0, err


def test_a_later_export_removes_what_killed_exports_left(run):
    final = run / "export" / "x86-cpu"
    killed = tmp_folder(final, dead_pid())
    running = tmp_folder(final, 1)  # init: alive, so an export still running
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half")
    others = [final.with_name(".x86-cpu.tmp-abc"), final.with_name(f".jetson.tmp-{dead_pid()}"),
              final.with_name(f"x86-cpu.tmp-{dead_pid()}")]
    for folder in others:
        folder.mkdir()
    ex.export(run, target="x86-cpu", **FAST)
    assert not killed.exists() and running.is_dir()
    assert all(p.is_dir() for p in others)


# Item 13: Ctrl-C during export.

def test_ctrl_c_during_export_is_one_line_and_replaces_nothing(run, monkeypatch, capsys):
    """It exited 130 with nothing on stderr."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    final = run / "export" / "x86-cpu"
    monkeypatch.setattr(ex, "export_onnx", interrupt)
    args = ["export", str(run), "--target", "x86-cpu", "--overwrite", *FAST_CLI]
    try:
        code, err = run_cli(args, monkeypatch, capsys)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped leapkit's error handling")
    assert code == 130
    assert one_line(err) == (f"error: export for x86-cpu interrupted: nothing was replaced ({final} was not made); "
                             f"run the export again to finish it")
    assert not (run / "export").exists() or not any((run / "export").iterdir())

    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    ex.export(run, target="x86-cpu", **FAST)
    before = (final / "manifest.json").read_bytes()
    monkeypatch.setattr(ex, "export_onnx", interrupt)
    with pytest.raises(Interrupted, match=rf"nothing was replaced \({final} is as it was\)"):
        ex.export(run, target="x86-cpu", overwrite=True, **FAST)
    assert (final / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in (run / "export").iterdir()) == ["latest", "x86-cpu"]


@pytest.mark.slow
def test_sigint_to_the_export_command(tmp_path):
    """The real command, interrupted by SIGINT while it writes: exit 130, one line, no tmp folder."""
    run = make_run(tmp_path / "R")
    proc = subprocess.Popen([sys.executable, "-m", "leapkit", "export", str(run), "--target", "x86-cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = tmp_folder(run / "export" / "x86-cpu", proc.pid)
    deadline = time.monotonic() + 120
    while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not tmp.exists():
        proc.kill()
        pytest.skip("the export finished or failed before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.startswith("error: export for x86-cpu interrupted: nothing was replaced") and err.count("\n") == 1, err
    assert not tmp.exists()


# Item 5: a read-only run.

def drop_caps_works(folder: Path) -> bool:
    """Whether the file-permission capabilities can be dropped here, so that chmod 555 binds even root."""
    if shutil.which("setpriv") is None:
        return False
    probe = subprocess.run([*DROP_CAPS, "touch", str(folder / "probe")], capture_output=True)
    return probe.returncode != 0 and not (folder / "probe").exists()


def test_export_on_a_read_only_run_is_one_line_before_any_work(run, tmp_path):
    run.chmod(0o555)
    try:
        if not drop_caps_works(run):
            pytest.skip("cannot drop the file-permission capabilities here (setpriv missing or not allowed)")
        proc = subprocess.run([*DROP_CAPS, sys.executable, "-m", "leapkit", "export", str(run), "--target", "x86-cpu"],
                              capture_output=True, text=True, timeout=300)
    finally:
        run.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr) == (f"error: cannot write the export into {run / 'export'}: {run} is not writable "
                                     f"(permission denied); export a run you can write to (copy the run folder "
                                     f"somewhere writable)")
    assert not (run / "export").exists()


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` bytes."""
    (disk / "filler").write_bytes(bytes(max(shutil.disk_usage(disk).free - leave, 0)))


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_full_disk_during_an_export_is_one_line_and_replaces_nothing(small_disk, monkeypatch, capsys):
    monkeypatch.setattr(ex, "export_onnx", torchscript_export)
    disk = small_disk(4096)
    run = make_run(disk / "R")
    fill(disk, 64 * 1024)  # less than the student's graph
    before = files_of(run)
    code, err = run_cli(["export", str(run), "--target", "x86-cpu", *FAST_CLI], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "ran out of space in" in lines[0] and "was not made" in lines[0] and "df -h" in lines[0], err
    assert files_of(run) == before and not any((run / "export").iterdir())


def test_a_full_disk_under_a_bench_report_is_one_line_naming_it(small_disk, tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "R")
    out = small_disk(64)
    fill(out, 0)
    code, err = run_cli(["bench", str(run), "--target", "x86-cpu", "--runtime", "torch", "-n", "3", "--warmup", "0",
                         "--out", str(out)], monkeypatch, capsys)
    report = out / "bench" / "x86-cpu.json"
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (f"error: no space left on device while writing {report}; "
                                            "free space there (df -h) and run the command again")
    assert sorted(p.name for p in out.rglob("*")) == ["bench", "filler"]  # no report, no temporary file


def test_out_of_memory_is_told_apart_from_other_errors():
    import numpy as np
    import torch

    from leapkit.cli.main import out_of_memory_line

    errors = []
    for allocate in (lambda: torch.empty(2**46, dtype=torch.uint8), lambda: np.empty(2**50, dtype=np.uint8)):
        with pytest.raises((RuntimeError, MemoryError)) as e:
            allocate()
        errors.append(e.value)
    assert out_of_memory_line(errors[0]).startswith("out of memory (an allocation of 65536.0 GiB)")
    assert out_of_memory_line(errors[1]).startswith("out of memory (an allocation of 1.00 PiB)")
    assert out_of_memory_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert out_of_memory_line(ValueError("out of memory")) is None
