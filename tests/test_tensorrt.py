"""leapkit.tensorrt without TensorRT: trtexec command lines per version, scripts, guards.

The engine builder itself needs TensorRT and a GPU: the `trt` test at the end runs only there.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from leapkit import tensorrt as trt
from leapkit.errors import ExportError, MissingDependency

CHW = (3, 224, 224)
BATCH = trt.BatchRange(1, 4, 8)
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def build_args(version: str, precision: str = "fp16", workspace_mb: int | None = 1024) -> list[str]:
    return trt.trtexec_build_args(
        "model_fp16.onnx", "model_fp16.engine", input_name="images", chw=CHW, batch=BATCH, precision=precision,
        version=version, workspace_mb=workspace_mb,
    )


@pytest.mark.parametrize(
    "text,expected",
    [("10.3", (10, 3)), ("10.x", (10, None)), ("11", (11, None)), ("8.6.2", (8, 6)), (" 11.0.1 ", (11, 0))],
)
def test_parse_version(text, expected):
    assert trt.parse_version(text) == expected


@pytest.mark.parametrize("text,message", [("8.5", "TensorRT 8.5 is too old"), ("7", "TensorRT 7 is too old"), ("ten", "'ten' is not a TensorRT version")])
def test_parse_version_rejects(text, message):
    with pytest.raises(ExportError, match=message):
        trt.parse_version(text)


def test_tensorrt_10_is_strongly_typed():
    args = build_args("10.3")
    assert args == [
        "trtexec",
        "--onnx=model_fp16.onnx",
        "--saveEngine=model_fp16.engine",
        "--minShapes=images:1x3x224x224",
        "--optShapes=images:4x3x224x224",
        "--maxShapes=images:8x3x224x224",
        "--stronglyTyped",
        "--memPoolSize=workspace:1024M",
        "--timingCacheFile=timing.cache",
        "--skipInference",
    ]
    for precision in ("fp32", "int8"):
        flags = build_args("10.3", precision)
        assert "--stronglyTyped" in flags and "--fp16" not in flags and "--int8" not in flags


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_11_has_no_precision_flags(precision):
    args = build_args("11.0", precision)
    assert not {"--fp16", "--int8", "--best", "--stronglyTyped"} & set(args)
    assert "--memPoolSize=workspace:1024M" in args and "--optShapes=images:4x3x224x224" in args


@pytest.mark.parametrize("precision,flags", [("fp32", []), ("fp16", ["--fp16"]), ("int8", ["--int8", "--fp16"])])
def test_tensorrt_8_6_is_weakly_typed(precision, flags):
    args = build_args("8.6", precision)
    assert [a for a in args if a in ("--fp16", "--int8", "--stronglyTyped")] == flags
    assert "--memPoolSize=workspace:1024" in args  # 8.6 reads MiB without a suffix


def test_no_workspace_and_no_cache():
    args = trt.trtexec_build_args("m.onnx", "m.engine", input_name="images", chw=CHW, batch=BATCH, precision="fp32",
                                  version="10.3", workspace_mb=None, timing_cache=None)
    assert not [a for a in args if a.startswith(("--memPoolSize", "--timingCacheFile"))]


def test_strongly_typed():
    assert trt.strongly_typed("10.3") and trt.strongly_typed("11.x") and not trt.strongly_typed("8.6")


@pytest.mark.parametrize("lo,opt,hi", [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_batch_range_rejects(lo, opt, hi):
    with pytest.raises(ExportError, match="1 <= min <= opt <= max"):
        trt.BatchRange(lo, opt, hi)


def test_bench_and_check_args():
    bench = trt.trtexec_bench_args("m.engine", input_name="images", chw=CHW, batch=4, times_file="t.json")
    assert "--loadEngine=m.engine" in bench and "--shapes=images:4x3x224x224" in bench and "--exportTimes=t.json" in bench
    assert "--percentile=50,90,99" in bench and "--useCudaGraph" in bench
    check = trt.trtexec_check_args("m.engine", input_name="images", chw=CHW, input_file="ref.bin", output_file="out.json")
    assert "--loadInputs=images:ref.bin" in check and "--exportOutput=out.json" in check and "--shapes=images:1x3x224x224" in check


def test_shell_command_quotes():
    line = trt.shell_command(["trtexec", "--onnx=my model.onnx"])
    assert line == "trtexec \\\n    '--onnx=my model.onnx'"


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.0"])
def test_scripts_are_valid_bash(version, tmp_path):
    variants = [trt.BundleVariant(p, f"model_{p}.onnx", f"model_{p}.engine") for p in ("fp32", "fp16", "int8")]
    common = dict(target="jetson-orin-nano", version=version, jetpack="6.2", input_name="images", chw=CHW, default="fp16", leapkit_version="0.1.0")
    scripts = {
        "build_engine.sh": trt.build_script(variants, batch=BATCH, workspace_mb=1024, **common),
        "bench_engine.sh": trt.bench_script(variants, batch=4, **common),
        "check_engine.sh": trt.check_script(variants, **common),
    }
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name
        assert text.startswith("#!/usr/bin/env bash") and f"TensorRT {version} expected, JetPack 6.2" in text
        assert 'PRECISION="${1:-fp16}"' in text
    build = scripts["build_engine.sh"]
    assert ("--stronglyTyped" in build) == version.startswith("10")
    assert ("--int8" in build) == version.startswith("8")


def test_build_script_rejects_unknown_precision(tmp_path):
    variants = [trt.BundleVariant("fp32", "model.onnx", "model.engine")]
    script = tmp_path / "build_engine.sh"
    script.write_text(trt.build_script(variants, target="t", version="10.3", jetpack=None, input_name="images", chw=CHW, batch=BATCH,
                                       workspace_mb=None, default="fp32", leapkit_version="0"))
    # A fake trtexec on PATH, so that the script gets as far as choosing the precision.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "trtexec").write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args.txt\"\n")
    (bindir / "trtexec").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    bad = subprocess.run(["bash", str(script), "bf16"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown precision bf16" in bad.stderr
    ok = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "--onnx=model.onnx --saveEngine=model.engine" in (bindir / "args.txt").read_text()


def test_check_outputs_script(tmp_path):
    import json

    (tmp_path / "check_outputs.py").write_text(trt.CHECK_OUTPUTS_PY)
    values = np.linspace(-1, 1, 20)
    manifest = {"reference": {"outputs": {"cls": {"first": values[:8].tolist(), "l2": float(np.linalg.norm(values))}},
                              "tolerance": {"fp16": {"first_max_abs": 0.05, "l2_rel": 0.01}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for name, vals, code in (("good", values + 0.01, 0), ("bad", values * 1.5, 1)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"name": "cls", "dimensions": "1x20", "values": vals.tolist()}]))
        proc = subprocess.run([sys.executable, "check_outputs.py", f"{name}.json", "manifest.json", "fp16"], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == code, proc.stdout + proc.stderr
    missing = subprocess.run([sys.executable, "check_outputs.py", "good.json"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode != 0 and "Usage" in missing.stderr


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_guards_without_tensorrt(tmp_path):
    assert "tensorrt package is not installed" in trt.unavailable_reason()
    with pytest.raises(MissingDependency, match=r"building a TensorRT engine needs the 'tensorrt' package: pip install 'leapkit\[trt\]'"):
        trt.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="images", chw=CHW, batch=BATCH, precision="fp32")
    with pytest.raises(MissingDependency, match="tensorrt"):
        trt.EngineRunner(tmp_path / "m.engine")


@pytest.mark.trt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and a CUDA GPU")
def test_build_and_run_engine(tmp_path):
    """Build a strongly typed engine from a tiny exported student and compare it with ONNX Runtime."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from leapkit import export as ex
    from leapkit.models import create_student

    model = create_student("leapkit_demo_student", 32).eval()
    onnx_path = tmp_path / "model.onnx"
    ex.export_onnx(model, onnx_path, 32)
    info = trt.build_engine(onnx_path, tmp_path / "model.engine", input_name="images", chw=(3, 32, 32), batch=trt.BatchRange(1, 2, 4),
                            precision="fp32", workspace_mb=256, timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "model.engine.json").is_file() and (tmp_path / "timing.cache").is_file()
    assert info.gpu and info.compute_capability
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = trt.EngineRunner(tmp_path / "model.engine")(x)
    ref = ex.run_batched(ex.ort_runner(ex.ort_session(onnx_path)), x)
    stats = ex.compare(ref, got)
    assert min(s["cosine_min"] for s in stats.values()) > 0.999
