"""leapkit.planning: shapes, the work of a ViT's layers, the latency model, its fit, candidates and training cost."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from leapkit.config import resolve_config
from leapkit.errors import ConfigError, ModelError
from leapkit.flops import step_costs as flops_step_costs
from leapkit.macs import model_flops
from leapkit.models import create_student
from leapkit.planning import workload
from leapkit.planning.candidates import candidates, sizes
from leapkit.planning.fit_file import MIN_RANGE, LatencyFit, Sample, default_path, fit, now
from leapkit.planning.latency_model import Efficiencies, LatencyModel
from leapkit.planning.plan import PlanRequest, choose_student, largest_fit, plan, verdict
from leapkit.planning.shape import VitShape, of_model, of_onnx, of_timm
from leapkit.planning.target_model import model_for, predict_onnx
from leapkit.planning.train_cost import dataset_images, leap_schedule, step_costs, train_cost
from leapkit.profiles import load_target, validate_target

TARGETS = Path(__file__).parents[1] / "profiles" / "targets"


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    """Predictions must not read the developer's own ~/.config/leapkit calibration."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


# --- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, size", [("vit_tiny_patch16_224", 64), ("vit_small_patch14_dinov2", 56),
                                        ("vit_small_patch14_reg4_dinov2", 56), ("leapkit_demo_student", 16)])
def test_shape_counts_match_the_model(name, size):
    model = create_student(name, size).eval()
    shape = of_timm(name, size)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert dataclasses.replace(shape, param_count=None).params == shape.params  # the closed form agrees
    assert shape.macs == model_flops(model, size, memory=False)["macs"]  # fvcore's count


def test_shape_reads_a_timm_model():
    s = of_timm("vit_small_patch14_dinov2", 224)
    assert (s.dim, s.depth, s.heads, s.mlp_hidden, s.tokens, s.layer_scale, s.gated_mlp) == (
        384, 12, 6, 1536, 257, True, False)
    g = of_timm("vit_giant_patch14_dinov2", 224)  # the meta device: no 1.1 B parameters held
    assert g.gated_mlp and g.mlp_hidden == 4096 and g.depth == 40


def test_shape_rejects_sizes_off_the_patch_grid_and_unknown_models():
    with pytest.raises(ModelError, match="input size 100 is not a multiple of the patch size 14 of "
                                         "vit_small_patch14_dinov2; use 98 or 112"):
        of_timm("vit_small_patch14_dinov2", 224).at(100)
    with pytest.raises(ModelError, match="unknown timm model 'vit_nonexistent'"):
        of_timm("vit_nonexistent", 224)


def _export(model: torch.nn.Module, path: Path, size: int) -> Path:
    from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters

    with quiet_exporters():
        export_onnx(model, path, size)
    return path


@pytest.fixture(scope="module")
def demo_graphs(tmp_path_factory) -> dict[str, Path]:
    import onnx

    from leapkit.deploy.onnx_fp16 import convert_fp16
    from leapkit.deploy.onnx_int8 import quantize_int8

    folder = tmp_path_factory.mktemp("graphs")
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=28, depth=2,
                              embed_dim=128, num_heads=2).eval()
    fp32 = _export(model, folder / "model.onnx", 28)
    int8 = folder / "model_int8.onnx"
    quantize_int8(fp32, int8, np.random.default_rng(0).standard_normal((2, 3, 28, 28)).astype(np.float32),
                  method="minmax", runtime="onnxruntime")
    fp16 = folder / "model_fp16.onnx"
    onnx.save(convert_fp16(onnx.load(str(fp32))), str(fp16))
    return {"model": model, "fp32": fp32, "int8": int8, "fp16": fp16}


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
def test_shape_reads_an_exported_graph(demo_graphs, variant):
    want = of_model(demo_graphs["model"], 28)
    got = of_onnx(demo_graphs[variant])
    keys = ("img_size", "patch_size", "dim", "depth", "heads", "mlp_hidden", "prefix_tokens", "gated_mlp",
            "layer_scale", "pre_norm")
    assert {k: getattr(got, k) for k in keys} == {k: getattr(want, k) for k in keys}


def test_shape_of_a_file_that_is_no_graph(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("not onnx")
    with pytest.raises(ModelError, match="is not a readable ONNX file"):
        of_onnx(bad)


# --- work and the latency model ------------------------------------------------------------------


def test_work_adds_up_to_the_flops():
    s = of_timm("vit_small_patch14_dinov2", 224)
    total = workload.total(s)
    norms = 5 * s.tokens * s.dim * (2 * s.depth + 1)  # fvcore's LayerNorm MACs, which are no GEMM
    assert total.gemm_flops + total.attention_flops == pytest.approx(2 * (s.macs - norms))
    assert total.blocks == 12 and total.inferences == 1 and total.scores == 12 * 6 * 257 ** 2
    assert workload.total(s, batch=4).gemm_flops == pytest.approx(4 * total.gemm_flops)
    assert workload.total(s, batch=4).weights == total.weights  # weights stream once per inference


def test_efficiencies_round_trip_their_coefficients():
    e = Efficiencies(100.0, 50.0, 10.0, 0.5, 0.25, 0.125, 30.0, 200.0)
    for precision in ("fp32", "int8"):
        back = Efficiencies.from_coefficients(e.coefficients(precision), precision)
        assert back.to_dict() == pytest.approx(e.to_dict())
    assert Efficiencies.from_coefficients((0,) * 8, "fp32").gemm_gflops is None  # zero: uncounted


def _model(e: Efficiencies, factor: float = 1.2) -> LatencyModel:
    return LatencyModel("t", {"fp32": e}, {"fp32": factor}, True, "test")


def test_a_prediction_sums_its_parts_and_carries_its_range():
    p = _model(Efficiencies(100.0, 50.0, 10.0, 1.0, 1.0, 1.0, 30.0, 200.0)).predict(of_timm("vit_tiny_patch16_224",
                                                                                             224), "fp32")
    assert sum(p.parts_ms.values()) == pytest.approx(p.ms)
    assert p.low_ms == pytest.approx(p.ms / 1.2) and p.high_ms == pytest.approx(p.ms * 1.2)
    assert p.parts_ms["overhead"] == pytest.approx(12 * 0.030 + 0.2)
    with pytest.raises(ConfigError, match="the latency model of t has no int8 efficiencies"):
        _model(Efficiencies(1.0, 1.0, 1.0)).predict(of_timm("vit_tiny_patch16_224", 224), "int8")


def _samples(e: Efficiencies, noise: float = 0.0) -> list[Sample]:
    from leapkit.planning.microbench import GRID

    rng = np.random.default_rng(0)
    out = []
    for m in GRID:
        ms = 1e3 * e.seconds(workload.total(m.shape), "fp32") * (1 + noise * rng.standard_normal())
        out.append(Sample(m.name, {k: v for k, v in dataclasses.asdict(m.shape).items() if v is not None}, "fp32", ms))
    return out


def test_the_fit_recovers_known_efficiencies():
    truth = Efficiencies(90.0, 40.0, 12.0, 0.4, 0.2, 0.3, 25.0, 150.0)
    samples = _samples(truth)
    fitted, factor = fit(samples, "fp32")
    for s in samples:
        assert s.fitted_ms == pytest.approx(s.measured_ms, rel=1e-6)
        assert s.loo_ms == pytest.approx(s.measured_ms, rel=0.02)  # the others pin every coefficient, nearly
    assert factor == MIN_RANGE
    big = of_timm("vit_base_patch16_224", 224)  # far outside the grid: the coefficients themselves were found
    assert fitted.seconds(workload.total(big), "fp32") == pytest.approx(truth.seconds(workload.total(big), "fp32"),
                                                                         rel=1e-4)


def test_the_range_grows_with_the_noise():
    _, factor = fit(_samples(Efficiencies(90.0, 40.0, 12.0, 0.4, 0.2, 0.3, 25.0, 150.0), noise=0.1), "fp32")
    assert 1.1 < factor < 1.6


def test_the_fit_needs_as_many_microbenchmarks_as_coefficients():
    samples = _samples(Efficiencies(90.0, 40.0, 12.0))[:5]
    with pytest.raises(ConfigError, match="5 fp32 microbenchmarks cannot fit 8 coefficients; time at least 8"):
        fit(samples, "fp32")


def test_without_a_calibration_the_model_is_the_published_one_and_says_so():
    m = model_for(load_target("jetson-orin-nano"))
    assert not m.calibrated and m.source.startswith("not calibrated: efficiencies from published measurements")
    p = m.predict(of_timm("vit_small_patch14_dinov2", 224), "fp16")
    assert not p.calibrated and p.high_ms / p.ms == pytest.approx(1.5)


def test_a_calibration_file_is_found_by_target_and_checked(tmp_path, monkeypatch):
    e = Efficiencies(90.0, 40.0, 12.0, 0.4, 0.2, 0.3, 25.0, 150.0)
    cal = LatencyFit(target="x86-cpu", created=now(), environment={"host": "box"}, runtime="onnxruntime",
                      threads=2, efficiencies={"fp32": e}, ranges={"fp32": 1.1})
    path = default_path("x86-cpu")
    assert path == tmp_path / "config" / "leapkit" / "calibration" / "x86-cpu.json"
    cal.save(path)
    m = model_for(load_target("x86-cpu"))
    assert m.calibrated and m.source == f"calibrated on box, {cal.created[:10]}"
    with pytest.raises(ConfigError, match=r"calibrates target x86-cpu, not jetson-orin-nano; pass that target"):
        model_for(load_target("jetson-orin-nano"), path)
    with pytest.raises(ConfigError, match="calibration file .*missing.json not found; run leapkit calibrate"):
        model_for(load_target("x86-cpu"), tmp_path / "missing.json")


def test_a_target_without_any_latency_model_names_the_fix(tmp_path):
    data = yaml.safe_load((TARGETS / "rtx-4090.yaml").read_text())
    data.pop("latency_model", None)
    data["name"] = "bare"
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="target bare has no calibration .* and its profile no latency_model "
                                          "section; run leapkit calibrate --target bare"):
        model_for(load_target(tmp_path / "bare.yaml"))


def test_predict_onnx_reads_the_precision_from_the_graph(demo_graphs):
    p = predict_onnx(demo_graphs["int8"], "x86-cpu")
    assert p.precision == "int8" and p.img_size == 28 and p.target == "x86-cpu" and p.low_ms < p.ms < p.high_ms
    assert predict_onnx(demo_graphs["fp32"], "x86-cpu").precision == "fp32"
    assert predict_onnx(demo_graphs["fp16"], "jetson-orin-nano").precision == "fp16"
    assert predict_onnx(demo_graphs["model"], "x86-cpu").precision == "fp32"  # a model: the profile's precision


def test_the_profile_section_is_validated(tmp_path):
    data = yaml.safe_load((TARGETS / "jetson-orin-nano.yaml").read_text())
    data["name"] = "broken"
    data["latency_model"]["fp16"]["gemm"] = 1.5
    data["latency_model"]["fp16"]["gemmm"] = 0.2
    data["latency_model"]["measurements"][0]["use"] = "guess"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(data))
    problems = validate_target(tmp_path / "broken.yaml")
    assert "latency_model.fp16.gemm must be a fraction in (0, 1], got 1.5" in problems
    assert "unknown key 'latency_model.fp16.gemmm' (did you mean 'latency_model.fp16.gemm'?)" in problems
    assert any(p.startswith("latency_model.measurements[0].use must be one of fit|check|bound") for p in problems)


# --- candidates, training cost, the plan ---------------------------------------------------------


def test_candidate_sizes_follow_the_patches():
    assert sizes(14, 224) == [112, 168, 224]
    assert sizes(16, 224) == [128, 192, 224, 256]
    assert sizes(16, 224, teacher_patch=14) == [112, 224]  # both patches must divide the size


def test_candidates_span_students_sizes_and_precisions():
    orin = load_target("jetson-orin-nano")
    found = candidates(orin, ("vit_small_patch14_dinov2", "vit_tiny_patch16_224"), img_sizes=(224,))
    assert {(c.student, c.img_size, c.precision) for c in found} == {
        (s, 224, p) for s in ("vit_small_patch14_dinov2", "vit_tiny_patch16_224") for p in ("fp32", "fp16", "int8")}
    with pytest.raises(ConfigError, match="target x86-cpu does not run fp16; its precisions are fp32, int8"):
        candidates(load_target("x86-cpu"), precisions=("fp16",))
    with pytest.raises(ConfigError, match="no candidate fits the input size"):
        candidates(orin, ("vit_small_patch14_dinov2",), img_sizes=(100,))


def test_closed_form_step_costs_equal_leapkits_flops_accounting(tiny_config):
    costs, _, _ = flops_step_costs(tiny_config)
    teacher = of_timm(tiny_config.model.teacher, tiny_config.model.img_size)
    student = of_timm(tiny_config.model.student, tiny_config.model.img_size)
    assert step_costs(teacher, student, tiny_config) == costs


def test_training_cost_under_the_slowest_climb():
    cfg = resolve_config("imagenet100-vits14-from-vitg14")
    assert leap_schedule(12, 40, 5) == [1] * 5 + [2] * 5 + [3] * 2
    teacher, student = of_timm(cfg.model.teacher, 224), of_timm(cfg.model.student, 224)
    cost = train_cost(teacher, student, cfg, dataset_images(cfg), gpu="H100", utilisation=0.5)
    assert cost.images_per_epoch == 126_689 and cost.epochs == 100
    assert 0 < cost.leap_flops < cost.baseline_flops and cost.saving_pct > 25  # at least the paper's 25.1%
    assert cost.baseline_gpu_hours == pytest.approx(cost.baseline_flops / (989e12 * 0.5 * 3600))
    with pytest.raises(ConfigError, match="unknown GPU 'V100'; known: H200"):
        train_cost(teacher, student, cfg, 1000, gpu="V100")
    with pytest.raises(ConfigError, match=r"--utilisation must be in \(0, 1\], got 1.5"):
        train_cost(teacher, student, cfg, 1000, utilisation=1.5)


def test_an_unknown_dataset_needs_its_size(tiny_config):
    with pytest.raises(ConfigError, match="leapkit does not know the size of recipe demo's training set"):
        dataset_images(tiny_config)
    assert dataset_images(tiny_config, 500) == 500
    assert dataset_images(resolve_config("demo")) == 1437


def test_the_verdict_compares_the_range_with_the_budget():
    p = _model(Efficiencies(None, None, None, inference_us=10_000.0)).predict(of_timm("vit_tiny_patch16_224", 224),
                                                                            "fp32")
    assert p.ms == pytest.approx(10.0)
    assert verdict(p, 12.5) == "fits" and verdict(p, 11.0) == "too close to call" and verdict(p, 8.0) == "does not fit"


def test_plan_rows_and_the_largest_that_fits():
    orin = load_target("jetson-orin-nano")
    cfg = resolve_config("imagenet100-vits14-from-vitg14")
    students = ("vit_tiny_patch14_leapkit", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2")
    request = PlanRequest(profile=orin, budget_ms=10.0, students=students, recipe=cfg)
    report = plan(request)
    assert len(report.rows) == 3 * 3 * 3 and not report.calibrated and report.teacher == cfg.model.teacher
    assert [r.predicted_ms for r in report.rows] == sorted(r.predicted_ms for r in report.rows)
    for r in report.rows:
        assert r.fits == {"fits": True, "does not fit": False}.get(r.verdict)
        assert r.predicted_range_ms[0] < r.predicted_ms < r.predicted_range_ms[1] and r.train_cost is not None
    best = largest_fit(report.rows)
    assert best.verdict == "fits" and best.predicted_range_ms[1] <= 10.0
    assert all(r.gflops <= best.gflops for r in report.rows if r.verdict == "fits")
    chosen, _ = choose_student(request)
    assert chosen == best


def test_no_candidate_fits_a_tiny_budget():
    request = PlanRequest(profile=load_target("jetson-orin-nano"), budget_ms=0.01, students=("vit_tiny_patch16_224",),
                          img_sizes=(224,))
    with pytest.raises(ConfigError, match=r"no candidate student fits 0.01 ms on jetson-orin-nano at 224 px: the "
                                          r"fastest, vit_tiny_patch16_224 \w+, is predicted at"):
        choose_student(request)


def test_memory_counts_weights_at_the_precision():
    s = of_timm("vit_small_patch14_dinov2", 224)
    assert s.memory_bytes("fp16") > 2 * s.params and s.memory_bytes("int8") < s.memory_bytes("fp16")
    assert math.isclose(s.memory_bytes("fp32") / s.memory_bytes("fp16"), 2.0)


def test_a_vitshape_without_a_model_uses_the_closed_form():
    s = VitShape(img_size=768, patch_size=32, dim=768, depth=12, heads=12, mlp_hidden=3072, pre_norm=True)
    assert s.tokens == 577 and s.params > 85e6


def test_the_frontier_keeps_what_nothing_beats():
    from leapkit.planning.frontier import frontier
    from leapkit.planning.plan import PlanRow

    def r(ms: float, gflops: float) -> PlanRow:
        return PlanRow("m", 224, "fp16", ms, [ms / 2, ms * 2], 1, gflops, 1.0, True, "fits", None)

    rows = [r(1, 1), r(2, 0.5), r(3, 4), r(4, 3), r(5, 8)]
    assert [(x.predicted_ms, x.gflops) for x in frontier(rows)] == [(1, 1), (3, 4), (5, 8)]


def _crowded_report():
    from leapkit.planning.plan import PlanReport, PlanRow

    rows = [PlanRow(f"vit_s{i}", 224, "fp16", 2.0 + 0.01 * i, [1.5 + 0.01 * i, 3.0 + 0.01 * i], 1, 1.0 + 0.02 * i, 1.0,
                    None, "too close to call", None, source="published") for i in range(20)]
    return PlanReport("jetson-orin-nano", 2.5, "p99", False, "published", None, None, rows)


def test_the_frontier_labels_do_not_collide_however_close_the_points():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from leapkit.planning.frontier import figure

    fig = figure(_crowded_report())  # 20 frontier points within 2% of each other in both axes
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts]
    plt.close(fig)
    assert len(boxes) == 20
    overlaps = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert not overlaps


def test_spread_keeps_order_and_gap_inside_the_bounds():
    from leapkit.planning.frontier import spread

    assert spread([1.0, 1.0, 1.0], 2.0, 0.0, 100.0) == [1.0, 3.0, 5.0]
    assert spread([10.0, 50.0], 2.0, 0.0, 100.0) == [10.0, 50.0]  # apart already: left where they are
    assert spread([99.0, 99.0, 99.0], 2.0, 0.0, 100.0) == [96.0, 98.0, 100.0]  # pulled back inside


def test_the_answer_names_the_largest_fit_and_says_when_its_precision_is_unvalidated():
    from leapkit.planning.plan import answer

    report = _crowded_report()
    assert answer(report).startswith("no student's whole range fits 2.5 ms; the fastest is vit_s0 224px fp16")
    report.budget_ms = 3.1
    for r in report.rows:
        r.verdict = "fits" if r.predicted_range_ms[1] <= 3.1 else "too close to call"
    assert answer(report).startswith("largest student whose whole range fits 3.1 ms: vit_s10 224px fp16, ")
    report.rows[10].source = "not calibrated, unvalidated: no published fp16 ViT measurement"
    assert answer(report).endswith("(fp16 unvalidated on jetson-orin-nano; largest at a checked precision: "
                                   "vit_s9 224px fp16, 2.09 ms (1.59-3.09))")


def test_published_fractions_become_rates_of_the_profiles_peaks():
    from leapkit.planning.latency_model import published_efficiencies
    from leapkit.profiles import PublishedEfficiency

    orin = load_target("jetson-orin-nano")
    e = published_efficiencies(PublishedEfficiency(0.5, 0.25, 0.5, token_passes=2, score_passes=4), orin, "fp32")
    assert e.gemm_gflops == pytest.approx(0.5 * orin.tf32_tops * 1e3)  # fp32 layers run as TF32 on TensorRT
    assert e.weight_gbs == pytest.approx(34.0) and e.token_ns == pytest.approx(2 * 4 / 34.0)
    assert e.score_ns == pytest.approx(4 * 4 / 34.0) and e.hidden_ns == pytest.approx(2 * 4 / 34.0)
    with pytest.raises(ConfigError, match="target x86-cpu has no peak_tops.fp16"):
        published_efficiencies(PublishedEfficiency(0.5, 0.5, 0.5), load_target("x86-cpu"), "fp16")


def test_the_device_scripts_facts_make_a_fingerprint():
    from leapkit.device.probe import device_environment, facts

    found = facts("chatter\nleapkit:banner=&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --help\n"
                  "leapkit:model=NVIDIA Jetson Orin Nano Developer Kit\nleapkit:hostname=orin\nleapkit:arch=aarch64\n")
    env = device_environment(found)
    assert env["tensorrt"] == "10.3.0" and env["host"] == "orin" and env["machine"] == "aarch64"
    assert load_target("jetson-orin-nano").matches(env["gpu_names"])


def test_the_default_candidates_are_smaller_than_the_teacher():
    cfg = resolve_config("imagenet100-vits14-from-vitg14")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, teacher="vit_base_patch14_dinov2"))
    teacher = of_timm("vit_base_patch14_dinov2", cfg.model.img_size)
    report = plan(PlanRequest(profile=load_target("jetson-orin-nano"), recipe=cfg, precisions=("fp16",)))
    students = {r.student for r in report.rows}
    assert "vit_small_patch14_dinov2" in students
    assert all(r.params < teacher.params for r in report.rows)
    left_out = {"vit_base_patch14_dinov2", "vit_large_patch14_dinov2", "vit_base_patch16_224"}
    assert not students & left_out
    assert any("no smaller than the teacher vit_base_patch14_dinov2" in n and "vit_large_patch14_dinov2" in n
               for n in report.notes)
    named = plan(PlanRequest(profile=load_target("jetson-orin-nano"), recipe=cfg, precisions=("fp16",),
                             students=("vit_base_patch14_dinov2",), img_sizes=(224,)))
    assert {r.student for r in named.rows} == {"vit_base_patch14_dinov2"}  # a name given is planned as asked
