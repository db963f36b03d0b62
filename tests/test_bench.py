"""`leapkit bench` end to end: what MODEL names (read from a real export), the report, the CLI and its errors.

Latencies are never asserted on (the CI machine is shared); only their consistency is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import distil_demo
from helpers import run_cli

import leapkit
from leapkit.cli.main import main
from leapkit.deploy.graph_precision import precision_from_name
from leapkit.deploy.manifest import ExportManifest
from leapkit.errors import CheckFailed, ConfigError, MissingDependency, ModelError, RunError
from leapkit.latency import bench as bench_module
from leapkit.latency import measure
from leapkit.latency.artifacts import resolve_model
from leapkit.latency.bench import bench
from leapkit.latency.machine import environment, package_version
from leapkit.latency.records import BenchReport
from leapkit.latency.render import latency_table

FAST = dict(warmup_s=0.0, iterations=5, threads=1)
ROOT = Path(__file__).resolve().parents[1]
# the keys of bench/<target>.json (a contract: see docs/contracts.md)
RESULT_KEYS = {
    "runtime", "format", "precision", "file", "batch", "threads", "size_mb", "accuracy", "export_status", "device",
    "providers", "input_shape", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms", "cv",
    "throughput", "iterations", "noisy", "peak_rss_mb", "peak_cuda_mb", "status", "achieved_tflops", "roofline",
    "budget_ok", "predicted_ms", "predicted_range_ms", "prediction_source",
}
REPORT_KEYS = [
    "target", "target_description", "model", "source_run", "export_dir", "input_shape", "results", "budget_ms",
    "budget_stat", "budget_source", "evidence", "evidence_reason", "measured_on", "verdict", "verdict_reason", "gated",
    "method", "roofline_note", "warnings", "environment", "leapkit_version", "created", "choice",
]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, teacher_file) -> Path:
    """A real 1-epoch demo distillation at 16 px, exported by `leapkit.export` for x86-cpu in fp32 and int8, without
    openvino (as CI runs it): ONNX Runtime's variants only."""
    root = tmp_path_factory.mktemp("bench")
    distil_demo(root, teacher_file)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "openvino", None)
        leapkit.export(root / "run", target="x86-cpu", precision=["fp32", "int8"], check=False, calib_images=16,
                       parity_images=8, probe_images=36)
    return root / "run"


@pytest.fixture(scope="session")
def manifest(run_dir) -> ExportManifest:
    return ExportManifest.load(run_dir / "export" / "x86-cpu")


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real entry point, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "leapkit", *args], capture_output=True, text=True, timeout=300)


def cli_here(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real entry point (`main`), in this process: exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["leapkit", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


# ---------------------------------------------------------------- what MODEL names


def test_resolve_run_reads_the_real_export_manifest(run_dir, manifest):
    src = resolve_model(run_dir, "x86-cpu")
    assert src.kind == "run" and src.run_dir == run_dir.resolve() and src.target == "x86-cpu"
    assert [(a.format, a.precision) for a in src.artifacts] == [("pytorch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
    pytorch, fp32, int8 = src.artifacts
    assert pytorch.accuracy == manifest.pytorch_top1 is not None  # no eval.json: the export's probe of the student
    for art in (fp32, int8):
        variant = manifest.variant(art.path.name)
        assert art.accuracy == variant.probe_top1 is not None and art.status == variant.status == "ok"
        assert art.size_mb == pytest.approx(variant.size_bytes / 1e6, rel=0.01)


def test_resolve_export_folder_file_and_bad_paths(run_dir, manifest, tmp_path):
    export = run_dir / "export" / "x86-cpu"
    src = resolve_model(export)
    assert src.kind == "export" and src.run_dir == run_dir.resolve()  # source_run from the manifest
    assert src.img_size == manifest.input.img_size == 16 and len(src.artifacts) == 2
    src = resolve_model(export / "model.onnx")
    assert src.kind == "onnx" and src.out_dir == export.resolve() and src.artifacts[0].status == "ok"

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="notes.txt is not a model leapkit can bench"):
        resolve_model(tmp_path / "notes.txt")
    (tmp_path / "broken.onnx").write_text("not protobuf")
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        resolve_model(tmp_path / "broken.onnx")
    with pytest.raises(ModelError, match="model not found"):
        resolve_model(tmp_path / "missing.onnx")


def test_a_folder_without_manifest_is_scanned(run_dir, tmp_path):
    shutil.copy(run_dir / "export" / "x86-cpu" / "model_int8.onnx", tmp_path / "model_int8.onnx")
    src = resolve_model(tmp_path)
    assert src.kind == "export" and src.manifest is None and src.out_dir == tmp_path.resolve()
    (art,) = src.artifacts
    assert (art.format, art.precision, art.status, art.accuracy) == ("onnx", "int8", "ok", None)


def test_a_manifest_export_never_writes_is_refused(run_dir, tmp_path):
    """Only the manifest `leapkit export` writes is read: no guessing in other layouts."""
    shutil.copy(run_dir / "export" / "x86-cpu" / "model.onnx", tmp_path / "model.onnx")
    made_up = {"files": {"model.onnx": "0" * 64}, "target": "x86-cpu",
               "artifacts": {"model.onnx": {"precision": "fp32", "accuracy": 91.5, "status": "ok"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(made_up))
    with pytest.raises(RunError, match=r"manifest.json: ExportManifest lacks format_version"):
        resolve_model(tmp_path)


def test_precision_from_file_name():
    assert precision_from_name("model_int8.onnx") == "int8"
    assert precision_from_name("model_fp16.onnx") == "fp16"
    assert precision_from_name("model.fp16.engine") == "fp16"
    assert precision_from_name("model.onnx") is None


# ---------------------------------------------------------------- end to end


def test_bench_run_writes_report(run_dir, manifest, tmp_path, monkeypatch):
    # any host benches as an x86-64 one: the x86-cpu target, so that its own timings are judged
    x86 = {"machine": "x86_64", "device_model": None, "jetson": None}
    monkeypatch.setattr(bench_module, "environment", lambda: {**environment(), **x86})
    report = bench(run_dir, "x86-cpu", budget_ms=1e6, out_dir=tmp_path, **FAST)
    assert report.json_path == tmp_path / "bench" / "x86-cpu.json" and report.md_path.is_file()
    data = json.loads(report.json_path.read_text())
    assert list(data) == REPORT_KEYS
    assert data["verdict"] == "PASS" and data["budget_stat"] == "p99" and data["budget_source"] == "--budget-ms"
    assert data["evidence"] == "measured" and data["evidence_reason"].startswith("this host is x86-cpu: 'x86_64'")
    assert all(r["budget_ok"] is True for r in data["results"])
    assert [(r["runtime"], r["format"], r["precision"]) for r in data["results"]] == [
        ("torch", "pytorch", "fp32"), ("onnxruntime", "onnx", "fp32"), ("onnxruntime", "onnx", "int8")]
    for r in data["results"]:
        assert set(r) == RESULT_KEYS | ({"compiled"} if r["format"] == "pytorch" else set()), r["format"]
        for key in ("runtime", "format", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput",
                    "cv"):
            assert r[key] is not None, key
        assert r["iterations"] == 5 and r["threads"] == 1 and r["status"] == "ok" and r["input_shape"] == [1, 3, 16, 16]
        assert r["roofline"]["estimate_ms"] > 0 and r["roofline"]["kind"] == "lower bound"
    assert data["results"][1]["accuracy"] == manifest.variant("model.onnx").probe_top1
    # x86-cpu chooses the fastest variant whose export checks passed among its runtimes (PyTorch is not one)
    fastest = min(data["results"][1:], key=lambda r: r["p99_ms"])
    assert data["gated"] == f"ONNX {fastest['precision']}"
    assert data["choice"].startswith(
        f"ONNX {fastest['precision']} (onnxruntime), the fastest by p99 of the 2 variants in openvino, onnxruntime "
        f"whose export checks passed ({fastest['p99_ms']:.3f} ms; next ONNX ")
    assert data["method"]["threads"] == 1 and data["method"]["providers"] == ["CPUExecutionProvider"]
    assert BenchReport.load(report.json_path).to_dict() == data

    md = report.md_path.read_text()
    assert "| PyTorch eager | fp32 | torch | ok |" in md and "**Verdict: PASS**" in md
    assert f"**Judged:** {data['choice']}." in md
    assert latency_table(report).to_markdown() in md  # one table, rendered once for the file and the terminal


def test_bench_fail_writes_report_then_raises(run_dir, tmp_path):
    with pytest.raises(CheckFailed, match=r"bench verdict FAIL on x86-cpu: ONNX fp32 \(onnxruntime\) p50"):
        bench(run_dir, "x86-cpu", budget_ms=1e-9, stat="p50", runtimes=["onnxruntime"], precisions=["fp32"],
              out_dir=tmp_path, **FAST)
    data = json.loads((tmp_path / "bench" / "x86-cpu.json").read_text())
    assert data["verdict"] == "FAIL" and data["budget_stat"] == "p50" and len(data["results"]) == 1


def test_export_marked_failed_fails_the_verdict(run_dir, manifest, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(run_dir / "export" / "x86-cpu" / "model.onnx", export / "model.onnx")
    broken = ExportManifest.from_dict(manifest.to_dict())
    broken.source_run = str(tmp_path / "gone")
    broken.files = {"model.onnx": broken.files["model.onnx"]}
    variant = broken.variant("model.onnx")
    variant.status, variant.notes = "failed", ["parity: cosine 0.91 < 0.9999"]
    broken.save(folder=export)
    with pytest.raises(CheckFailed, match="the export marked it as failed: parity: cosine 0.91"):
        bench(export, None, budget_ms=1e6, **FAST)  # the target comes from the manifest
    data = json.loads((export / "bench" / "x86-cpu.json").read_text())
    assert data["verdict"] == "FAIL" and data["results"][0]["export_status"] == "failed: parity: cosine 0.91 < 0.9999"
    assert "ok, export failed" in (export / "bench" / "x86-cpu.md").read_text()


def test_bench_bad_options(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="budget must be a positive number"):
        bench(run_dir, "x86-cpu", budget_ms=0, **FAST)
    with pytest.raises(ConfigError, match="unknown statistic 'p999'"):
        bench(run_dir, "x86-cpu", stat="p999", **FAST)
    unknown = "unknown runtime 'tensorflow'; use torch, onnxruntime, openvino, tensorrt or all"
    with pytest.raises(ConfigError, match=unknown):
        bench(run_dir, "x86-cpu", runtimes=["tensorflow"], **FAST)
    with pytest.raises(ConfigError, match="--runtime all cannot be combined"):
        bench(run_dir, "x86-cpu", runtimes=["all", "torch"], **FAST)
    with pytest.raises(ConfigError, match="--runtime tensorrt needs a TensorRT engine"):
        bench(run_dir, "x86-cpu", runtimes=["tensorrt"], **FAST)
    with pytest.raises(ConfigError, match="--runtime torch needs a run directory"):
        bench(run_dir / "export" / "x86-cpu" / "model.onnx", "x86-cpu", runtimes=["torch"], **FAST)
    with pytest.raises(ConfigError, match="--iterations must be >= 1, got 0; --duration must be"):
        bench(run_dir, "x86-cpu", iterations=0, duration_s=0.0, warmup_s=0.0)
    (tmp_path / "m.engine").write_bytes(b"\0" * 16)
    if package_version("tensorrt") is None:
        with pytest.raises(MissingDependency, match="needs the 'tensorrt' package: pip install 'leapkit\\[trt\\]'"):
            bench(tmp_path / "m.engine", "jetson", **FAST)
    assert not (run_dir / "bench").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--batch", "0", "--batch must be >= 1, got 0"),
    ("--batch", "-2", "--batch must be >= 1, got -2"),
    ("--iterations", "0", "--iterations must be >= 1, got 0"),
    ("--duration", "0", "--duration must be > 0, got 0.0: pass a finite number of seconds (see leapkit bench --help)"),
    ("--duration", "inf", "--duration must be > 0, got inf: pass a finite number of seconds (see leapkit bench "
                          "--help)"),
    ("--warmup", "-1", "--warmup must be >= 0, got -1.0: pass a finite number of seconds (see leapkit bench --help)"),
    ("--threads", "0", "--threads must be a positive integer or 'auto', got '0'"),
    ("--budget-ms", "0", "--budget-ms must be > 0, got 0.0: pass a finite number of ms (see leapkit bench --help)"),
])
def test_invalid_numbers_exit_2_and_leave_the_report_alone(run_dir, tmp_path, monkeypatch, capsys, flag, value,
                                                            message):
    """`leapkit bench --batch 0` took the target's batch and overwrote the run's report."""
    run = shutil.copytree(run_dir, tmp_path / "run", symlinks=True)
    report = run / "bench" / "x86-cpu.json"
    report.parent.mkdir()
    report.write_bytes(b'{"verdict": "PASS"}\n')
    code, err = cli_here(monkeypatch, capsys, "bench", str(run), "--target", "x86-cpu", "-n", "5", "--warmup", "0",
                         f"{flag}={value}")
    assert code == 2 and err == f"error: {message}\n"
    assert report.read_bytes() == b'{"verdict": "PASS"}\n' and sorted(report.parent.iterdir()) == [report]


def test_cli_bench(run_dir, tmp_path):
    common = ["--target", "x86-cpu", "-n", "5", "--warmup", "0", "--threads", "1", "--out", str(tmp_path)]
    r = cli("bench", str(run_dir), *common, "--budget-ms", "100000", "--runtime", "torch,onnxruntime", "-p", "fp32")
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "ONNX fp32" in r.stdout and "ONNX int8" not in r.stdout
    export = run_dir / "export" / "x86-cpu"
    r = cli("bench", str(export), *common, "--budget-ms", "0.000001", "--runtime", "onnxruntime")
    assert r.returncode == 1 and "bench verdict FAIL on x86-cpu" in r.stderr
    assert json.loads((tmp_path / "bench" / "x86-cpu.json").read_text())["verdict"] == "FAIL"


def test_cli_bench_errors(run_dir, tmp_path, monkeypatch, capsys):
    common = ["--target", "x86-cpu", "-n", "5", "--warmup", "0", "--out", str(tmp_path)]
    for extra, message in (
        (["--budget-ms", "-1"], "error: --budget-ms must be > 0, got -1.0: pass a finite number of ms (see leapkit "
                                "bench --help)"),
        (["--runtime", "tensorflow"],
         "error: unknown --runtime 'tensorflow'; use torch, onnxruntime, openvino, tensorrt or all"),
        (["--runtime", "all,torch"], "error: --runtime all cannot be combined with other --runtime values"),
        (["--threads", "many"], "error: --threads must be a positive integer or 'auto', got 'many'"),
        (["--precision", "fp8"], "error: unknown --precision 'fp8'; use fp32, fp16, bf16, int8 or all"),
    ):
        code, err = cli_here(monkeypatch, capsys, "bench", str(run_dir), *common, *extra)
        assert code == 2 and err == message + "\n", (extra, err)
    for extra, choice in ((["--stat", "p42"], "'p42' is not one of"),
                          (["--ort-provider", "gpu"], "'gpu' is not one of")):
        code, err = cli_here(monkeypatch, capsys, "bench", str(run_dir), *common, *extra)
        assert code == 2 and choice in err, (extra, err)
    (tmp_path / "weights.bin").write_bytes(b"0")
    code, err = cli_here(monkeypatch, capsys, "bench", str(tmp_path / "weights.bin"), *common)
    assert code == 2 and "weights.bin is not a model leapkit can bench" in err
    assert not (tmp_path / "bench").exists()


def test_python_api_is_the_latency_bench():
    assert leapkit.bench is bench_module.bench


# ---------------------------------------------------------------- optional dependencies


def test_every_missing_dependency_names_an_extra_pyproject_has():
    """`pip install 'leapkit[gpu]'` was suggested, and pyproject has no such extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    used = {}
    for path in (ROOT / "leapkit").rglob("*.py"):
        for package, extra in re.findall(r"MissingDependency\(\s*\"([^\"]+)\",\s*\"([^\"]+)\"", path.read_text()):
            used[extra] = f"{path.relative_to(ROOT)} ({package})"
    assert used and "ort-gpu" in used and "trt" in used
    assert {extra: where for extra, where in used.items() if extra not in extras} == {}


def test_ort_gpu_provider_names_the_ort_gpu_extra(run_dir, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(MissingDependency, match=r"CUDAExecutionProvider needs the 'onnxruntime-gpu' package: "
                                                r"pip install 'leapkit\[ort-gpu\]'"):
        bench(run_dir, "x86-cpu", runtimes=["onnxruntime"], ort_provider="cuda", out_dir=tmp_path, **FAST)
    assert not (tmp_path / "bench").exists()


# ---------------------------------------------------------------- threads, GPUs


def test_bench_threads_auto_measures_each_format_at_its_fastest_count(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(measure, "PROBE_S", 0.05)
    report = bench(run_dir, "x86-cpu", threads="auto", warmup_s=0.0, iterations=5, budget_ms=1e6, precisions=["fp32"],
                   out_dir=tmp_path)
    data = json.loads(report.json_path.read_text())
    assert data["method"]["thread_candidates"] == [1, 2] and data["method"]["threads"] == 2
    assert {r["format"] for r in data["results"]} == {"pytorch", "onnx"}
    for r in data["results"]:
        probe = {int(n): ms for n, ms in r["thread_probe_p50_ms"].items()}
        assert set(probe) == {1, 2} and all(ms > 0 for ms in probe.values())
        assert r["threads"] == min(probe, key=probe.get) and r["status"] == "ok" and r["iterations"] == 5
    assert "CPU threads chosen per format: each of 1, 2 timed" in report.md_path.read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_student_on_cuda(run_dir, tmp_path):
    report = bench(run_dir, "x86-cpu", runtimes=["torch"], device="cuda", budget_ms=1e6, out_dir=tmp_path, **FAST)
    (result,) = report.results
    assert result.device == "cuda" and result.status == "ok" and result.peak_cuda_mb > 0


@pytest.mark.trt
@pytest.mark.skipif(package_version("tensorrt") is None or not torch.cuda.is_available(),
                    reason="needs TensorRT and a GPU")
def test_bench_tensorrt_engine(run_dir, tmp_path):
    from leapkit.deploy.trt_build import build_engine
    from leapkit.trtexec.flags import BatchRange

    engine = tmp_path / "model_fp32.engine"
    build_engine(run_dir / "export" / "x86-cpu" / "model.onnx", engine, input_name="images", chw=(3, 16, 16),
                 batch=BatchRange(1, 1, 4), precision="fp32", workspace_mb=256)
    report = bench(engine, "rtx-4090", budget_ms=1e6, **FAST)
    (result,) = report.results
    assert (result.runtime, result.status, result.precision) == ("tensorrt", "ok", "fp32")
    assert result.input_shape == [1, 3, 16, 16]


# ---------------------------------------------------------------- evidence: judged only on the target's figures

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/trtexec-samples is absent")
JETSON_HOST = {"host": "orin", "device_model": "NVIDIA Jetson Orin Nano Developer Kit", "gpu_names": [],
               "cpu": "ARMv8 Processor rev 1 (v8l)", "machine": "aarch64", "jetson": None}


@pytest.mark.slow
def test_cli_bench_for_a_jetson_on_this_machine_never_judges_its_own_timings(run_dir, tmp_path):
    """`leapkit bench --target jetson-orin-nano` on an x86 laptop printed PASS or FAIL from the laptop's CPU."""
    from leapkit.latency.machine import describe_host, environment

    if "Jetson Orin Nano" in (environment()["device_model"] or ""):
        pytest.skip("this machine is a Jetson Orin Nano")
    common = ["--target", "jetson-orin-nano", "-n", "5", "--warmup", "0", "--threads", "1", "--out", str(tmp_path)]
    r = cli("bench", str(run_dir), *common)
    assert r.returncode == 0, r.stderr
    assert "UNCONFIRMED" in r.stdout and "PASS" not in r.stdout and "FAIL" not in r.stdout
    data = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert (data["evidence"], data["verdict"]) == ("estimated", "UNCONFIRMED")
    assert data["measured_on"] == describe_host(environment())
    assert data["evidence_reason"] == (f"measured on {data['measured_on']}, not on jetson-orin-nano: nothing on "
                                       f"{data['measured_on']} matches 'Jetson Orin Nano'")
    assert all(res["budget_ok"] is None and res["p50_ms"] > 0 for res in data["results"])  # shown, not judged
    md = (tmp_path / "bench" / "jetson-orin-nano.md").read_text()
    assert f"Latency measured on {data['measured_on']}, not on jetson-orin-nano" in md and "PASS" not in md

    r = cli("bench", str(run_dir), *common, "--budget-ms", "0.000001")  # below even the lower bound
    assert r.returncode == 1
    assert "bench verdict FAIL on jetson-orin-nano: even the lower bound of ONNX int8 on jetson-orin-nano" in r.stderr
    assert json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())["verdict"] == "FAIL"

    r = cli("bench", str(run_dir), *common, "--require-measured")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error: bench verdict UNCONFIRMED on jetson-orin-nano and --require-measured is set: "
                               f"measured on {data['measured_on']}, not on jetson-orin-nano")


def jetson_environment() -> dict:
    from leapkit.latency.machine import environment

    return {**environment(), **JETSON_HOST}


def test_on_a_jetson_cpu_timings_are_not_the_targets(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_module, "environment", jetson_environment)
    report = bench(run_dir, "jetson-orin-nano", runtimes=["onnxruntime"], out_dir=tmp_path, **FAST)
    assert (report.evidence, report.verdict) == ("estimated", "UNCONFIRMED")
    assert report.evidence_reason == (
        "this host is jetson-orin-nano: 'NVIDIA Jetson Orin Nano Developer Kit' matches 'Jetson Orin Nano', but no "
        "format ran on its GPU; bench a format that runs there")


def test_a_cpu_target_away_from_its_class_is_unconfirmed(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_module, "environment", jetson_environment)
    report = bench(run_dir, "x86-cpu", runtimes=["onnxruntime"], budget_ms=1e6, out_dir=tmp_path, **FAST)
    assert (report.evidence, report.verdict, report.measured_on) == ("estimated", "UNCONFIRMED",
                                                                     "orin (NVIDIA Jetson Orin Nano Developer Kit, "
                                                                     "ARMv8 Processor rev 1 (v8l), aarch64)")
    with pytest.raises(CheckFailed, match=r"^bench verdict UNCONFIRMED on x86-cpu and --require-measured is set: "):
        bench(run_dir, "x86-cpu", runtimes=["onnxruntime"], budget_ms=1e6, out_dir=tmp_path, require_measured=True,
              **FAST)


# ---------------------------------------------------------------- --from-trtexec


@needs_samples
def test_cli_from_trtexec_judges_the_devices_own_figures(tmp_path):
    log_file = SAMPLES / "trt8.5.2-orin-nano-yolox-fp16-summary.log"
    r = cli("bench", "--from-trtexec", str(log_file), "--target", "jetson-orin-nano", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "evidence: imported" in r.stdout
    data = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert (data["evidence"], data["verdict"], data["budget_stat"]) == ("imported", "PASS", "p99")
    (res,) = data["results"]
    assert (res["runtime"], res["format"], res["precision"], res["batch"]) == ("tensorrt", "engine", "fp16", 1)
    expected = {"min_ms": 10.642, "max_ms": 10.9861, "mean_ms": 10.7971, "p50_ms": 10.7972, "p90_ms": 10.9329,
                "p95_ms": 10.949, "p99_ms": 10.9744, "throughput": 97.8649}
    assert {k: res[k] for k in expected} == pytest.approx(expected, rel=1e-4)
    assert res["gpu_compute_ms"] == pytest.approx({"min": 10.0343, "max": 10.3575, "mean": 10.1824, "p50": 10.1851,
                                                  "p90": 10.3206, "p95": 10.338, "p99": 10.356}, rel=1e-4)
    assert res["budget_ok"] is True and data["verdict_reason"].startswith("TensorRT engine fp16 (tensorrt) p99 10.974")
    # a truncated log names no device: the target is taken as given, and the report says so
    assert "the trtexec output names no device; it is taken to be jetson-orin-nano as --target says" in data["warnings"]
    md = (tmp_path / "bench" / "jetson-orin-nano.md").read_text()
    assert "GPU compute time (trtexec)" in md and "trtexec's host latency per query" in md


@needs_samples
def test_from_trtexec_records_another_device_and_release_as_warnings(tmp_path):
    files = [SAMPLES / "trt8.6.3-rtx3090-resnet-cifar10-int8-verbose-full.log.gz",
             SAMPLES / "trt8.6.3-rtx3090-resnet-cifar10-int8-exportProfile.json"]
    report = bench(target="rtx-4090", from_trtexec=files, out_dir=tmp_path)
    # another device's log never judges a budget (tests/test_bad_inputs_cli.py has --allow-other-device)
    assert (report.evidence, report.verdict) == ("imported", "UNCONFIRMED")
    assert report.results[0].p99_ms == pytest.approx(0.694092, rel=1e-4)
    assert report.measured_on == "NVIDIA GeForce RTX 3090"
    notes = report.warnings
    assert ("the trtexec figures name the device 'NVIDIA GeForce RTX 3090', which does not match rtx-4090 "
            "('RTX 4090'); add the device's device.json (bench_engine.sh writes it) or check --target") in notes
    assert any(w.startswith("timed with TensorRT 8.6.3, but the profile rtx-4090 expects 10.x") for w in notes)
    assert json.loads(report.json_path.read_text())["environment"]["tensorrt"] == "8.6.3"
    md = report.md_path.read_text()
    assert "## Per-layer profile" in md and "Engine time per block" in md and "Engine time per op type" in md


@needs_samples
def test_from_trtexec_over_the_budget_fails(tmp_path, monkeypatch, capsys):
    code, err = run_cli(["bench", "--from-trtexec", str(SAMPLES / "trt10.3.0-rtxa5000-resnet50-fp16-full.log"),
                         "--target", "rtx-4090", "--budget-ms", "5", "--out", str(tmp_path), "--allow-other-device"],
                        monkeypatch, capsys)
    assert code == 1 and err.startswith("error: bench verdict FAIL on rtx-4090: TensorRT engine fp16 (tensorrt) p99 "
                                        "6.443 ms > 5 ms")


@needs_samples
def test_from_trtexec_bad_inputs_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys):
    no_summary = SAMPLES / "trt8.5.2-xavier-nx-lprnet-dumpProfile-nosummary.log"
    only_p99 = SAMPLES / "trt8.2.5-a100class-mobilenetv2-qat-int8-full.log"
    for args, message in (
        ([str(no_summary)], str(no_summary)),
        ([str(only_p99), "--stat", "p95"], "has no p95 latency"),
        ([str(tmp_path / "gone.log")], "gone.log: no such file or folder"),
    ):
        code, err = run_cli(["bench", "--from-trtexec", *args, "--target", "jetson-orin-nano", "--out", str(tmp_path)],
                            monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (args, err)
    for args, message in (
        (["runs/x", "--from-trtexec", str(only_p99), "--target", "rtx-4090"], "pass either MODEL"),
        (["--from-trtexec", str(only_p99)], "--from-trtexec needs --target T"),
        (["--from-trtexec", str(only_p99), "--target", "rtx-4090", "--threads", "2", "-n", "3"],
         "--threads, --iterations time MODEL on this machine and do not apply to --from-trtexec"),
        (["--from-trtexec", str(only_p99), "--target", "rtx-4090", "--host", "orin"], "pass one"),
    ):
        code, err = run_cli(["bench", *args, "--out", str(tmp_path)], monkeypatch, capsys)
        assert code == 2 and message in err, (args, err)
    assert not (tmp_path / "bench").exists()


@needs_samples
def test_from_trtexec_writes_beside_the_input_or_into_its_run(tmp_path):
    log_file = SAMPLES / "trt8.5.2-orin-nano-yolox-fp16-summary.log"
    loose = tmp_path / "copied"
    loose.mkdir()
    shutil.copy(log_file, loose / "trtexec.log")
    assert bench(target="jetson-orin-nano", from_trtexec=[loose / "trtexec.log"]).json_path == \
        loose / "bench" / "jetson-orin-nano.json"
    run = tmp_path / "run"
    results = run / "export" / "jetson-orin-nano" / "results" / "fp16"
    results.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    shutil.copy(log_file, results / "trtexec.log")
    report = bench(target="jetson-orin-nano", from_trtexec=[results])  # a folder copied back from the device
    assert report.json_path == run / "bench" / "jetson-orin-nano.json" and report.md_path.is_file()


# ---------------------------------------------------------------- --host (the SSH round trip is tested in test_remote)


@needs_samples
def test_cli_host_judges_the_figures_brought_back(run_dir, tmp_path, monkeypatch, capsys):
    from leapkit.device.round_trip import HostRun
    from leapkit.latency import imported

    run = shutil.copytree(run_dir, tmp_path / "run", symlinks=True)
    leapkit.export(run, target="jetson-orin-nano", precision=["fp16"], check=False, calib_images=8, parity_images=4,
                   probe_images=None)
    calls = []

    def fake_bench_on_host(export_dir, host, precision, out_dir, *, profile, ssh_options=()):
        calls.append((export_dir, host, precision, out_dir, profile.name, tuple(ssh_options)))
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / "trt8.5.2-orin-nano-yolox-fp16-summary.log", out_dir / "trtexec.log")
        device = {"host": "orin", "jetson": {"model": "NVIDIA Jetson Orin Nano Developer Kit", "power_mode": "15W"},
                  "tensorrt": "8.5.2"}
        (out_dir / "device.json").write_text(json.dumps(device))
        return HostRun(host="nvidia@orin", files=[out_dir / "trtexec.log", out_dir / "device.json"],
                       timing_cache_reused=True, device=device)

    monkeypatch.setattr(imported, "bench_on_host", fake_bench_on_host)
    code, err = run_cli(["bench", str(run), "--target", "jetson-orin-nano", "--host", "nvidia@orin",
                         "--ssh-option", "-i /keys/orin", "--ssh-option", "StrictHostKeyChecking=accept-new"],
                        monkeypatch, capsys)
    assert code == 0, err
    export = run / "export" / "jetson-orin-nano"
    assert calls == [(export, "nvidia@orin", "fp16", export / "results" / "fp16", "jetson-orin-nano",
                      ("-i", "/keys/orin", "StrictHostKeyChecking=accept-new"))]
    data = json.loads((run / "bench" / "jetson-orin-nano.json").read_text())
    assert (data["evidence"], data["verdict"]) == ("measured", "PASS")
    assert data["measured_on"] == "nvidia@orin (NVIDIA Jetson Orin Nano Developer Kit)"
    assert data["evidence_reason"] == "timed by trtexec on nvidia@orin over SSH"
    assert data["results"][0]["p99_ms"] == pytest.approx(10.9744)
    # the published log is from JetPack 5.1 (TensorRT 8.5.2): measured all the same, with a warning
    assert data["warnings"] == ["timed with TensorRT 8.5.2, but the profile jetson-orin-nano expects 10.3: engines "
                                "and their speed differ between releases"]
    assert data["environment"]["fingerprint"]["jetson"]["power_mode"] == "15W"


# ---------------------------------------------------------------- CI: --baseline, --junit, the job summary

TIMES = ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
HINT = "pass a bench/<target>.json that an earlier `leapkit bench` wrote"


def scaled_copy(source: Path, factor: float, dest: Path, **top) -> Path:
    """A second bench JSON written from a real one: every latency times ``factor`` (and top-level keys ``top``)."""
    data = json.loads(source.read_text())
    for r in data["results"]:
        r.update({k: r[k] * factor for k in TIMES if r.get(k) is not None})
    data.update(top)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(data))
    return dest


@pytest.fixture(scope="session")
def timed(run_dir, tmp_path_factory) -> Path:
    """bench/x86-cpu.json of a real timed run of every format (200 iterations each)."""
    out = tmp_path_factory.mktemp("timed")
    return bench(run_dir, "x86-cpu", budget_ms=1e6, warmup_s=0.0, iterations=200, threads=1, out_dir=out).json_path


@pytest.mark.slow
def test_cli_bench_fails_on_a_slowdown_beyond_the_threshold(run_dir, timed, tmp_path):
    from junitparser import JUnitXml

    # A baseline a million times faster than any real run of the model: every row regresses, however loaded the
    # machine is, so the verdict does not depend on this run's timings.
    prev = scaled_copy(timed, 1e-6, tmp_path / "baseline" / "x86-cpu.json")
    summary = tmp_path / "step_summary.md"
    junit = tmp_path / "reports" / "latency.xml"
    r = subprocess.run(
        [sys.executable, "-m", "leapkit", "bench", str(run_dir), "--target", "x86-cpu", "-n", "200", "--warmup", "0",
         "--threads", "1", "--budget-ms", "1000000", "--out", str(tmp_path), "--baseline", str(prev),
         "--max-regression", "10", "--junit", str(junit)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 1, r.stderr
    data = json.loads((tmp_path / "bench" / "x86-cpu.json").read_text())
    assert data["verdict"] == "PASS"  # within the budget, and slower than the baseline allows
    rows = data["baseline"]["rows"]
    assert data["baseline"]["path"] == str(prev) and data["baseline"]["stat"] == "p99"
    assert [(row["label"], row["change"]) for row in rows] == [
        ("PyTorch eager", "regressed"), ("ONNX fp32", "regressed"), ("ONNX int8", "regressed")]
    messages = [f"{row['label']} p99 {row['now_ms']:.3f} ms vs {row['before_ms']:.3f} ms in the baseline "
                f"({row['change_pct']:+.1f}% > 10% allowed; noise ±{row['noise_pct']:.1f}%)" for row in rows]
    report = tmp_path / "bench" / "x86-cpu.md"
    assert r.stderr == (f"error: latency regression on x86-cpu against {prev}: {'; '.join(messages)} "
                        f"(report: {report})\n")

    cases = list(next(iter(JUnitXml.fromfile(str(junit)))))
    assert [c.name for c in cases] == ["PyTorch eager", "ONNX fp32", "ONNX int8"]
    for case, message in zip(cases, messages, strict=True):
        (failure,) = case.result
        assert (failure.type, failure.message) == ("regression", f"regression: {message}")

    loaded = BenchReport.load(tmp_path / "bench" / "x86-cpu.json")
    table = latency_table(loaded).to_markdown()
    assert table.splitlines()[0].endswith("| verdict | vs baseline |") and table in report.read_text()
    assert "**Against the baseline**" in report.read_text()
    text = summary.read_text()
    assert text.startswith("### leapkit bench x86-cpu: PASS\n") and table in text and "3 regressed" in text


@pytest.mark.slow
@needs_samples
def test_cli_bench_within_the_noise_passes(tmp_path):
    """The run-to-run change of a live timing is never asserted on; trtexec's published figures are fixed."""
    log_file = SAMPLES / "trt10.3.0-rtxa5000-resnet50-fp16-full.log"  # p99 6.443 ms, cv 1.6%, 577 iterations
    common = ["bench", "--from-trtexec", str(log_file), "--target", "rtx-4090", "--out", str(tmp_path)]
    assert cli(*common).returncode == 0
    prev = scaled_copy(tmp_path / "bench" / "rtx-4090.json", 1 / 1.012, tmp_path / "prev.json")
    r = cli(*common, "--baseline", str(prev), "--junit", str(tmp_path / "latency.xml"))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads((tmp_path / "bench" / "rtx-4090.json").read_text())["baseline"]["rows"]
    assert row["change"] == "within noise" and row["change_pct"] == pytest.approx(1.2)
    assert "+1.2% within noise (±1.6%)" in r.stdout and "vs baseline" in r.stdout
    prev = scaled_copy(tmp_path / "bench" / "rtx-4090.json", 1 / 1.15, tmp_path / "prev.json")
    r = cli(*common, "--baseline", str(prev))
    assert r.returncode == 1 and "latency regression on rtx-4090" in r.stderr and "(+15.0% > 10% allowed" in r.stderr


def test_host_timings_away_from_the_target_compare_with_a_note(run_dir, tmp_path):
    from junitparser import JUnitXml

    from leapkit.latency.machine import environment

    if "Jetson Orin Nano" in (environment()["device_model"] or ""):
        pytest.skip("this machine is a Jetson Orin Nano")
    first = bench(run_dir, "jetson-orin-nano", runtimes=["onnxruntime"], out_dir=tmp_path / "a", **FAST)
    prev = scaled_copy(first.json_path, 1e6, tmp_path / "prev.json")  # a million times slower: this run is faster
    report = bench(run_dir, "jetson-orin-nano", runtimes=["onnxruntime"], out_dir=tmp_path, baseline=prev,
                   junit=tmp_path / "latency.xml", **FAST)
    # A speedup is at most -100%, and at 5 iterations on a loaded machine the noise band can be wider than that, so
    # "within noise" is a fair reading too; "slower" or "regressed" never is.
    assert report.verdict == "UNCONFIRMED" and {r.change for r in report.baseline.rows} <= {"faster", "within noise"}
    assert report.baseline.notes[-1].startswith("both are timings of this host, not of jetson-orin-nano (evidence "
                                                "estimated)")
    assert report.baseline.notes[-1] in report.md_path.read_text()
    for case in next(iter(JUnitXml.fromfile(str(tmp_path / "latency.xml")))):
        (skipped,) = case.result
        assert case.is_skipped and skipped.message.startswith("budget UNCONFIRMED on jetson-orin-nano: measured on ")
    with pytest.raises(CheckFailed, match=r"^latency regression on jetson-orin-nano against .*prev.json: ONNX fp32"):
        bench(run_dir, "jetson-orin-nano", runtimes=["onnxruntime"], out_dir=tmp_path,
              baseline=scaled_copy(first.json_path, 1e-6, tmp_path / "prev.json"), **FAST)


def test_cli_bad_baseline_and_ci_options_exit_2_and_write_nothing(run_dir, timed, tmp_path, monkeypatch, capsys):
    (tmp_path / "broken.json").write_text("{not json")
    other = scaled_copy(timed, 1.0, tmp_path / "jetson.json", target="jetson-orin-nano")
    (tmp_path / "reports").mkdir()
    out = tmp_path / "out"
    for extra, message in (
        (["--baseline", str(tmp_path / "gone.json")], f"--baseline {tmp_path / 'gone.json'}: no such file; {HINT}"),
        (["--baseline", str(tmp_path / "broken.json")], f"--baseline {tmp_path / 'broken.json'} is not JSON "
                                                        f"(Expecting property name enclosed in double quotes: line 1 "
                                                        f"column 2 (char 1)); {HINT}"),
        (["--baseline", str(other)], f"--baseline {other} is a bench report for jetson-orin-nano, not x86-cpu; pass "
                                     "an earlier bench/x86-cpu.json"),
        (["--max-regression", "5"], "--max-regression applies to a comparison: pass --baseline PREV.json too"),
        (["--baseline", str(timed), "--max-regression", "-5"], "--max-regression must be >= 0, got -5.0: pass a "
                                                               "finite percentage (see leapkit bench --help)"),
        (["--junit", str(tmp_path / "reports")], f"--junit {tmp_path / 'reports'} is a folder; pass a file name such "
                                                 "as reports/latency.xml"),
    ):
        code, err = cli_here(monkeypatch, capsys, "bench", str(run_dir), "--target", "x86-cpu", "-n", "5",
                             "--out", str(out), "--junit", str(tmp_path / "latency.xml"), *extra)
        assert (code, err) == (2, f"error: {message}\n"), extra
    assert not out.exists() and not (tmp_path / "latency.xml").exists()
    assert list((tmp_path / "reports").iterdir()) == []
