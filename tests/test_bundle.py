"""leapkit.deploy.bundle and leapkit.trtexec.flags without TensorRT: trtexec command lines per version,
scripts, README, device checker.

The scripts run for real under bash with a stand-in trtexec (TRTEXEC) that records its arguments,
writes the files it is asked for and, for the timing run, replays a real trtexec log from
../shared/trtexec-samples (those tests skip when the folder is absent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leapkit.deploy import bundle as b
from leapkit.deploy.manifest import ExportManifest, InputSpec, TargetInfo, Variant
from leapkit.errors import ExportError
from leapkit.profiles import load_target
from leapkit.trtexec.flags import (
    BatchRange,
    parse_version,
    strongly_typed,
    trtexec_bench_args,
    trtexec_build_args,
    trtexec_check_args,
    trtexec_layer_profile_args,
)

CHW = (3, 224, 224)
BATCH = BatchRange(1, 4, 8)
VARIANTS = [b.BundleVariant.of(p, f"model_{p}.onnx") for p in ("fp32", "fp16", "int8")]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
TRT10_LOG = SAMPLES / "trt10.3.0-rtxa5000-resnet50-fp16-full.log"
needs_samples = pytest.mark.skipif(not TRT10_LOG.is_file(), reason="../shared/trtexec-samples is absent")


def spec(version: str, default: str = "fp16", jetpack: str | None = "6.2", jetson: bool = True) -> b.ScriptSpec:
    return b.ScriptSpec(target="jetson-orin-nano", version=version, jetpack=jetpack, input_name="images", chw=CHW,
                        default=default, leapkit_version="0.1.0", jetson=jetson)


def build_args(version: str, precision: str = "fp16", workspace_mb: int | None = 1024) -> list[str]:
    return trtexec_build_args("model_fp16.onnx", "model_fp16.engine", precision, input_name="images", chw=CHW,
                              batch=BATCH, version=version, workspace_mb=workspace_mb)


@pytest.mark.parametrize(
    "text,expected",
    [("10.3", (10, 3)), ("10.x", (10, None)), ("11", (11, None)), ("8.6.2", (8, 6)), (" 11.0.1 ", (11, 0))],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("text,message", [("8.4", "TensorRT 8.4 is too old"), ("7", "TensorRT 7 is too old"),
                                          ("ten", "'ten' is not a TensorRT version")])
def test_parse_version_rejects(text, message):
    with pytest.raises(ExportError, match=message):
        parse_version(text)


@pytest.mark.parametrize("text", ["8.5", "8.5.2"])
def test_tensorrt_8_5_is_refused_with_the_reason(text):
    """JetPack 5.1 ships TensorRT 8.5.2, whose ONNX parser lacks LayerNormalization: say so, and what to do."""
    with pytest.raises(ExportError) as e:
        parse_version(text)
    message = str(e.value)
    assert f"TensorRT {text} (JetPack 5.1) cannot build these models" in message
    assert "no LayerNormalization" in message and "flash JetPack 6 (TensorRT 8.6 or 10.3)" in message
    assert "\n" not in message


def test_tensorrt_10_is_strongly_typed():
    assert build_args("10.3") == [
        "trtexec",
        "--onnx=model_fp16.onnx",
        "--saveEngine=model_fp16.engine",
        "--minShapes=images:1x3x224x224",
        "--optShapes=images:4x3x224x224",
        "--maxShapes=images:8x3x224x224",
        "--stronglyTyped",
        "--memPoolSize=workspace:1024",
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
    assert "--memPoolSize=workspace:1024" in args and "--optShapes=images:4x3x224x224" in args


@pytest.mark.parametrize("precision,flags", [("fp32", []), ("fp16", ["--fp16"]), ("int8", ["--int8", "--fp16"])])
def test_tensorrt_8_6_is_weakly_typed(precision, flags):
    args = build_args("8.6", precision)
    assert [a for a in args if a in ("--fp16", "--int8", "--stronglyTyped")] == flags
    assert "--memPoolSize=workspace:1024" in args


@pytest.mark.parametrize("version", ["8.6", "10.0", "10.3", "11.0"])
def test_workspace_is_a_bare_number_of_mib(version):
    """trtexec 10.0 cannot parse a unit suffix in --memPoolSize; a bare number is MiB in every version."""
    (pool,) = [a for a in build_args(version, workspace_mb=1536) if a.startswith("--memPoolSize")]
    assert pool == "--memPoolSize=workspace:1536"


def test_no_workspace_and_no_cache():
    args = trtexec_build_args("m.onnx", "m.engine", "fp32", input_name="images", chw=CHW, batch=BATCH,
                              version="10.3", workspace_mb=None, timing_cache=None)
    assert not [a for a in args if a.startswith(("--memPoolSize", "--timingCacheFile"))]
    assert "--saveEngine=m.engine" in args


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.0"])
def test_fp32_engines_are_built_without_tf32(version):
    """TF32 is TensorRT's default for fp32 layers; fp32 engines must be the fp32 their tolerance was measured in."""
    assert "--noTF32" in build_args(version, "fp32")
    assert "--noTF32" not in build_args(version, "fp16") and "--noTF32" not in build_args(version, "int8")


def test_strongly_typed():
    assert strongly_typed("10.3") and strongly_typed("11.x") and not strongly_typed("8.6")


@pytest.mark.parametrize("lo,opt,hi", [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_batch_range_rejects(lo, opt, hi):
    with pytest.raises(ExportError, match="1 <= min <= opt <= max"):
        BatchRange(lo, opt, hi)


def test_bench_and_check_args():
    bench = trtexec_bench_args("m.engine", input_name="images", chw=CHW, batch=4, version="10.3",
                                 times_file="t.json")
    assert "--loadEngine=m.engine" in bench and "--shapes=images:4x3x224x224" in bench
    assert "--exportTimes=t.json" in bench and "--percentile=90,95,99" in bench and "--useCudaGraph" in bench
    assert not [a for a in bench if "Profile" in a]  # a profiler in the timing run would replace its summary
    profile = trtexec_layer_profile_args("m.engine", input_name="images", chw=CHW, batch=4, profile_file="p.json")
    assert "--exportProfile=p.json" in profile and not [a for a in profile if a.startswith("--exportTimes")]
    check = trtexec_check_args("m.engine", input_name="images", chw=CHW, input_file="ref.bin", output_file="out.json")
    assert "--loadInputs=images:ref.bin" in check and "--exportOutput=out.json" in check
    assert "--shapes=images:1x3x224x224" in check


@pytest.mark.parametrize("version,steady", [("8.6", True), ("10.3", True), ("11.0", False)])
def test_timing_flags_follow_the_version(version, steady):
    """11.x times with CUDA graphs, spin-wait and no copies by default and warns on the old flags."""
    bench = trtexec_bench_args("m.engine", input_name="images", chw=CHW, batch=1, version=version)
    flags = {"--useCudaGraph", "--useSpinWait", "--noDataTransfers"}
    assert (flags <= set(bench)) == steady and (flags & set(bench) == set()) != steady


def test_shell_command_quotes():
    assert b.shell_command(["trtexec", "--onnx=my model.onnx"]) == "trtexec \\\n    '--onnx=my model.onnx'"


def all_scripts(version: str, jetson: bool = True) -> dict[str, str]:
    return {
        "build_engine.sh": b.build_script(VARIANTS, spec(version, jetson=jetson), BATCH, 1024),
        "bench_engine.sh": b.bench_script(VARIANTS, spec(version, jetson=jetson), 4),
        "check_engine.sh": b.check_script(VARIANTS, spec(version, jetson=jetson), b.reference_runs(8, 4)),
    }


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is absent (apt-get install shellcheck)")
@pytest.mark.parametrize("version", ["8.6", "10.3", "11.0"])
def test_scripts_pass_shellcheck(version, tmp_path):
    scripts = all_scripts(version)
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run(["shellcheck", *(str(tmp_path / n) for n in scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.0"])
def test_scripts_are_valid_bash(version, tmp_path):
    scripts = all_scripts(version)
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name
        assert text.startswith("#!/usr/bin/env bash") and f"TensorRT {version} expected, JetPack 6.2" in text
        assert 'PRECISION="${1:-fp16}"' in text and '"${TRTEXEC:-}"' in text
    build = scripts["build_engine.sh"]
    assert ("--stronglyTyped" in build) == version.startswith("10")
    assert ("--int8" in build) == version.startswith("8")
    assert "--timingCacheFile=timing.cache" in build
    check = scripts["check_engine.sh"]
    assert 'python3 check_outputs.py manifest.json "$PRECISION" "logs/$PRECISION" --engine "$ENGINE" ' \
           '--report "$OUT/check.json"' in check
    # one trtexec run per reference input file: batch 1 on the first image, then the profile's batch
    assert [line.strip() for line in check.splitlines() if "--shapes=" in line] == [
        "--shapes=images:1x3x224x224 \\", "--shapes=images:4x3x224x224 \\", "--shapes=images:4x3x224x224 \\"]
    assert "--loadInputs=images:reference_input_b4_4.bin" in check and "--loadEngine=\"$ENGINE\"" in check


def test_only_jetson_bench_scripts_mention_the_power_mode():
    """nvpmodel belongs to Jetsons, and changing the mode needs sudo: a comment only, never a command."""
    assert "nvpmodel" not in all_scripts("10.3", jetson=False)["bench_engine.sh"]
    jetson = all_scripts("10.3", jetson=True)["bench_engine.sh"]
    mentions = [line for line in jetson.splitlines() if "nvpmodel" in line]
    assert mentions and all(line.lstrip().startswith("#") for line in mentions)


def stand_in_trtexec(tmp_path: Path, log: Path | None = None) -> tuple[Path, Path]:
    """A trtexec stand-in: appends its arguments to args.txt, writes the files it is asked to write and, on the
    timing run (--exportTimes), replays ``log`` to stdout plus one [W] line to stderr."""
    fake, args = tmp_path / "trtexec", tmp_path / "args.txt"
    replay = f'case "$*" in *--exportTimes*) cat {log}; echo "[W] from stderr" >&2 ;; esac\n' if log else ""
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {args}\n'
        'for a in "$@"; do\n'
        '  case "$a" in\n'
        '    --saveEngine=*|--timingCacheFile=*) echo binary > "${a#*=}" ;;\n'
        "    --exportTimes=*) echo '[]' > \"${a#*=}\" ;;\n"
        "    --exportProfile=*) echo '[{\"count\": 1}]' > \"${a#*=}\" ;;\n"
        '    --exportOutput=*) cp "$FAKE_OUTPUT" "${a#*=}" ;;\n'
        "  esac\n"
        "done\n" + replay
    )
    fake.chmod(0o755)
    return fake, args


def device_python(folder: Path) -> str:
    """A PATH entry whose `python3` is this interpreter: the device's python3 (JetPack's has numpy), which the
    machine running the tests need not have (its system python3 may lack numpy)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "python3"
    if not link.exists():
        link.symlink_to(sys.executable)
    return str(folder)


def run_script(bundle: Path, name: str, *args: str, trtexec: Path | None = None, **env: str):
    path = f"{device_python(bundle.parent / 'device-bin')}:/usr/bin:/bin"
    full = {"PATH": path, **({"TRTEXEC": str(trtexec)} if trtexec else {}), **env}
    return subprocess.run(["bash", str(bundle / name), *args], capture_output=True, text=True, env=full)


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
    assert bad.returncode == 2 and "unknown precision bf16: this bundle holds fp32" in bad.stderr
    ok = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)  # fp16 absent: first variant
    assert ok.returncode == 0, ok.stderr
    assert "--onnx=model.onnx --saveEngine=model.engine" in (bindir / "args.txt").read_text()


def test_scripts_without_trtexec_say_so(tmp_path):
    script = tmp_path / "bench_engine.sh"
    script.write_text(b.bench_script(VARIANTS, spec("10.3"), 1))
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "trtexec not found: install TensorRT" in proc.stderr
    proc = run_script(tmp_path, "bench_engine.sh", trtexec=tmp_path / "no-such-trtexec")
    assert proc.returncode == 2 and "trtexec not found" in proc.stderr


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle folder for the demo manifest (fp32 + fp16 ONNX) with its scripts, as export writes them."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    manifest = manifest_for("jetson", precisions=("fp32", "fp16"))
    manifest.save(folder / "manifest.json")
    b.write_scripts(folder, manifest, load_target("jetson"))
    return folder


def test_build_script_reuses_the_timing_cache_and_records_the_precision(bundle, tmp_path):
    trtexec, args = stand_in_trtexec(tmp_path)
    first = run_script(bundle, "build_engine.sh", "fp16", trtexec=trtexec)
    assert first.returncode == 0, first.stderr
    assert "model_fp16.engine built (timing cache timing.cache created)" in first.stdout
    second = run_script(bundle, "build_engine.sh", "fp32", trtexec=trtexec)
    assert "model.engine built (timing cache timing.cache reused)" in second.stdout
    assert args.read_text().count("--timingCacheFile=timing.cache") == 2
    sidecar = json.loads((bundle / "model.engine.json").read_text())
    assert sidecar["precision"] == "fp32" and sidecar["onnx"] == "model.onnx"
    assert sidecar["built_by"] == "build_engine.sh" and sidecar["gpu"] == "" and sidecar["tensorrt_code"] == ""
    assert "--noTF32" in args.read_text().splitlines()[1] and "--noTF32" not in args.read_text().splitlines()[0]
    assert (bundle / "logs" / "fp16" / "build.log").is_file()


def test_check_script_needs_the_engine(bundle, tmp_path):
    """check_engine.sh refuses a missing engine as bench_engine.sh does, before running anything."""
    trtexec, args = stand_in_trtexec(tmp_path)
    for script in ("check_engine.sh", "bench_engine.sh"):
        proc = run_script(bundle, script, "fp16", trtexec=trtexec)
        assert proc.returncode == 2, script
        assert "model_fp16.engine not found: build it first with ./build_engine.sh fp16" in proc.stderr
    assert not args.exists()


@needs_samples
def test_bench_script_writes_the_results_folder(bundle, tmp_path):
    """A timing run teed with its stderr, a separate profiling run, and the fingerprint, in results/fp16/."""
    trtexec, args = stand_in_trtexec(tmp_path, TRT10_LOG)
    (bundle / "model_fp16.engine").write_text("binary")
    proc = run_script(bundle, "bench_engine.sh", "fp16", trtexec=trtexec)
    assert proc.returncode == 0, proc.stderr
    results = bundle / "results" / "fp16"
    assert sorted(p.name for p in results.iterdir()) == ["device.json", "profile.json", "times.json", "trtexec.log"]
    log = (results / "trtexec.log").read_text()
    assert log.startswith(TRT10_LOG.read_text()) and "[W] from stderr" in log
    timing, profile = args.read_text().splitlines()
    assert "--exportTimes=results/fp16/times.json" in timing and "--exportProfile" not in timing
    assert "--percentile=90,95,99" in timing and "--memPoolSize" not in timing
    assert "--exportProfile=results/fp16/profile.json" in profile and "--exportTimes" not in profile
    device = json.loads((results / "device.json").read_text())
    assert device["tensorrt"] == "10.3.0" and device["trtexec_device"] == "NVIDIA RTX A5000"
    assert device["trtexec"] == str(trtexec) and device["run"] == {"precision": "fp16", "engine": "model_fp16.engine",
                                                                   "batch": 2}
    assert device["expected"] == {"target": "jetson-orin-nano", "tensorrt": "10.3", "jetpack": "6.2"}
    assert {"host", "date", "jetson", "gpu"} <= set(device)


def test_device_info_reads_the_banner_and_the_l4t_release(tmp_path):
    from leapkit.deploy import device_info

    log = tmp_path / "trtexec.log"
    log.write_text("&&&& RUNNING TensorRT.trtexec [TensorRT v8603] # trtexec --loadEngine=m.engine\n"
                   "[11/30/2025-10:00:00] [I] Selected Device: Orin\n")
    assert device_info.from_trtexec_log(log) == ("8.6.3", "Orin")
    log.write_text("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec\n")
    assert device_info.from_trtexec_log(log) == ("10.3.0", None)
    line = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025"
    assert device_info.l4t_release(line) == "36.4.3"


def manifest_for(target: str, precisions: tuple[str, ...] = ("fp32",)) -> ExportManifest:
    """A small manifest record, as an export of the demo student at 32 px would write it."""
    profile = load_target(target)
    parity = {"images": 8, "min_cosine_required": 0.9999, "cosine_min": 0.99999, "passed": True,
              "outputs": {"cls": {"max_abs": 1e-6, "mean_abs": 1e-7, "cosine_min": 0.99999, "cosine_mean": 1.0}}}
    files = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
    return ExportManifest(
        format_version=1, leapkit_version="0.1.0", created="2025-01-01T00:00:00+00:00", status="ok",
        source_run="/runs/demo", target=TargetInfo(name=profile.name, family=profile.family, runtime=profile.runtime,
                                                   precision=profile.precision),
        student={"model": "leapkit_demo_student", "img_size": 32}, exporter="test", opset=18,
        input=InputSpec(name="images", shape=["batch", 3, 32, 32], dtype="float32", mean=[0.5] * 3, std=[0.5] * 3),
        outputs=[{"name": "cls", "shape": ["batch", 32], "description": "CLS token"}],
        batch={"min": 1, "opt": 2, "max": 4},
        variants=[Variant(precision=p, format="onnx", file=files[p], size_bytes=2048, status="ok", parity=parity)
                  for p in precisions],
    )


def test_write_scripts_and_readme_from_the_manifest(tmp_path):
    profile = load_target("jetson")
    manifest = manifest_for("jetson")
    b.write_scripts(tmp_path, manifest, profile)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench_engine.sh", "build_engine.sh", "check_engine.sh",
                                                          "check_outputs.py", "device_info.py"]
    build = (tmp_path / "build_engine.sh").read_text()
    assert "--minShapes=images:1x3x32x32" in build and "--optShapes=images:2x3x32x32" in build
    assert "--maxShapes=images:4x3x32x32" in build and 'PRECISION="${1:-fp32}"' in build  # fp16 not exported
    bench = (tmp_path / "bench_engine.sh").read_text()
    assert "--shapes=images:2x3x32x32" in bench
    assert f"(the profile's mode: {' or '.join(profile.power_modes) or 'see its notes'})" in bench
    readme = b.readme(manifest, profile)
    assert readme.startswith("# leapkit_demo_student for jetson-orin-nano")
    assert "| model.onnx | onnx | fp32 | 2.0 KB | 0.999990 / 1e-06 | not run | ok |" in readme
    assert "./check_engine.sh fp32" in readme and "strongly typed" in readme and "This bundle holds: fp32." in readme
    assert "leapkit bench --from-trtexec results/fp32 --target jetson-orin-nano" in readme and "nvpmodel" in readme
    assert "- nothing: every check ran" in readme
    cpu = b.readme(manifest_for("x86-cpu"), load_target("x86-cpu"))
    assert "## Running it" in cpu and "float32 (B, 3, 32, 32)" in cpu and "trtexec" not in cpu


def test_readme_commands_name_a_precision_the_bundle_holds():
    """`export --target rtx-4090 -p int8` holds fp32 and int8; the profile's fp16 is not there to build."""
    manifest = manifest_for("rtx-4090", precisions=("fp32", "int8"))
    readme = b.readme(manifest, load_target("rtx-4090"))
    commands = readme[readme.index("```sh"):readme.index("```", readme.index("```sh") + 5)]
    assert "./build_engine.sh int8" in commands and "./bench_engine.sh int8" in commands
    assert "fp16" not in commands and "nvpmodel" not in readme
