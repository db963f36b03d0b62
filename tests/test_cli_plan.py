"""`leapkit plan` and `leapkit distill --student auto` through the real entry point: offline, seconds, no weights."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from leapkit.errors import ConfigError
from leapkit.planning.candidates import candidates
from leapkit.planning.target_model import model_for
from leapkit.profiles import load_target, targets_dir
from leapkit.train import auto_student

KEYS = {"student", "img_size", "precision", "predicted_ms", "predicted_range_ms", "params", "gflops", "fits",
        "train_cost"}


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)


def test_plan_one_model_as_json(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["leapkit", "plan", "--student", "vit_small_patch14_dinov2", "--img-size", "224",
                                     "--target", "jetson-orin-nano", "--format", "json"])
    from leapkit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None)
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["precision"] for r in rows) == ["fp16", "fp32", "int8"]
    for r in rows:
        assert set(r) >= KEYS and r["student"] == "vit_small_patch14_dinov2" and r["img_size"] == 224
        low, high = r["predicted_range_ms"]
        assert low < r["predicted_ms"] < high and r["train_cost"] is None and r["calibrated"] is False
        assert r["params"] == 21_628_800 and r["gflops"] == pytest.approx(12.27, rel=0.01)
        assert r["fits"] is {"fits": True, "does not fit": False}.get(r["verdict"])
    assert not list(Path.cwd().glob("*.png"))  # JSON only


def _plan(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``leapkit plan ARGS`` through the real entry point: exit code, stdout, stderr."""
    from leapkit.cli.main import main

    monkeypatch.setattr("sys.argv", ["leapkit", "plan", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_plan_candidates_for_a_teacher_opens_with_the_answer_and_shows_the_frontier(tmp_path, monkeypatch, capsys):
    start = time.perf_counter()
    plot = tmp_path / "frontier.png"
    args = ["--teacher", "vit_large_patch14_dinov2", "--target", "jetson-orin-nano", "--budget-ms", "20"]
    code, out, err = _plan([*args, "--plot", str(plot)], monkeypatch, capsys)
    assert code == 0, err
    assert time.perf_counter() - start < 60  # seconds on a quiet machine; generous for a shared CI runner
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.startswith("largest student whose whole range fits 20 ms: ")
    shown = [line for line in out.splitlines() if line.startswith("│ vit_")]
    code, every, err = _plan([*args, "--all", "--plot", str(plot)], monkeypatch, capsys)
    assert code == 0, err
    all_rows = [line for line in every.splitlines() if line.startswith("│ vit_")]
    assert 3 <= len(shown) <= 25 < len(all_rows)

    def keys(lines: list[str]) -> set[tuple[str, ...]]:  # student, px, precision
        return {tuple(cell.strip() for cell in line.split("│")[1:4]) for line in lines}

    assert keys(shown) <= keys(all_rows) and len(keys(shown)) == len(shown)
    assert f"{len(shown)} of {len(all_rows)} candidates: the accuracy-capacity frontier" in " ".join(out.split())


@pytest.mark.parametrize("target", [p.stem for p in sorted(targets_dir().glob("*.yaml"))])
def test_every_shipped_target_plans_with_a_range(target, monkeypatch, capsys):
    code, out, err = _plan(["--target", target, "--student", "vit_small_patch16_224", "--img-size", "224",
                            "--format", "json"], monkeypatch, capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows and {r["target"] for r in rows} == {target}
    for r in rows:
        low, high = r["predicted_range_ms"]
        assert 0 < low < r["predicted_ms"] < high and r["source"].startswith("not calibrated")
    if target in ("raspberry-pi-5",):
        assert all("unvalidated" in r["source"] for r in rows)


def test_plan_json_carries_the_training_cost(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["leapkit", "plan", "--teacher", "vit_giant_patch14_dinov2.lvd142m", "--target",
                                     "jetson-orin-nano", "--student", "vit_tiny_patch14_leapkit", "--img-size", "224",
                                     "--precision", "fp16", "--format", "json", "--gpu", "H100"])
    from leapkit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None)
    (row,) = json.loads(capsys.readouterr().out)
    cost = row["train_cost"]
    assert cost["gpu"] == "H100" and cost["utilisation"] == 0.4 and cost["epochs"] == 100
    assert 0 < cost["leap_flops"] < cost["baseline_flops"] and cost["leap_gpu_hours"] < cost["baseline_gpu_hours"]


@pytest.mark.parametrize("args, message", [
    (["--student", "vit_small_patch14_dinov2", "--img-size", "100"],
     "no candidate fits the input size(s) 100: each must be a multiple of a student's patch"),
    (["--precision", "fp16", "--target", "x86-cpu"], "target x86-cpu does not run fp16"),
    (["--student", "vit_nonexistent"], "unknown timm model 'vit_nonexistent'"),
    (["--teacher", "vit_giant_patch14_dinov2", "--gpu", "V100"], "unknown GPU 'V100'"),
    (["--budget-ms", "-1"], "--budget-ms must be > 0, got -1.0"),
])
def test_plan_bad_input_is_one_line_exit_2(args, message, monkeypatch, capsys):
    target = [] if "--target" in args else ["--target", "jetson-orin-nano"]
    code, err = run_cli(["plan", *target, *args], monkeypatch, capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not list(Path.cwd().glob("*.png"))


@pytest.mark.parametrize("args, message", [
    (["--student", "auto"], "--student auto needs --target T"),
    (["--target", "x86-cpu"], "--target and --budget-ms choose the student: pass them with --student auto"),
    (["--student", "auto", "--target", "x86-cpu", "--budget-ms", "0.0001"], "no candidate student fits 0.0001 ms"),
    (["--budget-ms", "5"], "--target and --budget-ms choose the student: pass them with --student auto"),
    (["--student", "auto", "--target", "nowhere"], "unknown target 'nowhere'"),
    (["--student", "auto", "--target", "x86-cpu", "--budget-ms", "-1"], "--budget-ms must be > 0"),
])
def test_distill_student_auto_errors_before_training(args, message, teacher_file, image_dir, tmp_path, monkeypatch,
                                                     capsys):
    out = tmp_path / "run"
    code, err = run_cli(["distill", "--teacher-weights", str(teacher_file), "--data", str(image_dir), "--out", str(out),
                         "--no-progress", *args], monkeypatch, capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not out.exists()


def test_distill_student_auto_trains_the_largest_fit_and_records_its_forecast(teacher_file, image_dir, tmp_path,
                                                                              monkeypatch, capsys):
    """End to end at 16 px: the budget is the one candidate's predicted high end, so that it alone fits."""
    profile = load_target("x86-cpu")
    model = model_for(profile)
    precisions = tuple(p for p in profile.precisions if p in model.efficiencies)
    found = candidates(profile, img_sizes=(16,), precisions=precisions)
    predicted = {(c.student, c.precision): model.predict(c.shape, c.precision, profile.batch) for c in found}
    (student, precision), best = min(predicted.items(), key=lambda kv: kv[1].high_ms)
    assert sum(p.high_ms <= best.high_ms for p in predicted.values()) == 1
    out = tmp_path / "run"
    code, err = run_cli(["distill", "--teacher-weights", str(teacher_file), "--data", str(image_dir),
                         "--img-size", "16", "--batch-size", "8", "--epochs", "1", "--set", "train.eval_at_end=false",
                         "--set", "curriculum.max_epochs_per_block=1", "--student", "auto", "--target", "x86-cpu",
                         "--budget-ms", repr(best.high_ms), "--out", str(out), "--no-progress"], monkeypatch, capsys)
    assert code in (0, None), err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["student"] == student and (out / "student.safetensors").is_file()
    plan = saved["plan"]
    assert (plan["target"], plan["budget_ms"], plan["precision"]) == ("x86-cpu", best.high_ms, precision)
    assert plan["predicted_ms"] == pytest.approx(best.ms, abs=1e-4)
    assert plan["predicted_range_ms"] == pytest.approx([best.low_ms, best.high_ms], abs=1e-4)
    assert (plan["calibrated"], plan["source"], plan["candidates"]) == (False, model.source, len(found))


def test_student_auto_takes_the_largest_that_fits_and_records_it(tiny_config):
    from leapkit.config import save_config

    tiny_config.model.student = "auto"
    cfg = auto_student(tiny_config, "jetson-orin-nano", 5.0)
    plan = cfg.plan
    assert cfg.model.student != "auto" and plan.target == "jetson-orin-nano" and plan.budget_ms == 5.0
    assert plan.predicted_range_ms[1] <= 5.0 and plan.predicted_range_ms[0] < plan.predicted_ms
    assert plan.precision in ("fp32", "fp16", "int8") and plan.calibrated is False and plan.candidates > 3
    path = Path("config.yaml")
    save_config(cfg, path)
    saved = yaml.safe_load(path.read_text())
    assert saved["plan"]["predicted_range_ms"] == list(plan.predicted_range_ms) and saved["model"]["student"] == (
        cfg.model.student)
    with pytest.raises(ConfigError, match="a resumed run keeps its own"):
        auto_student(tiny_config, "jetson-orin-nano", 5.0, resumed=True)
