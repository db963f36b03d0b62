"""The TensorRT deploy bundle: scripts to build, check and time engines on the device, and the export's README.

Every export folder gets a README (:func:`readme`); TensorRT targets also get build_engine.sh,
check_engine.sh, bench_engine.sh, check_outputs.py and device_info.py (:func:`write_scripts`). Run
from the bundle folder, they write ``results/PRECISION/`` (trtexec.log, times.json, profile.json,
device.json, check.json): one folder to copy back for ``leapkit bench --from-trtexec``. The trtexec
command lines in the scripts, and what each TensorRT version needs in them, come from
:mod:`leapkit.trtexec.flags`.

The reference the check compares with (:func:`write_reference`) is a batch of real held-out images,
already normalised, as one raw float32 file per trtexec run (batch 1, then the profile's batch), the
PyTorch student's full outputs for them as .npy files and, where the run has labels, a linear probe
on the CLS feature (.npz); numpy reads all of it without leapkit.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leapkit.device.tegrastats import SAMPLE_POWER_SH
from leapkit.trtexec.flags import (
    DEFAULT_TENSORRT,
    TIMING_CACHE,
    BatchRange,
    strongly_typed,
    trtexec_bench_args,
    trtexec_build_args,
    trtexec_check_args,
    trtexec_layer_profile_args,
)
from leapkit.types import Precision

if TYPE_CHECKING:
    from leapkit.deploy.manifest import ExportManifest, Variant
    from leapkit.profiles import TargetProfile

REFERENCE_IMAGES = 8  # the fewest reference images a bundle holds (rounded up to a multiple of the batch)
REFERENCE_PROBE = "reference_probe.npz"
RESULTS = "results"  # results/PRECISION/: what bench_engine.sh and check_engine.sh leave for leapkit to read
LOGS = "logs"  # logs/PRECISION/: build and check logs, engine outputs (not trtexec timing runs)
TRTEXEC_LOG, TIMES, PROFILE, DEVICE, CHECK = "trtexec.log", "times.json", "profile.json", "device.json", "check.json"
CHECK_OUTPUTS = "check_outputs.py"
DEVICE_INFO = "device_info.py"
# The device-side helpers, copied into each bundle (python3 with numpy; the standard library only).
CHECK_OUTPUTS_PY = (Path(__file__).parent / CHECK_OUTPUTS).read_text()
DEVICE_INFO_PY = (Path(__file__).parent / DEVICE_INFO).read_text()


@dataclass(frozen=True)
class BundleVariant:
    """One ONNX file of a bundle and the engine the device builds from it."""

    precision: Precision
    onnx_file: str
    engine_file: str

    @classmethod
    def of(cls, precision: Precision, onnx_file: str) -> BundleVariant:
        return cls(precision, onnx_file, engine_file(onnx_file))


def engine_file(onnx_file: str) -> str:
    """The engine built from an ONNX file: ``model_fp16.onnx`` -> ``model_fp16.engine``."""
    return onnx_file.replace(".onnx", ".engine")


def default_precision(variants: Sequence[BundleVariant], wanted: Precision) -> Precision:
    """``wanted`` when the bundle holds it, else the reduced precision it was exported for, else fp32."""
    held = [v.precision for v in variants]
    if wanted in held:
        return wanted
    return next((p for p in held if p != "fp32"), held[0])


def shell_command(args: Sequence[str]) -> str:
    """One command, quoted for POSIX shells, one argument per continued line."""
    return " \\\n    ".join(shlex.quote(a) for a in args)


def _trtexec(args: Sequence[str], indent: str = "    ") -> str:
    """A trtexec command line that runs the trtexec the script found (``$TRTEXEC``), one argument a line."""
    more = " \\\n" + indent + "    "
    return indent + '"$TRTEXEC"' + more + more.join(shlex.quote(a) for a in args[1:])


# --- the reference -------------------------------------------------------------------------------------------


def reference_image_count(batch: int) -> int:
    """How many reference images a bundle holds: :data:`REFERENCE_IMAGES`, rounded up to whole batches."""
    return batch * math.ceil(REFERENCE_IMAGES / batch)


def reference_runs(images: int, batch: int) -> list[dict[str, Any]]:
    """The check's trtexec runs: batch 1 on the first image, then every image in batches of ``batch``.

    Each run is ``{"name", "batch", "file", "images"}``; ``file`` is its raw input (trtexec's ``--loadInputs``
    takes a file of exactly the shape's size, so one file per run).
    """
    starts = range(0, images, batch)
    runs = [] if batch == 1 else [(1, 0)]
    runs += [(batch, s) for s in starts]
    return [{"name": f"b{b}_{s}", "batch": b, "file": f"reference_input_b{b}_{s}.bin",
             "images": list(range(s, min(s + b, images)))} for b, s in runs]


def write_reference(
    out: Path,
    images: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    batch: int,
    probe: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """Write the check's reference files into ``out``; returns the manifest's ``reference`` (without tolerances).

    Args:
        out: the bundle folder.
        images: the reference images, normalised, float32 (N, 3, H, W), N a multiple of ``batch``.
        outputs: the PyTorch student's outputs for ``images``.
        batch: the profile's batch, the engine's opt shape.
        probe: (weight (D, C), bias (C,)) of a linear probe on the CLS feature, or None.
    """
    runs = reference_runs(len(images), batch)
    for run in runs:
        np.ascontiguousarray(images[run["images"]], dtype="<f4").tofile(out / run["file"])
    written = {}
    for name, values in outputs.items():
        values = np.asarray(values, dtype="<f4")
        np.save(out / f"reference_{name}.npy", values)
        written[name] = {"file": f"reference_{name}.npy", "shape": list(values.shape),
                         "rms": float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))}
    reference: dict[str, Any] = {
        "images": len(images), "input_shape": list(images.shape[1:]), "input_dtype": "float32 little-endian",
        "runs": runs, "outputs": written, "outputs_from": "the PyTorch student (fp32)", "probe": None,
    }
    if probe is not None:
        weight, bias = probe
        np.savez(out / REFERENCE_PROBE, weight=np.asarray(weight, "<f4"), bias=np.asarray(bias, "<f4"))
        reference["probe"] = {"file": REFERENCE_PROBE, "feature": "cls", "classes": int(weight.shape[1])}
    return reference


# --- the scripts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptSpec:
    """What every script of a bundle is generated for."""

    target: str
    version: str  # the TensorRT version the device runs
    jetpack: str | None
    input_name: str
    chw: tuple[int, int, int]
    default: Precision  # the precision a script picks without an argument
    leapkit_version: str
    jetson: bool = False
    power_modes: tuple[str, ...] = ()  # the nvpmodel modes the profile's figures assume


_HEADER = """#!/usr/bin/env bash
# {what}
# Generated by leapkit {leapkit_version} for target {target} (TensorRT {version} expected{jetpack}).
# Run it on the device itself: TensorRT engines do not move between GPUs or TensorRT versions.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${{TRTEXEC:-}}" ]; then
    TRTEXEC=trtexec
    command -v trtexec >/dev/null || TRTEXEC=/usr/src/tensorrt/bin/trtexec
fi
command -v "$TRTEXEC" >/dev/null || {{
    echo "trtexec not found: install TensorRT (JetPack ships it in /usr/src/tensorrt/bin) or set TRTEXEC" >&2
    exit 2
}}
PRECISION="${{1:-{default}}}"  # this bundle holds: {names}
"""

_POWER_MODE = """# The budget assumes the power mode named in the target profile. Changing it needs sudo, so this
# script leaves it alone and records the mode in use in results/PRECISION/device.json. By hand:
#   nvpmodel -q                (the mode in use; ids and names are in /etc/nvpmodel.conf)
#   sudo nvpmodel -m <id>      (the profile's mode: {modes})
#   sudo jetson_clocks         (clocks at the mode's maximum, for steady timings)
"""


def _select(variants: Sequence[BundleVariant], with_onnx: bool = False) -> str:
    """A case over PRECISION that sets ENGINE (and ONNX) or refuses a precision the bundle lacks."""
    lines = ['case "$PRECISION" in\n']
    for v in variants:
        onnx = f"ONNX={shlex.quote(v.onnx_file)}; " if with_onnx else ""
        lines.append(f"  {v.precision}) {onnx}ENGINE={shlex.quote(v.engine_file)} ;;\n")
    names = " ".join(v.precision for v in variants)
    lines.append(f'  *) echo "unknown precision $PRECISION: this bundle holds {names}" >&2; exit 2 ;;\nesac\n')
    return "".join(lines)


def _head(what: str, variants: Sequence[BundleVariant], spec: ScriptSpec) -> str:
    jp = f", JetPack {spec.jetpack}" if spec.jetpack else ""
    return _HEADER.format(what=what, leapkit_version=spec.leapkit_version, target=spec.target, version=spec.version,
                          jetpack=jp, default=default_precision(variants, spec.default),
                          names=" ".join(v.precision for v in variants))


_NEED_ENGINE = """test -f "$ENGINE" || {
    echo "$ENGINE not found: build it first with ./build_engine.sh $PRECISION" >&2
    exit 2
}
"""


# The sidecar tells `leapkit bench` the engine's precision, and check_engine.sh the GPU and TensorRT it was built with
# (trtexec's banner code and device line in the build log); the device-built engine is not in manifest.json.
_SIDECAR = r"""LOG="{logs}/$PRECISION/build.log"
TRT_CODE="$(sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p' "$LOG" | head -n 1 || true)"
# the GPU's name without the quotes and backslashes that would break the JSON below
# shellcheck disable=SC1003
GPU="$(sed -n 's/.*Selected Device: *//p' "$LOG" | head -n 1 | tr -d '"\\' || true)"
{{
    printf '{{"engine": "%s", "onnx": "%s", "precision": "%s", "built_by": "build_engine.sh", ' \
        "$ENGINE" "$ONNX" "$PRECISION"
    printf '"tensorrt_expected": "{version}", "tensorrt_code": "%s", "gpu": "%s", "created": "%s"}}\n' \
        "$TRT_CODE" "$GPU" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}} > "$ENGINE.json"
"""


def build_script(
    variants: Sequence[BundleVariant], spec: ScriptSpec, batch: BatchRange, workspace_mb: int | None
) -> str:
    """build_engine.sh: ``./build_engine.sh [PRECISION]`` builds one engine with trtexec, reusing timing.cache."""
    lines = [_head("Build a TensorRT engine from the ONNX model: ./build_engine.sh [PRECISION]", variants, spec),
             _select(variants, with_onnx=True),
             f'mkdir -p "{LOGS}/$PRECISION"\n',
             f'if [ -f {TIMING_CACHE} ]; then CACHE="reused"; else CACHE="created"; fi\n',
             'case "$PRECISION" in\n']
    for v in variants:
        args = trtexec_build_args(v.onnx_file, v.engine_file, v.precision, input_name=spec.input_name,
                                  chw=spec.chw, batch=batch, version=spec.version, workspace_mb=workspace_mb)
        lines.append(f"  {v.precision})\n{_trtexec(args)} \\\n        2>&1 | tee {LOGS}/{v.precision}/build.log\n"
                     f"    ;;\n")
    lines.append("esac\n")
    lines.append(_SIDECAR.format(logs=LOGS, version=spec.version))
    lines.append(f'echo "$ENGINE built (timing cache {TIMING_CACHE} $CACHE); check it with ./check_engine.sh '
                 f'$PRECISION and time it with ./bench_engine.sh $PRECISION"\n')
    return "".join(lines)


def bench_script(variants: Sequence[BundleVariant], spec: ScriptSpec, batch: int) -> str:
    """bench_engine.sh: a timing run, a separate profiling run and the device fingerprint, in results/PRECISION/."""
    lines = [_head("Time a built engine: ./bench_engine.sh [PRECISION] -> results/PRECISION/", variants, spec),
             _select(variants), _NEED_ENGINE]
    if spec.jetson:
        lines.append(_POWER_MODE.format(modes=" or ".join(spec.power_modes) or "see its notes"))
    lines.append(f'OUT="{RESULTS}/$PRECISION"\nmkdir -p "$OUT" "{LOGS}/$PRECISION"\n'
                 f'rm -f "$OUT/{TRTEXEC_LOG}" "$OUT/{TIMES}" "$OUT/{PROFILE}" "$OUT/{DEVICE}"\n')
    if spec.jetson:
        lines.append(SAMPLE_POWER_SH)
    lines.append('case "$PRECISION" in\n')
    marked = " | marking" if spec.jetson else ""
    stop = "    stop_power\n" if spec.jetson else ""
    for v in variants:
        out = f"{RESULTS}/{v.precision}"
        timing = trtexec_bench_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, batch=batch,
                                    version=spec.version, times_file=f"{out}/{TIMES}")
        profile = trtexec_layer_profile_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, batch=batch,
                                       profile_file=f"{out}/{PROFILE}")
        profile_log = f"{LOGS}/{v.precision}/profile.log"
        lines.append(
            f"  {v.precision})\n    # the timing run: its log holds the performance summary\n"
            f"{_trtexec(timing)} \\\n        2>&1 | tee {out}/{TRTEXEC_LOG}{marked}\n{stop}"
            f"    # the profiling run, apart: a profiler in the timed loop slows it down\n"
            f"    if ! {_trtexec(profile).lstrip()} \\\n        > {profile_log} 2>&1; then\n"
            f'        echo "the profiling run failed (see {profile_log}); the timing stands" >&2\n    fi\n    ;;\n'
        )
    lines.append("esac\n")
    lines.append(
        'if command -v python3 >/dev/null; then\n'
        f'    python3 {DEVICE_INFO} "$OUT/{DEVICE}" --trtexec-log "$OUT/{TRTEXEC_LOG}" --trtexec "$TRTEXEC" \\\n'
        f'        --target {shlex.quote(spec.target)} --tensorrt-expected {shlex.quote(spec.version)} '
        f'--jetpack-expected {shlex.quote(spec.jetpack or "")} \\\n'
        f'        --precision "$PRECISION" --engine "$ENGINE" --batch {batch}\n'
        'else\n'
        f'    echo "python3 not found: $OUT/{DEVICE} (the device fingerprint) not written" >&2\n'
        'fi\n'
        f'echo "results in $OUT; on the workstation: leapkit bench --from-trtexec $OUT --target {spec.target}"\n'
    )
    return "".join(lines)


def check_script(variants: Sequence[BundleVariant], spec: ScriptSpec, runs: Sequence[Mapping[str, Any]]) -> str:
    """check_engine.sh: runs an engine on every reference input file and compares all its outputs with PyTorch's.

    Each run of ``runs`` (:func:`reference_runs`) is one trtexec call; check_outputs.py then compares every
    value and writes results/PRECISION/check.json, also when trtexec failed (a missing output is a failure).
    """
    what = "Check a built engine against the PyTorch reference outputs: ./check_engine.sh [PRECISION]"
    log = f'{LOGS}/$PRECISION'
    lines = [_head(what, variants, spec), _select(variants), _NEED_ENGINE,
             f'OUT="{RESULTS}/$PRECISION"\nmkdir -p "$OUT" "{log}"\n'
             f'rm -f "$OUT/{CHECK}" "{log}"/engine_output_*.json "{log}"/check_*.log\n']
    for run in runs:
        name = run["name"]
        args = trtexec_check_args("@ENGINE@", input_name=spec.input_name, chw=spec.chw, input_file=run["file"],
                                  output_file=f"@LOG@/engine_output_{name}.json", batch=run["batch"])
        command = _trtexec(args, indent="").lstrip().replace("@ENGINE@", '"$ENGINE"').replace("@LOG@", f'"{log}"')
        lines.append(f'if ! {command} \\\n        > "{log}/check_{name}.log" 2>&1; then\n'
                     f'    echo "trtexec could not run $ENGINE on {run["file"]} (batch {run["batch"]}): see '
                     f'{log}/check_{name}.log" >&2\nfi\n')
    # check_outputs.py reports a missing or unreadable output as a failure, so a failed run still leaves check.json
    lines.append(f'python3 {CHECK_OUTPUTS} manifest.json "$PRECISION" "{log}" --engine "$ENGINE" '
                 f'--report "$OUT/{CHECK}"\n')
    return "".join(lines)


def bundle_variants(manifest: ExportManifest) -> list[BundleVariant]:
    """The manifest's ONNX variants, each with the engine the device builds from it."""
    return [BundleVariant.of(v.precision, v.file) for v in manifest.variants if v.format == "onnx"]


def write_scripts(out: Path, manifest: ExportManifest, profile: TargetProfile) -> None:
    """Write the three scripts, check_outputs.py and device_info.py for the manifest's ONNX variants into ``out``."""
    variants = bundle_variants(manifest)
    size = manifest.student["img_size"]
    spec = ScriptSpec(
        target=profile.name, version=profile.tensorrt or DEFAULT_TENSORRT, jetpack=profile.jetpack,
        input_name=manifest.input.name, chw=(3, size, size), default=profile.precision,
        leapkit_version=manifest.leapkit_version, jetson=profile.family == "jetson",
        power_modes=tuple(profile.power_modes),
    )
    batch = BatchRange(**manifest.batch)
    scripts = {
        "build_engine.sh": build_script(variants, spec, batch, profile.workspace_mb),
        "check_engine.sh": check_script(variants, spec, manifest.reference.get("runs") or reference_runs(
            reference_image_count(batch.opt), batch.opt)),
        "bench_engine.sh": bench_script(variants, spec, batch.opt),
    }
    for name, text in scripts.items():
        (out / name).write_text(text)
        (out / name).chmod(0o755)
    (out / CHECK_OUTPUTS).write_text(CHECK_OUTPUTS_PY)
    (out / DEVICE_INFO).write_text(DEVICE_INFO_PY)


# --- the README ---------------------------------------------------------------------------------


def _device_section(manifest: ExportManifest, profile: TargetProfile) -> list[str]:
    version = profile.tensorrt or DEFAULT_TENSORRT
    jetpack = f" (JetPack {profile.jetpack})" if profile.jetpack else ""
    variants = bundle_variants(manifest)
    p = default_precision(variants, profile.precision)
    engine = next(v.engine_file for v in variants if v.precision == p)
    lines = [
        "## On the device",
        f"Expected: TensorRT {version}{jetpack}. Engines do not move between GPUs or TensorRT versions, "
        f"so build them there. This bundle holds: {', '.join(v.precision for v in variants)}.",
        "",
        "```sh",
        f"./build_engine.sh {p}     # trtexec: ONNX -> {engine} (timing cache {TIMING_CACHE}, reused when present)",
        f"./check_engine.sh {p}     # runs it on the reference images, compares every output value with PyTorch's "
        f"-> {RESULTS}/{p}/{CHECK}",
        f"./bench_engine.sh {p}     # timing run, per-layer profile and device fingerprint -> {RESULTS}/{p}/",
        "```",
        "",
        f"trtexec is looked up on PATH, then in /usr/src/tensorrt/bin; `TRTEXEC=/path/to/trtexec` overrides both. "
        f"Copy `{RESULTS}/{p}/` back and read it with `leapkit bench --from-trtexec {RESULTS}/{p} "
        f"--target {profile.name}`, or let leapkit do all of it over SSH: "
        f"`leapkit bench RUN --target {profile.name} --host user@device`.",
        "",
    ]
    if strongly_typed(version):
        lines.append("The engines are strongly typed: each ONNX file's types set the precision (fp16 weights and "
                     "arithmetic with LayerNorm/softmax in fp32; int8 from the Q/DQ nodes, the rest as in fp16).")
    else:
        lines.append(f"TensorRT {version} is weakly typed: the fp16 and int8 scripts pass --fp16 / --int8 so that the "
                     "builder may use them.")
    if profile.family == "jetson":
        mode = " or ".join(profile.power_modes) or "named in the target profile"
        lines += ["", f"The latency budget assumes the power mode {mode}: `nvpmodel -q` shows the mode in use "
                  f"(bench_engine.sh records it in device.json); `sudo nvpmodel -m <id>` and `sudo jetson_clocks` "
                  f"set it (ids in /etc/nvpmodel.conf)."]
    return [*lines, ""]


def _openvino_section(manifest: ExportManifest, profile: TargetProfile) -> list[str]:
    from leapkit.deploy.openvino_ir import OPENVINO_HINTS

    irs = [v for v in manifest.variants if v.format == "openvino"]
    size = manifest.input.img_size
    threads = profile.threads or "N"
    pick = next((v for v in irs if v.precision == profile.precision), irs[0] if irs else None)
    if pick is None:
        return []

    def hint(v: Variant) -> str:
        return v.inference_precision or OPENVINO_HINTS.get(v.precision, "f32")

    return [
        "## Running it with OpenVINO" if len(profile.deploy_runtimes) > 1 else "## Running it",
        f"With OpenVINO on the CPU, {threads} threads, in the inference precision each variant was checked with "
        f"({', '.join(f'{v.precision}: {v.file} with {hint(v)}' for v in irs)}; OpenVINO's own default is "
        "bf16 wherever the CPU has it, so pass it):",
        "```python",
        "import openvino as ov",
        f"compiled = ov.Core().compile_model('{pick.file}', 'CPU', {{'INFERENCE_NUM_THREADS': {threads}, "
        f"'INFERENCE_PRECISION_HINT': '{hint(pick)}', 'PERFORMANCE_HINT': 'LATENCY'}})",
        f"tokens, cls, patch_tokens = compiled(images).values()  # images: float32 (B, 3, {size}, {size})",
        "```",
        "",
    ]


def _onnxruntime_section(manifest: ExportManifest, profile: TargetProfile) -> list[str]:
    size, name = manifest.input.img_size, manifest.input.name
    return [
        "## Running it with ONNX Runtime" if len(profile.deploy_runtimes) > 1 else "## Running it",
        "```python",
        "import onnxruntime as ort",
        "session = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
        f"tokens, cls, patch_tokens = session.run(None, {{'{name}': images}})  "
        f"# images: float32 (B, 3, {size}, {size})",
        "```",
        "",
    ]


def _choice_line(profile: TargetProfile) -> list[str]:
    """How `leapkit bench` picks among the variants, for a target that chooses the fastest."""
    if profile.choose != "fastest":
        return []
    return [f"`leapkit bench --target {profile.name}` times every variant here and judges the budget on the fastest "
            f"one whose checks passed, among {', '.join(profile.deploy_runtimes)} (choose: fastest in the profile).",
            ""]


def readme(manifest: ExportManifest, profile: TargetProfile) -> str:
    """README.md of an export folder: the model's interface, the variants' evidence, how to run it."""
    from leapkit.deploy.summary import int8_section, variants_table

    inp = manifest.input
    size = inp.img_size
    lines = [
        f"# {manifest.student['model']} for {profile.name}",
        "",
        f"Exported by leapkit {manifest.leapkit_version} from `{manifest.source_run}` on {manifest.created}.",
        f"Status: **{manifest.status}** (details in manifest.json).",
        "",
        "## Model",
        f"- input `{inp.name}`: float32 NCHW (batch, 3, {size}, {size}); RGB in [0, 1], normalised with mean "
        f"{inp.mean} and std {inp.std}",
    ]
    lines += [f"- output `{o['name']}` {o['shape']}: {o['description']}" for o in manifest.outputs]
    lines += ["", "## Variants", "", variants_table(manifest).to_markdown(), ""]
    lines += int8_section(manifest)
    if profile.runtime == "tensorrt" and bundle_variants(manifest):
        lines += _device_section(manifest, profile)
    else:
        lines += _choice_line(profile)
        for runtime in profile.deploy_runtimes:
            if runtime == "openvino":
                lines += _openvino_section(manifest, profile)
            elif runtime == "onnxruntime":
                lines += _onnxruntime_section(manifest, profile)
    lines += ["## Not run when this bundle was made", ""]
    lines += [f"- {item}" for item in manifest.not_run] or ["- nothing: every check ran"]
    lines.append("")
    return "\n".join(lines)
