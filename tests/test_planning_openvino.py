"""The latency model for OpenVINO on a CPU target: calibrated on its own, found per runtime, planned, and forecast.

The calibration runs for real through the entry point (OpenVINO on this machine, the quick grid, short timings);
the rest reads a calibration file written here, so that the values asserted are the file's, never a timing.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from helpers import run_cli

from leapkit.errors import ConfigError
from leapkit.host import cpu_bf16
from leapkit.latency.forecast import Forecaster
from leapkit.latency.records import BenchResult
from leapkit.planning.candidates import check_precisions, modelled_precisions
from leapkit.planning.fit import FitRequest
from leapkit.planning.fit_file import LatencyFit, default_path, now
from leapkit.planning.latency_model import Efficiencies
from leapkit.planning.microbench import QUICK_GRID
from leapkit.planning.plan import PlanRequest, plan, plan_table
from leapkit.planning.shape import of_timm
from leapkit.planning.target_model import model_for
from leapkit.profiles import load_target

FIX = "run leapkit calibrate --target x86-cpu --runtime openvino on the target"
SHAPE = of_timm("vit_tiny_patch16_224", 224)


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)


def openvino_calibration(precisions: tuple[str, ...] = ("fp32", "bf16", "int8")) -> LatencyFit:
    """An OpenVINO calibration of x86-cpu in the user's folder: bf16 twice as fast as fp32, int8 four times."""
    speed = {"fp32": 1.0, "bf16": 2.0, "int8": 4.0}
    cal = LatencyFit(
        target="x86-cpu", created=now(), environment={"host": "box"}, runtime="openvino", threads=2,
        efficiencies={p: Efficiencies(90.0 * speed[p], 40.0, 12.0, 0.4, 0.2, 0.3, 25.0, 150.0) for p in precisions},
        ranges={p: 1.2 for p in precisions}, method="OpenVINO CPU",
    )
    cal.save(default_path("x86-cpu", "openvino"))
    return cal


def test_each_runtime_has_its_own_calibration_file(tmp_path):
    base = tmp_path / "config" / "leapkit" / "calibration"
    assert default_path("x86-cpu") == base / "x86-cpu.json"  # the profile's runtime: the file it always had
    assert default_path("x86-cpu", "openvino") == base / "x86-cpu-openvino.json"


def test_bf16_is_modelled_for_openvino_only():
    x86 = load_target("x86-cpu")
    assert modelled_precisions(x86) == ("fp32", "int8")
    assert modelled_precisions(x86, "openvino") == ("fp32", "bf16", "int8")
    assert check_precisions(x86, (), "openvino") == ("fp32", "bf16", "int8")
    with pytest.raises(ConfigError, match=r"^the onnxruntime latency model of x86-cpu does not cover bf16; plan or "
                                          r"calibrate fp32, int8; bf16 with --runtime openvino$"):
        check_precisions(x86, ("bf16",))
    with pytest.raises(ConfigError, match="target x86-cpu does not run fp16; its precisions are fp32, bf16, int8"):
        check_precisions(x86, ("fp16",), "openvino")


def test_the_openvino_model_is_the_openvino_calibration_and_nothing_else(tmp_path):
    x86 = load_target("x86-cpu")
    with pytest.raises(ConfigError) as e:
        model_for(x86, runtime="openvino")  # no published fallback: the profile's figures are ONNX Runtime's
    assert str(e.value) == (f"target x86-cpu has no openvino calibration ({default_path('x86-cpu', 'openvino')}), "
                            f"and published efficiencies describe onnxruntime only; {FIX}")
    cal = openvino_calibration()
    m = model_for(x86, runtime="openvino")
    assert m.calibrated and m.runtime == "openvino" and m.precisions == ("fp32", "bf16", "int8")
    assert m.source == f"calibrated on box, {cal.created[:10]}"
    assert m.predict(SHAPE, "bf16").ms < m.predict(SHAPE, "fp32").ms  # the file's faster bf16 GEMMs
    assert model_for(x86).runtime == "onnxruntime" and not model_for(x86).calibrated  # the default is untouched
    path = default_path("x86-cpu", "openvino")
    with pytest.raises(ConfigError, match=r"x86-cpu-openvino.json calibrates openvino on x86-cpu, not onnxruntime; "
                                          r"pass --runtime openvino, or calibrate onnxruntime with leapkit calibrate "
                                          r"--target x86-cpu --runtime onnxruntime$"):
        model_for(x86, path)  # a given file for another runtime than the one asked
    with pytest.raises(ConfigError, match=r"^target x86-cpu deploys with openvino, onnxruntime, not 'tensorrt'; pass "
                                          r"--runtime openvino or onnxruntime$"):
        model_for(x86, runtime="tensorrt")


def test_plan_for_openvino_has_runtime_and_bf16_rows():
    cal = openvino_calibration()
    report = plan(PlanRequest(load_target("x86-cpu"), students=("vit_tiny_patch16_224",), img_sizes=(224,),
                              runtime="openvino"))
    rows = [r.to_dict() for r in report.rows]
    assert sorted(r["precision"] for r in rows) == ["bf16", "fp32", "int8"]
    model = model_for(load_target("x86-cpu"), runtime="openvino")
    for r in rows:
        assert r["runtime"] == "openvino" and r["calibrated"] is True
        assert r["predicted_ms"] == pytest.approx(model.predict(SHAPE, r["precision"]).ms, abs=1e-4)
    assert plan_table(report).caption.startswith(f"Latency model of openvino, calibrated on box, {cal.created[:10]}.")
    default = plan(PlanRequest(load_target("x86-cpu"), students=("vit_tiny_patch16_224",), img_sizes=(224,)))
    assert {(r.runtime, r.precision) for r in default.rows} == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    assert plan_table(default).caption.startswith("Latency model of onnxruntime, not calibrated: ")


def test_plan_json_names_the_runtime(capsys, monkeypatch):
    openvino_calibration(("fp32", "int8"))  # calibrated on a CPU without bf16: bf16 is left out with a note
    monkeypatch.setattr("sys.argv", ["leapkit", "plan", "--student", "vit_tiny_patch16_224", "--img-size", "224",
                                     "--target", "x86-cpu", "--runtime", "openvino", "--format", "json"])
    from leapkit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None)
    rows = json.loads(capsys.readouterr().out)
    assert [(r["runtime"], r["precision"]) for r in sorted(rows, key=lambda r: r["precision"])] == [
        ("openvino", "fp32"), ("openvino", "int8")]
    report = plan(PlanRequest(load_target("x86-cpu"), students=("vit_tiny_patch16_224",), img_sizes=(224,),
                              runtime="openvino"))
    assert report.source.startswith("calibrated on box, ")
    assert report.notes == [f"no bf16 efficiencies in the latency model ({report.source}); bf16 left out"]


@pytest.mark.parametrize("args, message", [
    (["plan", "--student", "vit_tiny_patch16_224", "--img-size", "224", "--target", "x86-cpu", "--runtime",
      "tensorrt"], "error: target x86-cpu deploys with openvino, onnxruntime, not 'tensorrt'; pass --runtime "
                   "openvino or onnxruntime"),
    (["plan", "--student", "vit_tiny_patch16_224", "--img-size", "224", "--target", "x86-cpu", "--runtime",
      "openvino"], "no openvino calibration"),
    (["calibrate", "--target", "x86-cpu", "--runtime", "tensorrt", "--quick"],
     "error: target x86-cpu deploys with openvino, onnxruntime, not 'tensorrt'"),
    (["calibrate", "--target", "jetson-orin-nano", "--runtime", "openvino", "--quick"],
     "error: target jetson-orin-nano deploys with tensorrt, not 'openvino'; pass --runtime tensorrt"),
])
def test_a_runtime_the_target_lacks_is_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "config").exists() and not list(tmp_path.glob("*.png"))  # nothing written


def test_bf16_calibration_needs_a_cpu_with_bf16(monkeypatch, caplog):
    monkeypatch.setattr("leapkit.host.cpu_bf16", lambda: None)
    x86 = load_target("x86-cpu")
    with pytest.raises(ConfigError, match=r"^this CPU has no bf16 arithmetic \(AVX512-BF16 or AMX\), so OpenVINO "
                                          r"would run bf16 in fp32; calibrate bf16 on a CPU of x86-cpu that has it, "
                                          r"or pass -p fp32$"):
        FitRequest(x86, precisions=("bf16",), runtime="openvino").chosen_precisions()
    with caplog.at_level(logging.INFO, logger="leapkit.planning.fit"):
        assert FitRequest(x86, runtime="openvino").chosen_precisions() == ("fp32", "int8")
    assert [r.message for r in caplog.records if r.name == "leapkit.planning.fit"] == [
        "bf16 left out: this CPU has no bf16 arithmetic (AVX512-BF16 or AMX), where OpenVINO runs it in fp32"]
    monkeypatch.setattr("leapkit.host.cpu_bf16", lambda: "avx512_bf16")
    assert FitRequest(x86, runtime="openvino").chosen_precisions() == ("fp32", "bf16", "int8")
    assert FitRequest(x86).chosen_precisions() == ("fp32", "int8")  # ONNX Runtime: never bf16


def result(runtime: str, precision: str) -> BenchResult:
    fmt = {"onnxruntime": "onnx", "openvino": "openvino", "torch": "pytorch"}[runtime]
    return BenchResult(runtime=runtime, format=fmt, precision=precision, batch=1, p50_ms=10.0)


def test_forecast_predicts_openvino_results_only_with_an_openvino_calibration():
    x86 = load_target("x86-cpu")
    ort, ov = result("onnxruntime", "int8"), result("openvino", "int8")
    forecaster = Forecaster.of(x86)
    assert forecaster.attach(ov, SHAPE, measured_here=True) is None and ov.predicted_ms is None
    assert forecaster.attach(ort, SHAPE, measured_here=True).ms == model_for(x86).predict(SHAPE, "int8").ms
    away = result("openvino", "int8")  # away from the target, the profile runtime's model stands in, as before
    assert forecaster.attach(away, SHAPE).ms == model_for(x86).predict(SHAPE, "int8").ms

    cal = openvino_calibration()
    forecaster = Forecaster.of(x86)
    assert set(forecaster.models) == {"onnxruntime", "openvino"} and forecaster.model.runtime == "onnxruntime"
    ov_model = model_for(x86, runtime="openvino")
    for precision in ("int8", "bf16"):
        r = result("openvino", precision)
        p = forecaster.attach(r, SHAPE, measured_here=True)
        assert r.predicted_ms == p.ms == ov_model.predict(SHAPE, precision).ms
        assert r.predicted_range_ms == [p.low_ms, p.high_ms]
        assert r.prediction_source == f"openvino: calibrated on box, {cal.created[:10]}"
    r = result("onnxruntime", "int8")  # ONNX Runtime keeps the profile's own model
    assert forecaster.attach(r, SHAPE, measured_here=True).ms == model_for(x86).predict(SHAPE, "int8").ms
    assert r.prediction_source.startswith("not calibrated: efficiencies from published measurements")
    torch_result = result("torch", "fp32")
    assert forecaster.attach(torch_result, SHAPE, measured_here=True) is None  # nothing describes PyTorch


def test_an_unreadable_openvino_calibration_is_a_warning(caplog):
    path = default_path("x86-cpu", "openvino")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with caplog.at_level(logging.DEBUG, logger="leapkit.latency.forecast"):
        forecaster = Forecaster.of(load_target("x86-cpu"))
    assert set(forecaster.models) == {"onnxruntime"}
    (line,) = [r for r in caplog.records if r.name == "leapkit.latency.forecast"]
    assert line.levelname == "WARNING" and line.message.startswith("no openvino latency prediction for x86-cpu: ")


@pytest.mark.slow
def test_calibrate_openvino_through_the_entry_point(tmp_path):
    pytest.importorskip("openvino")
    config = tmp_path / "config"  # XDG_CONFIG_HOME, which the process inherits
    proc = subprocess.run(  # a process of its own, as the ONNX Runtime calibration test explains
        [sys.executable, "-m", "leapkit", "calibrate", "--target", "x86-cpu", "--runtime", "openvino", "--quick",
         "--duration", "0.05", "--warmup", "0", "--rounds", "2", "--no-progress"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = config / "leapkit" / "calibration" / "x86-cpu-openvino.json"
    assert f"calibration: {path}" in proc.stdout.replace("\n", "")
    assert not (config / "leapkit" / "calibration" / "x86-cpu.json").exists()  # ONNX Runtime's file untouched
    cal = LatencyFit.read(path)
    precisions = ("fp32", "bf16", "int8") if cpu_bf16() else ("fp32", "int8")
    assert cal.target == "x86-cpu" and cal.runtime == "openvino" and cal.threads == 2
    assert tuple(cal.efficiencies) == precisions and set(cal.ranges) == set(precisions)
    assert cal.method.startswith("OpenVINO ") and "fastest of 2 interleaved rounds" in cal.method
    assert "int8 bf16" in cal.method  # the int8 IR runs with the export's hint
    assert len(cal.samples) == len(QUICK_GRID) * len(precisions)
    assert all(s.measured_ms > 0 and s.fitted_ms and s.loo_ms for s in cal.samples)
    model = model_for(load_target("x86-cpu"), runtime="openvino")
    assert model.calibrated and model.runtime == "openvino" and model.precisions == precisions
    p = model.predict(SHAPE, "int8")
    assert p.calibrated and p.low_ms < p.ms < p.high_ms
