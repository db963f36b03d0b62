"""leapkit.deploy.bundle without TensorRT: trtexec command lines per version, scripts, README, device checker."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from leapkit.deploy import bundle as b
from leapkit.deploy.manifest import ExportManifest, InputSpec, TargetInfo, Variant
from leapkit.errors import ExportError
from leapkit.profiles import load_target

CHW = (3, 224, 224)
BATCH = b.BatchRange(1, 4, 8)
VARIANTS = [b.BundleVariant.of(p, f"model_{p}.onnx") for p in ("fp32", "fp16", "int8")]


def spec(version: str, default: str = "fp16", jetpack: str | None = "6.2") -> b.ScriptSpec:
    return b.ScriptSpec(target="jetson-orin-nano", version=version, jetpack=jetpack, input_name="images", chw=CHW,
                        default=default, leapkit_version="0.1.0")


def build_args(version: str, precision: str = "fp16", workspace_mb: int | None = 1024) -> list[str]:
    variant = b.BundleVariant.of(precision, "model_fp16.onnx")
    return b.trtexec_build_args(variant, input_name="images", chw=CHW, batch=BATCH, version=version,
                                workspace_mb=workspace_mb)


@pytest.mark.parametrize(
    "text,expected",
    [("10.3", (10, 3)), ("10.x", (10, None)), ("11", (11, None)), ("8.6.2", (8, 6)), (" 11.0.1 ", (11, 0))],
)
def test_parse_version(text, expected):
    assert b.parse_version(text) == expected


@pytest.mark.parametrize("text,message", [("8.5", "TensorRT 8.5 is too old"), ("7", "TensorRT 7 is too old"),
                                          ("ten", "'ten' is not a TensorRT version")])
def test_parse_version_rejects(text, message):
    with pytest.raises(ExportError, match=message):
        b.parse_version(text)


def test_tensorrt_10_is_strongly_typed():
    assert build_args("10.3") == [
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
    args = b.trtexec_build_args(b.BundleVariant.of("fp32", "m.onnx"), input_name="images", chw=CHW, batch=BATCH,
                                version="10.3", workspace_mb=None, timing_cache=None)
    assert not [a for a in args if a.startswith(("--memPoolSize", "--timingCacheFile"))]
    assert "--saveEngine=m.engine" in args


def test_strongly_typed():
    assert b.strongly_typed("10.3") and b.strongly_typed("11.x") and not b.strongly_typed("8.6")


@pytest.mark.parametrize("lo,opt,hi", [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_batch_range_rejects(lo, opt, hi):
    with pytest.raises(ExportError, match="1 <= min <= opt <= max"):
        b.BatchRange(lo, opt, hi)


def test_bench_and_check_args():
    bench = b.trtexec_bench_args("m.engine", input_name="images", chw=CHW, batch=4, times_file="t.json")
    assert "--loadEngine=m.engine" in bench and "--shapes=images:4x3x224x224" in bench
    assert "--exportTimes=t.json" in bench and "--percentile=50,90,99" in bench and "--useCudaGraph" in bench
    check = b.trtexec_check_args("m.engine", input_name="images", chw=CHW, input_file="ref.bin", output_file="out.json")
    assert "--loadInputs=images:ref.bin" in check and "--exportOutput=out.json" in check
    assert "--shapes=images:1x3x224x224" in check


def test_shell_command_quotes():
    assert b.shell_command(["trtexec", "--onnx=my model.onnx"]) == "trtexec \\\n    '--onnx=my model.onnx'"


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.0"])
def test_scripts_are_valid_bash(version, tmp_path):
    scripts = {
        "build_engine.sh": b.build_script(VARIANTS, spec(version), BATCH, 1024),
        "bench_engine.sh": b.bench_script(VARIANTS, spec(version), 4),
        "check_engine.sh": b.check_script(VARIANTS, spec(version)),
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
    assert "python3 check_outputs.py engine_output_int8.json manifest.json int8" in scripts["check_engine.sh"]


def test_build_script_rejects_unknown_precision(tmp_path):
    variants = [b.BundleVariant.of("fp32", "model.onnx")]
    script = tmp_path / "build_engine.sh"
    script.write_text(b.build_script(variants, spec("10.3", default="fp16", jetpack=None), BATCH, None))
    # A fake trtexec on PATH, so that the script gets as far as choosing the precision.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "trtexec").write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args.txt\"\n")
    (bindir / "trtexec").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    bad = subprocess.run(["bash", str(script), "bf16"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown precision bf16" in bad.stderr
    ok = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)  # fp16 absent: first variant
    assert ok.returncode == 0, ok.stderr
    assert "--onnx=model.onnx --saveEngine=model.engine" in (bindir / "args.txt").read_text()


def test_scripts_without_trtexec_say_so(tmp_path):
    script = tmp_path / "bench_engine.sh"
    script.write_text(b.bench_script(VARIANTS, spec("10.3"), 1))
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "trtexec not found: install TensorRT" in proc.stderr


def test_check_outputs_script(tmp_path):
    (tmp_path / "check_outputs.py").write_text(b.CHECK_OUTPUTS_PY)
    values = np.linspace(-1, 1, 20)
    manifest = {"reference": {"outputs": {"cls": {"first": values[:8].tolist(), "l2": float(np.linalg.norm(values))}},
                              "tolerance": {"fp16": {"first_max_abs": 0.05, "l2_rel": 0.01}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for name, vals, code in (("good", values + 0.01, 0), ("bad", values * 1.5, 1)):
        dump = [{"name": "cls", "dimensions": "1x20", "values": vals.tolist()}]
        (tmp_path / f"{name}.json").write_text(json.dumps(dump))
        proc = subprocess.run([sys.executable, "check_outputs.py", f"{name}.json", "manifest.json", "fp16"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert ("PASS" if code == 0 else "MISMATCH") in proc.stdout
    missing = subprocess.run([sys.executable, "check_outputs.py", "good.json"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert missing.returncode != 0 and "Usage" in missing.stderr


def manifest_for(target: str) -> ExportManifest:
    """A small manifest record, as an export of the demo student at 32 px would write it."""
    profile = load_target(target)
    parity = {"images": 8, "min_cosine_required": 0.9999, "cosine_min": 0.99999, "passed": True,
              "outputs": {"cls": {"max_abs": 1e-6, "mean_abs": 1e-7, "cosine_min": 0.99999, "cosine_mean": 1.0}}}
    return ExportManifest(
        format_version=1, leapkit_version="0.1.0", created="2025-01-01T00:00:00+00:00", status="ok",
        source_run="/runs/demo", target=TargetInfo(name=profile.name, family=profile.family, runtime=profile.runtime,
                                                   precision=profile.precision),
        student={"model": "leapkit_demo_student", "img_size": 32}, exporter="test", opset=18,
        input=InputSpec(name="images", shape=["batch", 3, 32, 32], dtype="float32", mean=[0.5] * 3, std=[0.5] * 3),
        outputs=[{"name": "cls", "shape": ["batch", 32], "description": "CLS token"}],
        batch={"min": 1, "opt": 2, "max": 4},
        variants=[Variant(precision="fp32", format="onnx", file="model.onnx", size_bytes=2048, status="ok",
                          parity=parity)],
    )


def test_write_scripts_and_readme_from_the_manifest(tmp_path):
    profile = load_target("jetson")
    manifest = manifest_for("jetson")
    b.write_scripts(tmp_path, manifest, profile)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench_engine.sh", "build_engine.sh", "check_engine.sh",
                                                          "check_outputs.py"]
    build = (tmp_path / "build_engine.sh").read_text()
    assert "--minShapes=images:1x3x32x32" in build and "--optShapes=images:2x3x32x32" in build
    assert "--maxShapes=images:4x3x32x32" in build and 'PRECISION="${1:-fp32}"' in build  # fp16 not exported
    assert "--shapes=images:2x3x32x32" in (tmp_path / "bench_engine.sh").read_text()
    readme = b.readme(manifest, profile)
    assert readme.startswith("# leapkit_demo_student for jetson-orin-nano")
    assert "| model.onnx | onnx | fp32 | 2.0 KB | 0.999990 / 1e-06 | not run | ok |" in readme
    assert "./check_engine.sh fp16" in readme and "strongly typed" in readme
    assert "- nothing: every check ran" in readme
    cpu = b.readme(manifest_for("x86-cpu"), load_target("x86-cpu"))
    assert "## Running it" in cpu and "float32 (B, 3, 32, 32)" in cpu and "trtexec" not in cpu
