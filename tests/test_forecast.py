"""The target's latency-model prediction in bench results, tables and report.md, on a real export of the demo student.

Every prediction is checked against :meth:`LatencyModel.predict` called directly; latencies are never asserted on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import onnx
import pytest
from conftest import distil_demo
from onnx import TensorProto, helper

import leapkit
from leapkit.config import PlanConfig, load_config, save_config
from leapkit.latency import bench as bench_module
from leapkit.latency.artifacts import Artifact
from leapkit.latency.bench import bench
from leapkit.latency.forecast import Forecaster, forecasts, graph_of
from leapkit.latency.imported import report_from_trtexec
from leapkit.latency.machine import environment
from leapkit.latency.records import BenchReport, Budget
from leapkit.latency.render import latency_table
from leapkit.latency.verdict import decide
from leapkit.planning.shape import of_model, of_onnx
from leapkit.planning.target_model import model_for
from leapkit.profiles import load_target
from leapkit.report import write_report
from leapkit.run import load_student
from leapkit.trtexec.log import TrtexecRun
from leapkit.trtexec.read import TrtexecImport

FAST = dict(warmup_s=0.0, iterations=5, threads=1)
PUBLISHED = "not calibrated: efficiencies from published measurements in the {} profile"
X86_HOST = {"machine": "x86_64", "device_model": None, "jetson": None}
JETSON_HOST = {"host": "orin", "device_model": "NVIDIA Jetson Orin Nano Developer Kit", "gpu_names": [],
               "cpu": "ARMv8 Processor rev 1 (v8l)", "machine": "aarch64", "jetson": None}


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    """Predictions come from the profiles' published efficiencies, not from a calibration in the user's home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, teacher_file) -> Path:
    """A real 1-epoch demo distillation at 16 px, exported for x86-cpu in fp32 and int8."""
    root = tmp_path_factory.mktemp("forecast")
    distil_demo(root, teacher_file)
    leapkit.export(root / "run", target="x86-cpu", precision=["fp32", "int8"], check=False, calib_images=16,
                   parity_images=8, probe_images=36)
    return root / "run"


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))


def on(host: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bench as if on ``host`` (an x86-64 box is the x86-cpu target; the Jetson is not)."""
    monkeypatch.setattr(bench_module, "environment", lambda: {**environment(), **host})


def forecast_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "leapkit.latency.forecast"]


def expected(run: Path, r, target: str):
    """What the target's latency model predicts for result ``r``, asked directly (None: no efficiencies)."""
    model = model_for(load_target(target))
    if r.precision not in model.efficiencies:
        return None
    if r.format == "pytorch":
        shape = of_model(load_student(run), 16)
    else:  # an OpenVINO IR is the export's graph, converted
        shape = of_onnx(r.file if r.format == "onnx" else Path(r.file).parent / "model.onnx")
    return model.predict(shape, r.precision, r.batch)


def test_bench_predicts_every_result_with_the_targets_model(run_copy, monkeypatch):
    on(X86_HOST, monkeypatch)
    report = bench(run_copy, "x86-cpu", budget_ms=1e6, **FAST)
    assert report.evidence == "measured" and {r.label for r in report.results} >= {"PyTorch eager", "ONNX fp32",
                                                                                   "ONNX int8"}
    predicted = set()
    for r in report.results:
        p = expected(run_copy, r, "x86-cpu")
        if r.runtime != "onnxruntime" or p is None:
            # on the target, the model describes ONNX Runtime's timings (the profile's runtime), not PyTorch's or
            # OpenVINO's; and it has no bf16 efficiencies
            assert r.predicted_ms is None and r.predicted_range_ms is None and r.prediction_source is None
            continue
        predicted.add(r.label)
        assert r.predicted_ms == pytest.approx(p.ms) and r.predicted_range_ms == pytest.approx([p.low_ms, p.high_ms])
        assert r.prediction_source == p.source and p.source.startswith(PUBLISHED.format("x86-cpu"))
        assert r.measured_over_predicted == pytest.approx(r.p50_ms / p.ms)
    assert predicted == {"ONNX fp32", "ONNX int8"}
    saved = json.loads(report.json_path.read_text())["results"]
    assert [(s["predicted_ms"], s["predicted_range_ms"], s["prediction_source"]) for s in saved] == [
        (r.predicted_ms, r.predicted_range_ms, r.prediction_source) for r in report.results]

    table = latency_table(report)
    titles = [c.title for c in table.columns]
    assert titles[titles.index("lower bound ms") + 1:][:3] == ["predicted ms (range)", "measured / predicted", "budget"]
    onnx_fp32 = next(row for row in table.rows if row[0] == "ONNX fp32")
    r = next(r for r in report.results if r.label == "ONNX fp32")
    low, high = r.predicted_range_ms
    assert onnx_fp32[titles.index("predicted ms (range)")] == f"{r.predicted_ms:.3g} ({low:.3g}-{high:.3g})"
    assert onnx_fp32[titles.index("measured / predicted")] == f"{r.p50_ms / r.predicted_ms:.2f}"
    md = report.md_path.read_text()
    assert "| predicted ms (range) | measured / predicted |" in md
    assert "predicted ms (range): the latency model of x86-cpu (not calibrated: efficiencies from published " in md
    assert "it never changes the verdict" in md


def test_away_from_the_target_the_prediction_is_shown_and_never_judged(run_copy, monkeypatch):
    on(JETSON_HOST, monkeypatch)
    profile = load_target("x86-cpu")
    report = bench(run_copy, profile, runtimes=["onnxruntime"], budget_ms=1e6, **FAST)
    assert (report.evidence, report.verdict) == ("estimated", "UNCONFIRMED")
    for r in report.results:
        assert r.format == "onnx" and r.predicted_ms == pytest.approx(expected(run_copy, r, "x86-cpu").ms)
    titles = [c.title for c in latency_table(report).columns]
    assert "predicted ms (range)" in titles and "measured / predicted" not in titles  # not the target's timings
    # a budget between the lower bound and the prediction: only the lower bound can fail the verdict
    between = max(r.roofline.estimate_ms for r in report.results) * 1.01
    assert all(r.predicted_range_ms[0] > between for r in report.results)
    verdict, reason, _ = decide(report.results, profile, between, "p99", "estimated")
    assert verdict == "UNCONFIRMED" and "lower bound" in reason


def test_no_latency_model_no_prediction_and_no_column(run_copy, monkeypatch, caplog):
    on(X86_HOST, monkeypatch)
    bare = dataclasses.replace(load_target("x86-cpu"), latency_model=None)
    with caplog.at_level(logging.DEBUG, logger="leapkit.latency.forecast"):
        report = bench(run_copy, bare, runtimes=["onnxruntime"], budget_ms=1e6, **FAST)
    assert all(r.predicted_ms is None and r.predicted_range_ms is None and r.prediction_source is None
               for r in report.results)
    assert all(s["predicted_ms"] is None for s in json.loads(report.json_path.read_text())["results"])
    assert "predicted ms (range)" not in [c.title for c in latency_table(report).columns]
    (line,) = forecast_lines(caplog)  # one line, never an error
    assert line.levelname == "DEBUG"
    assert line.message.startswith("no latency prediction for x86-cpu: target x86-cpu has no calibration")


def test_an_unreadable_calibration_is_a_warning_not_an_error(tmp_path, caplog):
    from leapkit.planning.fit_file import default_path

    path = default_path("x86-cpu")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with caplog.at_level(logging.DEBUG, logger="leapkit.latency.forecast"):
        assert Forecaster.of(load_target("x86-cpu")).model is None
    (line,) = forecast_lines(caplog)
    assert line.levelname == "WARNING" and str(path) in line.message


def test_openvino_irs_and_engines_are_predicted_from_the_exports_graph(run_dir, tmp_path):
    export = run_dir / "export" / "x86-cpu"
    shape = of_onnx(export / "model.onnx")
    x86, orin = Forecaster.of(load_target("x86-cpu")), Forecaster.of(load_target("jetson-orin-nano"))
    ir = Artifact("openvino", "int8", export / "model_openvino_int8.xml")
    engine = Artifact("engine", "fp16", export / "model_fp16.engine")
    assert graph_of(ir) == graph_of(engine) == export / "model.onnx"
    assert x86.shape_for(ir) == orin.shape_for(engine) == shape
    assert x86.predict(shape, "int8", 1) == model_for(load_target("x86-cpu")).predict(shape, "int8", 1)
    assert orin.predict(shape, "fp16", 4) == model_for(load_target("jetson-orin-nano")).predict(shape, "fp16", 4)
    # the cases without a prediction: none of them raises
    assert x86.predict(shape, "fp16", 1) is None  # x86-cpu's model has no fp16 efficiencies
    assert orin.predict(shape, "unknown", 1) is None  # an engine whose precision nothing recorded
    assert x86.shape_for(Artifact("engine", "int8", tmp_path / "model.engine")) is None  # no graph beside it
    assert x86.shape_for(Artifact("pytorch", "fp32")) is None  # no student given


def test_a_graph_that_is_not_a_plain_vit_has_no_prediction(tmp_path, caplog):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 16, 16])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["images"], ["out"])], "g", [x], [y])),
              str(path))
    forecaster = Forecaster.of(load_target("x86-cpu"))
    with caplog.at_level(logging.DEBUG, logger="leapkit.latency.forecast"):
        assert forecaster.shape_for(Artifact("onnx", "fp32", path)) is None
        assert forecaster.shape_for(Artifact("onnx", "fp32", tmp_path / "missing.onnx")) is None
    lines = forecast_lines(caplog)
    assert [r.levelname for r in lines] == ["DEBUG", "DEBUG"] and "not a leapkit ViT export" in lines[0].message


def trtexec_import(precision: str | None) -> TrtexecImport:
    stats = {"min": 1.0, "mean": 1.2, "p50": 1.1, "p90": 1.3, "p95": 1.4, "p99": 1.5, "max": 2.0}
    run = TrtexecRun(source="bench.log", tensorrt="10.3.0", device="Orin", precision=precision, batch=1,
                     latency_ms=stats, gpu_compute_ms=dict(stats))
    return TrtexecImport(runs=[run], sources=["bench.log"])


def test_imported_trtexec_results_are_predicted_when_the_onnx_is_known(run_dir, tmp_path):
    orin = load_target("jetson-orin-nano")
    graph = run_dir / "export" / "x86-cpu" / "model.onnx"
    report = report_from_trtexec(trtexec_import("fp16"), orin, Budget.of(orin, stat="p50"), evidence="imported",
                                 out_dir=tmp_path, model="bench.log", onnx=graph)
    (r,) = report.results
    p = model_for(orin).predict(of_onnx(graph), "fp16", 1)
    assert r.predicted_ms == pytest.approx(p.ms) and r.prediction_source == p.source
    assert r.measured_over_predicted == pytest.approx(1.1 / p.ms)
    assert "| predicted ms (range) | measured / predicted |" in report.md_path.read_text()

    report = report_from_trtexec(trtexec_import("fp16"), orin, Budget.of(orin, stat="p50"), evidence="imported",
                                 out_dir=tmp_path, model="bench.log")  # no ONNX: nothing to read
    assert report.results[0].predicted_ms is None
    assert "predicted ms" not in report.md_path.read_text()


def with_plan(run: Path, precision: str, ms: float, low: float, high: float) -> None:
    """config.yaml as `leapkit distill --student auto` writes it."""
    cfg = load_config(run / "config.yaml")
    plan = PlanConfig(target="x86-cpu", budget_ms=33.3, precision=precision, predicted_ms=ms,
                      predicted_range_ms=(low, high), calibrated=False, source="published", candidates=14)
    save_config(dataclasses.replace(cfg, plan=plan), run / "config.yaml")


def test_report_sets_the_plans_prediction_against_the_measurement(run_copy, monkeypatch):
    on(X86_HOST, monkeypatch)
    bench(run_copy, "x86-cpu", runtimes=["onnxruntime"], budget_ms=1e6, **FAST)
    b = BenchReport.load(run_copy / "bench" / "x86-cpu.json")
    judged = next(r for r in b.results if r.label == b.gated)
    with_plan(run_copy, judged.precision, judged.p50_ms / 2, judged.p50_ms / 3, judged.p50_ms / 1.5)
    rows = forecasts(load_config(run_copy / "config.yaml").plan, "leapkit_demo_student", [b])
    assert [(f.by, f.model, f.measured_ms, f.landed()) for f in rows][0] == (
        "distill --student auto", "leapkit_demo_student", judged.p50_ms, "no, above")
    assert [f.model for f in rows[1:]] == [r.label for r in b.results]
    assert rows[0].ratio == pytest.approx(2.0)

    text = write_report(run_copy, plots=False).path.read_text()
    section = text.split("## Prediction against measurement")[1]
    assert "`leapkit distill --student auto` chose `leapkit_demo_student` for x86-cpu at " in section
    assert f"| distill --student auto | x86-cpu | leapkit_demo_student | {judged.precision} |" in section
    assert "| 2.00 | no, above |" in section
    with_plan(run_copy, judged.precision, judged.p50_ms, judged.p50_ms / 2, judged.p50_ms * 2)
    section = write_report(run_copy, plots=False).path.read_text().split("## Prediction against measurement")[1]
    assert "| 1.00 | yes |" in section and "Not measured on" not in section


def test_report_without_a_plan_shows_benchs_predictions_and_without_any_no_section(run_copy, monkeypatch):
    on(JETSON_HOST, monkeypatch)
    bench(run_copy, "x86-cpu", runtimes=["onnxruntime"], budget_ms=1e6, **FAST)
    text = write_report(run_copy, plots=False).path.read_text()
    section = text.split("## Prediction against measurement")[1]
    assert "| bench | x86-cpu | ONNX fp32 | fp32 |" in section and "| - | - | not measured on x86-cpu |" in section
    assert "Not measured on x86-cpu yet: run `leapkit bench" in section and "--student auto" not in section

    bare = dataclasses.replace(load_target("x86-cpu"), latency_model=None)
    bench(run_copy, bare, runtimes=["onnxruntime"], budget_ms=1e6, **FAST)
    assert "Prediction against measurement" not in write_report(run_copy, plots=False).path.read_text()
