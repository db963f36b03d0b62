"""CPU targets with several runtimes: which runtimes and precisions an export writes here (OpenVINO installed or not,
bf16 on the CPU or not), what bench skips, and the bf16 flag read from /proc/cpuinfo. None of it needs openvino."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml
from helpers import make_run, run_cli

import leapkit.deploy.plan as plan_module
import leapkit.latency.bench as bench_module
from leapkit.deploy.plan import ExportPlan, resolve_precisions, resolve_runtimes
from leapkit.errors import ConfigError, ExportError, MissingDependency
from leapkit.latency.artifacts import Artifact, ModelSource
from leapkit.latency.bench import bench, choose_runtimes, runnable_here
from leapkit.profiles import load_target, target_path
from leapkit.trtexec.flags import BatchRange

NO_OPENVINO = ("openvino is not installed: exporting for onnxruntime only (fp32, int8; no OpenVINO IRs, no bf16); "
               "pip install 'leapkit[openvino]' adds them")
NO_BF16 = ("this CPU has no bf16 arithmetic (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo): OpenVINO would run "
           "bf16 in fp32, so its parity cannot be checked here")


@pytest.fixture
def without_openvino(monkeypatch):
    """As if openvino were not installed (as on CI): find_spec finds nothing and the import fails."""
    monkeypatch.setitem(sys.modules, "openvino", None)


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(plan_module, "openvino_installed", lambda: True)
    monkeypatch.setattr(plan_module, "cpu_bf16", lambda: None)


def plan_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "leapkit.deploy.plan"]


def test_x86_cpu_exports_every_precision_for_both_runtimes(monkeypatch, caplog):
    monkeypatch.setattr(plan_module, "openvino_installed", lambda: True)
    monkeypatch.setattr(plan_module, "cpu_bf16", lambda: "amx_bf16")
    x86 = load_target("x86-cpu")
    assert resolve_precisions(None, x86) == ("fp32", "bf16", "int8")  # choose: fastest exports all of them
    with caplog.at_level(logging.INFO):
        assert resolve_runtimes(x86, ("fp32", "bf16", "int8")) == (("openvino", "onnxruntime"),
                                                                   ("fp32", "bf16", "int8"))
    assert plan_lines(caplog) == []


def test_without_openvino_x86_cpu_exports_onnx_runtime_alone_in_one_line(without_openvino, caplog):
    x86 = load_target("x86-cpu")
    with caplog.at_level(logging.INFO):
        assert resolve_runtimes(x86, resolve_precisions(None, x86)) == (("onnxruntime",), ("fp32", "int8"))
    assert plan_lines(caplog) == [NO_OPENVINO]
    with pytest.raises(MissingDependency, match=r"^--precision bf16 \(the fp32 OpenVINO IR with the bf16 hint\) "
                                                r"needs the 'openvino' package: pip install 'leapkit\[openvino\]'$"):
        resolve_runtimes(x86, ("fp32", "bf16"), bf16_named=True)


def test_an_openvino_target_needs_openvino(without_openvino, tmp_path):
    data = yaml.safe_load(target_path("x86-cpu").read_text())
    data.update(name="x86-openvino", runtime="openvino")
    path = tmp_path / "x86-openvino.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MissingDependency, match=r"^exporting for x86-openvino \(runtime openvino\) needs the "
                                                r"'openvino' package"):
        resolve_runtimes(load_target(path), ("fp32",))


def test_bf16_is_left_out_on_a_cpu_without_it_and_refused_when_named(cpu_without_bf16, caplog):
    x86 = load_target("x86-cpu")
    with caplog.at_level(logging.INFO):
        assert resolve_runtimes(x86, ("fp32", "bf16", "int8")) == (("openvino", "onnxruntime"), ("fp32", "int8"))
    assert plan_lines(caplog) == [f"bf16 left out: {NO_BF16}"]
    with pytest.raises(ExportError, match=r"^--precision bf16: this CPU has no bf16 arithmetic .*; export bf16 on a "
                                          r"CPU that has it \(the target itself\)$"):
        resolve_runtimes(x86, ("fp32", "bf16"), bf16_named=True)


def test_targets_without_the_setting_export_as_before(caplog):
    jetson = load_target("jetson")
    assert jetson.deploy_runtimes == ("tensorrt",) and jetson.choose == "profile"
    assert resolve_precisions(None, jetson) == ("fp32", "fp16")
    with caplog.at_level(logging.INFO):
        assert resolve_runtimes(jetson, ("fp32", "fp16")) == (("tensorrt",), ("fp32", "fp16"))
    assert plan_lines(caplog) == []
    with pytest.raises(ExportError, match=r"^precision bf16 is not available for target jetson-orin-nano \(runtime "
                                          r"tensorrt takes fp32, fp16, int8\); pick one of those or --precision all$"):
        resolve_precisions(["bf16"], jetson)


def test_cli_export_bf16_on_a_cpu_without_it_is_one_line_exit_2(cpu_without_bf16, tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run")
    code, err = run_cli(["export", str(run), "--target", "x86-cpu", "-p", "bf16"], monkeypatch, capsys)
    assert code == 2 and err == f"error: --precision bf16: {NO_BF16}; export bf16 on a CPU that has it (the target " \
                                "itself)\n"
    assert not (run / "export").exists()


def test_the_plan_counts_openvino_steps():
    x86 = load_target("x86-cpu")
    common = dict(run_dir=Path("run"), cfg=None, profile=x86, input_size=32, batch=BatchRange(1, 1, 1))
    both = ExportPlan(precisions=("fp32", "bf16", "int8"), runtimes=("openvino", "onnxruntime"), **common)
    assert both.onnx_precisions == ("fp32", "int8") and both.openvino_precisions == ("fp32", "bf16", "int8")
    assert both.total_steps == 5 + 2 + (2 + 1 + 2)  # the bf16 variant converts nothing: it runs the fp32 IR
    alone = ExportPlan(precisions=("fp32", "int8"), runtimes=("onnxruntime",), **common)
    assert not alone.openvino and alone.openvino_precisions == () and alone.total_steps == 7


def test_bench_skips_openvino_irs_where_openvino_is_missing(without_openvino, tmp_path, caplog):
    onnx, ir = Artifact("onnx", "fp32", tmp_path / "model.onnx"), Artifact("openvino", "fp32", tmp_path / "m.xml")
    src = ModelSource("export", [onnx, ir], out_dir=tmp_path, export_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        assert choose_runtimes(src, None) == ["onnxruntime"]
    assert "skipping the OpenVINO IRs: openvino is not installed (pip install 'leapkit[openvino]')" in caplog.text
    lone = ModelSource("openvino", [ir], out_dir=tmp_path)
    for runtimes in (None, ["openvino"]):
        with pytest.raises(MissingDependency, match=r"needs the 'openvino' package: pip install 'leapkit\[openvino\]'"):
            choose_runtimes(lone, runtimes)


def test_bench_skips_bf16_on_a_cpu_without_it(monkeypatch, tmp_path, caplog):
    bf16 = Artifact("openvino", "bf16", tmp_path / "model_openvino_fp32.xml", hint="bf16")
    monkeypatch.setattr(bench_module, "cpu_bf16", lambda: None)
    with caplog.at_level(logging.WARNING):
        assert not runnable_here(bf16)
    assert "skipping model_openvino_fp32.xml bf16: this CPU has no bf16 arithmetic" in caplog.text
    assert runnable_here(Artifact("openvino", "fp32", tmp_path / "model_openvino_fp32.xml", hint="f32"))
    monkeypatch.setattr(bench_module, "cpu_bf16", lambda: "avx512_bf16")
    assert runnable_here(bf16)


def test_runtime_openvino_needs_an_ir(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"--runtime openvino needs an OpenVINO IR \(\.xml\) or an export holding "
                                          r"one"):
        bench(run, "x86-cpu", runtimes=["openvino"], warmup_s=0.0, iterations=5, threads=1)
