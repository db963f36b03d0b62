"""`leapkit bench`: timing statistics, cost and roofline, model resolution, verdict, CLI errors.

Latencies are never asserted on (the CI machine is shared); only their consistency is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from leapkit import bench as B
from leapkit.config import resolve_config, save_config
from leapkit.errors import CheckFailed, ConfigError, MissingDependency, ModelError
from leapkit.models import create_student
from leapkit.profiles import load_target

FAST = dict(warmup_s=0.0, iterations=5, threads=1)


class _Features(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _export_onnx(model: torch.nn.Module, path: Path, img_size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _Features(model), torch.randn(1, 3, img_size, img_size), str(path), dynamo=False, opset_version=17,
        input_names=["pixels"], output_names=["tokens"], dynamic_axes={"pixels": {0: "batch"}, "tokens": {0: "batch"}},
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished demo run (random student weights) with an x86-cpu export holding model.onnx."""
    run = tmp_path_factory.mktemp("runs") / "demo"
    run.mkdir()
    save_config(resolve_config("demo", overrides={"model": {"img_size": 32}}), run / "config.yaml")
    torch.manual_seed(0)
    student = create_student("leapkit_demo_student", 32).eval()
    save_file(student.state_dict(), str(run / "student.safetensors"))
    export = run / "export" / "x86-cpu"
    _export_onnx(student, export / "model.onnx")
    manifest = {"files": {"model.onnx": "0" * 64}, "input": {"name": "pixels", "shape": [1, 3, 32, 32]}, "target": "x86-cpu",
                "source_run": str(run), "artifacts": {"model.onnx": {"precision": "fp32", "accuracy": 91.5, "status": "ok"}}}
    (export / "manifest.json").write_text(json.dumps(manifest))
    (run / "export" / "latest").symlink_to("x86-cpu")
    return run


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leapkit", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


# ---------------------------------------------------------------- statistics and timing


def test_latency_stats():
    samples = list(range(1, 101))  # 1..100 ms
    s = B.latency_stats(samples, batch=4)
    assert s["min_ms"] == 1 and s["max_ms"] == 100 and s["mean_ms"] == pytest.approx(50.5)
    assert s["p50_ms"] == pytest.approx(np.percentile(samples, 50))
    assert s["p99_ms"] == pytest.approx(np.percentile(samples, 99))
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["cv"] == pytest.approx(np.std(samples, ddof=1) / 50.5)
    assert s["throughput"] == pytest.approx(4 * 1000 / 50.5)
    assert s["iterations"] == 100


def test_time_runner_counts_iterations_and_warms_up():
    calls = []
    samples = B.time_runner(lambda: calls.append(1), warmup_s=0.0, iterations=7)
    assert len(samples) == 7 and len(calls) == 8  # one warm-up call at least
    samples = B.time_runner(lambda: None, warmup_s=0.0, iterations=None, duration_s=1e-6)
    assert len(samples) == B.MIN_ITERATIONS


def test_stat_key():
    assert B.stat_key("p99") == "p99_ms" and B.stat_key("mean") == "mean_ms"
    with pytest.raises(ConfigError, match="unknown statistic 'p42'; use one of min, mean, p50"):
        B.stat_key("p42")


# ---------------------------------------------------------------- cost and roofline


def test_onnx_cost_matches_torch_flops(run_dir):
    student = create_student("leapkit_demo_student", 32).eval()
    t = B.torch_cost(student, 32, batch=2)
    o = B.onnx_cost(run_dir / "export" / "x86-cpu" / "model.onnx", batch=2)
    # Matmuls dominate; elementwise ops are left out of the graph count.
    assert o.flops == pytest.approx(t.flops, rel=0.1)
    assert o.param_bytes == pytest.approx(t.param_bytes, rel=0.05)
    assert t.activation_bytes > 0 and o.activation_bytes > 0
    assert t.at("int8").param_bytes == pytest.approx(t.param_bytes / 4)


def test_roofline_bounds():
    x86 = load_target("x86-cpu")
    compute = B.Cost(flops=x86.peak_ops("fp32"), param_bytes=1e6, activation_bytes=0.0, source="test")  # 1 s of peak fp32
    r = B.roofline(compute, x86, "fp32")
    assert r["estimate_ms"] == pytest.approx(1000.0) and r["bound"] == "compute"
    memory = B.Cost(flops=1.0, param_bytes=x86.memory_bandwidth_gbs * 1e9, activation_bytes=0.0, source="test")  # 1 s of bandwidth
    r = B.roofline(memory, x86, "fp32")
    assert r["estimate_ms"] == pytest.approx(1000.0) and r["bound"] == "memory"
    assert "estimate" in r["kind"]
    assert B.roofline(compute, x86, "fp16") is None  # no FP16 peak on this CPU class


def test_gated_result_prefers_the_targets_runtime_and_precision():
    x86 = load_target("x86-cpu")  # onnxruntime fp32
    results = [
        {"runtime": "torch", "precision": "fp32", "p99_ms": 1.0},
        {"runtime": "onnxruntime", "precision": "int8", "p99_ms": 2.0},
        {"runtime": "onnxruntime", "precision": "fp32", "p99_ms": 3.0},
    ]
    assert B.gated_result(results, x86, "p99_ms")["precision"] == "fp32"
    assert B.gated_result(results[:2], x86, "p99_ms")["precision"] == "int8"
    assert B.gated_result(results[:1], x86, "p99_ms")["runtime"] == "torch"
    assert B.gated_result([{"runtime": "torch", "precision": "fp32", "status": "failed"}], x86, "p99_ms") is None


# ---------------------------------------------------------------- model resolution


def test_resolve_run_export_and_files(run_dir, tmp_path):
    src = B.resolve_model(run_dir, "x86-cpu")
    assert src.kind == "run" and src.run_dir == run_dir.resolve()
    assert [a.format for a in src.artifacts] == ["pytorch", "onnx"]
    onnx = src.artifacts[1]
    assert onnx.precision == "fp32" and onnx.accuracy == 91.5 and onnx.size_mb > 0
    src = B.resolve_model(run_dir / "export" / "x86-cpu")
    assert src.kind == "export" and src.run_dir == run_dir  # source_run from the manifest
    src = B.resolve_model(run_dir / "export" / "x86-cpu" / "model.onnx")
    assert src.kind == "onnx" and src.out_dir == (run_dir / "export" / "x86-cpu").resolve()

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="notes.txt is not a model leapkit can bench"):
        B.resolve_model(tmp_path / "notes.txt")
    (tmp_path / "broken.onnx").write_text("not protobuf")
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        B.resolve_model(tmp_path / "broken.onnx")
    with pytest.raises(ModelError, match="model not found"):
        B.resolve_model(tmp_path / "missing.onnx")


def test_precision_from_file_name():
    assert B._precision_from_name("model.int8.onnx") == "int8"
    assert B._precision_from_name("model.fp16.onnx") == "fp16"
    assert B._precision_from_name("model.onnx") is None


def test_environment_fingerprint():
    env = B.environment()
    for key in ("cpu", "cpu_cores", "torch", "onnxruntime", "leapkit", "gpu", "jetson", "load_avg_1m"):
        assert key in env
    assert env["torch"] == torch.__version__


# ---------------------------------------------------------------- end to end


def test_bench_run_writes_report(run_dir, tmp_path):
    report = B.bench(run_dir, "x86-cpu", budget_ms=1e6, out_dir=tmp_path, **FAST)
    data = json.loads(report.json_path.read_text())
    assert report.json_path == tmp_path / "bench" / "x86-cpu.json" and report.md_path.is_file()
    for key in ("results", "budget_ms", "budget_stat", "verdict", "environment"):
        assert key in data
    assert data["verdict"] == "PASS" and data["budget_stat"] == "p99"
    assert [(r["runtime"], r["format"], r["precision"]) for r in data["results"]] == [("torch", "pytorch", "fp32"), ("onnxruntime", "onnx", "fp32")]
    for r in data["results"]:
        for key in ("runtime", "format", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput", "cv"):
            assert r[key] is not None, key
        assert r["iterations"] == 5 and r["threads"] == 1 and r["status"] == "ok"
        assert r["roofline"]["estimate_ms"] > 0 and r["roofline"]["kind"].startswith("estimate")
    assert data["gated"] == "ONNX fp32"  # the x86-cpu profile deploys ONNX Runtime fp32
    md = report.md_path.read_text()
    assert "| PyTorch eager | fp32 | torch | ok |" in md and "91.5" in md and "**Verdict: PASS**" in md


def test_bench_fail_writes_report_then_raises(run_dir, tmp_path):
    with pytest.raises(CheckFailed, match=r"bench verdict FAIL on x86-cpu: ONNX fp32 \(onnxruntime\) p50"):
        B.bench(run_dir, "x86-cpu", budget_ms=1e-9, stat="p50", runtimes=["onnxruntime"], out_dir=tmp_path, **FAST)
    data = json.loads((tmp_path / "bench" / "x86-cpu.json").read_text())
    assert data["verdict"] == "FAIL" and data["budget_stat"] == "p50" and len(data["results"]) == 1


def test_bench_bad_options(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="budget must be a positive number"):
        B.bench(run_dir, "x86-cpu", budget_ms=0, **FAST)
    with pytest.raises(ConfigError, match="unknown statistic"):
        B.bench(run_dir, "x86-cpu", stat="p999", **FAST)
    with pytest.raises(ConfigError, match="--runtime tensorrt needs a TensorRT engine"):
        B.bench(run_dir, "x86-cpu", runtimes=["tensorrt"], **FAST)
    with pytest.raises(ConfigError, match="--runtime torch needs a run directory"):
        B.bench(run_dir / "export" / "x86-cpu" / "model.onnx", "x86-cpu", runtimes=["torch"], **FAST)
    with pytest.raises(ConfigError, match="--iterations must be >= 1"):
        B.bench(run_dir, "x86-cpu", iterations=0, warmup_s=0.0)
    (tmp_path / "m.engine").write_bytes(b"\0" * 16)
    if B._version("tensorrt") is None:
        with pytest.raises(MissingDependency, match="needs the 'tensorrt' package"):
            B.bench(tmp_path / "m.engine", "jetson", **FAST)


def test_cli_bench(run_dir, tmp_path):
    common = ["--target", "x86-cpu", "-n", "5", "--warmup", "0", "--threads", "1", "--out", str(tmp_path)]
    r = cli("bench", str(run_dir), *common, "--budget-ms", "100000")
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "ONNX fp32" in r.stdout
    r = cli("bench", str(run_dir / "export" / "x86-cpu"), *common, "--budget-ms", "0.000001", "--runtime", "onnxruntime")
    assert r.returncode == 1 and "bench verdict FAIL on x86-cpu" in r.stderr
    assert json.loads((tmp_path / "bench" / "x86-cpu.json").read_text())["verdict"] == "FAIL"
    for extra, message in ((["--budget-ms", "-1"], "budget must be a positive number"), (["--stat", "p42"], "unknown statistic 'p42'"),
                           (["--runtime", "tensorflow"], "unknown runtime 'tensorflow'"),
                           (["--threads", "many"], "--threads must be a positive integer or 'auto', got 'many'")):
        r = cli("bench", str(run_dir), *common, *extra)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (extra, r.stderr)
    (tmp_path / "weights.bin").write_bytes(b"0")
    r = cli("bench", str(tmp_path / "weights.bin"), *common)
    assert r.returncode == 2 and "is not a model leapkit can bench" in r.stderr


def test_export_marked_failed_fails_the_verdict(run_dir, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes((run_dir / "export" / "x86-cpu" / "model.onnx").read_bytes())
    variants = [{"precision": "fp32", "format": "onnx", "file": "model.onnx", "status": "failed", "notes": ["parity: cosine 0.91 < 0.9999"]}]
    (export / "manifest.json").write_text(json.dumps({"files": {"model.onnx": "0" * 64}, "target": {"name": "x86-cpu"}, "variants": variants}))
    with pytest.raises(CheckFailed, match="the export marked it as failed: parity: cosine 0.91"):
        B.bench(export, None, budget_ms=1e6, **FAST)  # the target comes from the manifest
    data = json.loads((export / "bench" / "x86-cpu.json").read_text())
    assert data["verdict"] == "FAIL" and data["results"][0]["export_status"].startswith("failed")


@pytest.mark.trt
@pytest.mark.skipif(B._version("tensorrt") is None or not torch.cuda.is_available(), reason="needs TensorRT and a CUDA GPU")
def test_bench_tensorrt_engine(run_dir, tmp_path):
    from leapkit.tensorrt import BatchRange, build_engine

    engine = tmp_path / "model.fp32.engine"
    build_engine(run_dir / "export" / "x86-cpu" / "model.onnx", engine, input_name="pixels", chw=(3, 32, 32),
                 batch=BatchRange(1, 1, 4), precision="fp32", workspace_mb=256)
    report = B.bench(engine, "rtx-4090", budget_ms=1e6, **FAST)
    (result,) = report.results
    assert result["runtime"] == "tensorrt" and result["status"] == "ok" and result["precision"] == "fp32"


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024", "535.183.01"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)", "580.159.04"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  540.4.0  Release Build", "540.4.0"),
    ("no driver here", None),
])
def test_driver_version_from_proc(text, version):
    assert B.driver_version(text) == version


def test_thread_candidates_and_parsing():
    assert B.auto_thread_candidates(1) == (1,)
    assert B.auto_thread_candidates(2) == (1, 2)
    assert B.auto_thread_candidates(6) == (1, 2, 4, 6)
    assert B.auto_thread_candidates(8) == (1, 2, 4, 8)
    assert B.parse_threads("auto") == "auto" and B.parse_threads(None) is None
    assert B.parse_threads("3") == 3 and B.parse_threads(2) == 2
    for bad in ("0", "-1", "many", "2.5", 0):
        with pytest.raises(ConfigError, match="--threads must be a positive integer or 'auto'"):
            B.parse_threads(bad)


def test_bench_threads_auto_measures_each_format_at_its_fastest_count(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(B, "PROBE_S", 0.05)
    report = B.bench(run_dir, "x86-cpu", threads="auto", warmup_s=0.0, iterations=5, budget_ms=1e6, out_dir=tmp_path)
    data = json.loads(report.json_path.read_text())
    assert data["method"]["thread_candidates"] == [1, 2]
    assert {r["format"] for r in data["results"]} == {"pytorch", "onnx"}
    for r in data["results"]:
        probe = {int(n): ms for n, ms in r["thread_probe_p50_ms"].items()}
        assert set(probe) == {1, 2} and all(ms > 0 for ms in probe.values())
        assert r["threads"] == min(probe, key=probe.get) and r["status"] == "ok" and r["iterations"] == 5
    md = report.md_path.read_text()
    assert "CPU threads chosen per format: each of 1, 2 timed" in md
