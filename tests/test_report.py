"""`leapkit report` and the plots: sections from every stage, hints for missing ones, bad runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_images
from PIL import Image

from leapkit.config import resolve_config, save_config
from leapkit.errors import ConfigError, MissingDependency, RunError
from leapkit.plots import FILES, plot_run
from leapkit.report import REPORT, write_report
from leapkit.train import distill

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_run(root: Path, teacher_file: Path, data: Path, mode: str = "leap") -> Path:
    """A real 2-epoch distillation of the demo architectures at 16 px on a 24-image folder."""
    cfg = resolve_config("demo", {
        "model": {"teacher_weights": str(teacher_file), "img_size": 16},
        "data": {"source": "folder", "path": str(data), "crop_scale": [0.5, 1.0]},
        "train": {"epochs": 2, "batch_size": 8, "eval_at_end": False},
        "curriculum": {"mode": mode, "max_epochs_per_block": 1},
    })
    distill(cfg, out=root, show_progress=False)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_images(root / "train", n=24)
    make_images(root / "val", n=12)
    return root


@pytest.fixture(scope="module")
def leap_run(tmp_path_factory, teacher_file, data_root) -> Path:
    return tiny_run(tmp_path_factory.mktemp("runs") / "leap", teacher_file, data_root)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, teacher_file, data_root) -> Path:
    return tiny_run(tmp_path_factory.mktemp("runs") / "baseline", teacher_file, data_root, mode="baseline")


def section(text: str, title: str) -> str:
    """The Markdown of one `## title` section."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    return dest


def test_plots_are_valid_pngs(leap_run, baseline_run, tmp_path):
    for run in (copy_run(leap_run, tmp_path / "leap"), copy_run(baseline_run, tmp_path / "baseline")):
        paths = plot_run(run)
        assert set(paths) == set(FILES)
        for name, path in paths.items():
            assert path == run / FILES[name]
            assert path.read_bytes()[:8] == PNG_MAGIC
            with Image.open(path) as img:
                img.verify()
            with Image.open(path) as img:
                assert img.width >= 600 and img.height >= 300


def test_plot_unknown_name(leap_run):
    with pytest.raises(ValueError, match="unknown plot"):
        plot_run(leap_run, ["nope"])


def test_missing_sections_name_their_commands(leap_run, tmp_path):
    run = copy_run(leap_run, tmp_path / "run")
    report = write_report(run, plots=False)
    text = report.path.read_text()
    assert report.path == run / REPORT
    assert set(report.missing) == {"Evaluation", "Export", "Latency"}
    assert f"leapkit eval {run}" in section(text, "Evaluation")
    assert f"leapkit report {run} --eval" in section(text, "Evaluation")
    assert f"leapkit export {run} --target T" in section(text, "Export")
    assert f"leapkit bench {run} --target T" in section(text, "Latency")
    assert "Not yet produced: evaluation" in text
    assert "![" not in text  # --no-plots draws nothing
    assert not (run / FILES["curriculum"]).exists()


def test_full_report_has_every_section(leap_run, tmp_path):
    from leapkit.deploy.export import export
    from leapkit.latency.bench import bench

    run = copy_run(leap_run, tmp_path / "run")
    (run / "flops.json").unlink(missing_ok=True)
    export(run, target="x86-cpu", precision="fp32", check=False, calib_images=16, parity_images=8, probe_images=36)
    bench(run, target="x86-cpu", runtimes=["onnxruntime"], warmup_s=0.0, iterations=5, threads=1, check=False)
    report = write_report(run, evaluate=True)
    text = report.path.read_text()

    assert report.missing == {}
    for title in ("Run", "Curriculum", "Training FLOPs", "Evaluation", "Export", "Latency"):
        assert f"\n## {title}\n" in text, title
    assert "`leapkit_demo_student`" in section(text, "Run")
    assert "Finished: 6 steps over 2 epochs" in section(text, "Run")

    curriculum = json.loads((run / "curriculum.json").read_text())
    visited = " \u2192 ".join(map(str, curriculum["blocks_visited"]))
    assert f"Blocks visited: {visited}" in section(text, "Curriculum")
    assert "![curriculum](curriculum.png)" in text and "![loss](loss.png)" in text

    flops = json.loads((run / "flops.json").read_text())  # recomputed because it was missing
    assert flops["curriculum"] == "leap"
    saving = flops["train_flops_saving_pct"]
    words = f"{saving:.1f}% saved" if saving >= 0 else f"{-saving:.1f}% more"
    assert f"Training FLOPs against the fixed-target baseline: {words}" in section(text, "Training FLOPs")
    assert "![train flops](train_flops.png)" in text

    ev = json.loads((run / "eval.json").read_text())
    student, teacher = ev["linear_probe_top1"], ev["teacher"]["linear_probe_top1"]
    assert f"| linear probe top-1 (%) | {student:.2f} | {teacher:.2f} |" in section(text, "Evaluation")

    exp = section(text, "Export")
    assert "### x86-cpu: ok" in exp and "| model.onnx |" in exp and "worst cosine of at least 0.9999 for fp32" in exp
    lat = section(text, "Latency")
    verdict = json.loads((run / "bench" / "x86-cpu.json").read_text())["verdict"]
    assert f"**Verdict: {verdict}**" in lat and "| ONNX fp32 |" in lat
    predicted = section(text, "Prediction against measurement")  # bench predicts for x86-cpu; no --student auto
    assert "| bench | x86-cpu | ONNX fp32 | fp32 |" in predicted and "distill --student auto" not in predicted
    assert set(report.plots) == set(FILES) and all(p.is_file() for p in report.plots.values())

    # Every table is the one the commands print, read through the stage's record.
    from leapkit.deploy.manifest import ExportManifest
    from leapkit.deploy.summary import variants_table
    from leapkit.eval.record import EvalReport
    from leapkit.flops import FlopsReport, inference_table, train_flops_table
    from leapkit.latency.records import BenchReport
    from leapkit.latency.render import latency_table

    f = FlopsReport.load(run)
    assert train_flops_table(f).to_markdown() in section(text, "Training FLOPs")
    assert inference_table(f).to_markdown() in section(text, "Training FLOPs")
    assert EvalReport.load(run).table().to_markdown() in section(text, "Evaluation")
    assert variants_table(ExportManifest.load(run / "export" / "x86-cpu")).to_markdown() in exp
    assert latency_table(BenchReport.load(run / "bench" / "x86-cpu.json")).to_markdown() in lat


def test_stale_eval_is_flagged(leap_run, tmp_path):
    run = copy_run(leap_run, tmp_path / "run")
    result = {"linear_probe_top1": 50.0, "linear_probe_top5": 100.0, "knn_top1": 40.0, "knn_top5": 90.0,
              "retrieval_map": 30.0, "n_train": 24, "n_val": 12, "feature_dim": 32, "pool": "cls", "data": "folder"}
    (run / "eval.json").write_text(json.dumps(result))
    student = run / "student.safetensors"
    os.utime(run / "eval.json", (1, 1))  # written long before the student
    text = write_report(run, plots=False).path.read_text()
    ev = section(text, "Evaluation")
    assert "`eval.json` is older than `student.safetensors`" in ev and "| linear probe top-1 (%) | 50.00 |" in ev
    assert "The teacher was not evaluated" in ev
    assert student.is_file()


def test_baseline_report_says_no_saving(baseline_run, tmp_path):
    run = copy_run(baseline_run, tmp_path / "run")
    text = write_report(run, plots=False).path.read_text()
    assert "This run is the fixed-target baseline" in section(text, "Training FLOPs")
    assert "fixed-target baseline: the teacher's last block" in section(text, "Run")


def test_report_without_matplotlib_still_writes(leap_run, tmp_path, monkeypatch):
    run = copy_run(leap_run, tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingDependency, match="matplotlib"):
        plot_run(run)
    text = write_report(run).path.read_text()
    assert "Plots were not drawn" in text and "![" not in text


def test_run_without_steps_is_an_error(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    save_config(resolve_config("demo"), run / "config.yaml")
    with pytest.raises(RunError, match="records no training steps"):
        write_report(run)


def leapkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leapkit", *args], capture_output=True, text=True, timeout=120)


def test_cli_report_end_to_end(leap_run, tmp_path):
    run = copy_run(leap_run, tmp_path / "run")
    proc = leapkit("report", str(run), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert (run / REPORT).is_file()
    assert "Training FLOPs" in proc.stdout and "missing: run `leapkit export" in proc.stdout


def test_cli_bad_run_is_one_line_exit_2(tmp_path):
    proc = leapkit("report", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a leapkit run (no config.yaml)" in lines[0], proc.stderr


@pytest.mark.parametrize(
    "args, error, message",
    [
        (["{tmp}/nowhere"], RunError, "run directory not found"),
        (["{run}", "--device", "cuda"], ConfigError, "--device only applies to --eval"),
    ],
)
def test_cli_bad_input(leap_run, tmp_path, args, error, message):
    from typer.testing import CliRunner

    from leapkit.cli.main import app

    result = CliRunner().invoke(app, ["report", *(a.format(tmp=tmp_path, run=leap_run) for a in args)])
    assert isinstance(result.exception, error) and message in str(result.exception)
