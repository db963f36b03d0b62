"""The wheel a user installs: it holds every file of the source tree, and its modules import from it alone.

The rest of the suite runs on the editable install, which reads the source tree and so cannot see a module
that the wheel leaves out. These tests build the real wheel (setuptools, no network) and look inside it.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "setup.py").is_file(), reason="needs the source tree (setup.py)")


def source_files() -> dict[str, Path]:
    """Every file the wheel must carry, by its path inside the wheel: leapkit/ as it is, profiles/ as
    leapkit/_profiles/."""
    wanted = {}
    for folder, inside in (("leapkit", "leapkit"), ("profiles", "leapkit/_profiles")):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                wanted[f"{inside}/{path.relative_to(ROOT / folder).as_posix()}"] = path
    return wanted


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of what the build reads, so that neither the checkout's build/ (whose stale files setuptools
    would pack) nor this build touches the checkout."""
    tree, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    for name in ("leapkit", "profiles"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(tree)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("leapkit-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_source_tree(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = sorted(set(source_files()) - names)
    assert not missing, f"not in {wheel.name}: {missing}"
    assert "leapkit/_profiles/targets/x86-cpu.yaml" in names and "leapkit/assets/demo_teacher.safetensors" in names
    strays = sorted(n for n in names if not n.startswith(("leapkit/", "leapkit-")))
    assert not strays, f"{wheel.name} installs files outside leapkit/: {strays}"


def test_the_wheel_carries_pyprojects_version_and_the_command(wheel):
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(zf.read(meta))
        (entry,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(entry).decode()
    assert metadata["Version"] == project["version"]
    assert "leapkit = leapkit.cli.main:main" in entry_points


def test_every_module_imports_from_the_wheel_alone(wheel, tmp_path):
    """Unpacked into a folder of its own and imported from there (the editable install's finder comes after the
    path), every module of the package loads, and from that folder, not from the source tree."""
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_install.py"), str(ROOT)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("leapkit ") and f"modules import from {target / 'leapkit'}" in proc.stdout


def test_the_install_check_names_a_module_the_wheel_lacks(wheel, tmp_path):
    """scripts/check_install.py (also run by .ci/run) against a wheel with one module taken out."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    (target / "leapkit" / "planning" / "shape.py").unlink()
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_install.py"), str(ROOT)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "leapkit.planning.shape: in " in proc.stdout and "but not installed" in proc.stdout
