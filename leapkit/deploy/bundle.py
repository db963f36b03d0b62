"""The TensorRT deploy bundle: trtexec command lines and scripts to build, check and time engines on the device.

How the precision of an engine is chosen depends on the TensorRT major version:

- 8.6 (JetPack 6.0): networks are weakly typed. The builder picks kernels per layer, and reduced
  precision has to be allowed with ``--fp16`` (fp16 model) or ``--int8 --fp16`` (Q/DQ model: the
  int8 layers follow the Q/DQ scales, the rest may run in fp16).
- 10.x (JetPack 6.1 / 6.2): strongly typed networks are available (``--stronglyTyped``, the
  ``STRONGLY_TYPED`` network flag): every tensor keeps the type it has in the ONNX graph, so the
  fp16 and int8 (Q/DQ) ONNX files decide the engine's precision and the parity measured on the ONNX
  files carries over. Weak typing still exists but is deprecated since 10.12.
- 11.x: strong typing is the only mode; ``--fp16``, ``--int8``, ``--best`` and the matching builder
  flags are gone and ``--stronglyTyped`` is not needed (the network flag is ignored). CUDA graphs,
  spin-wait and timing without host/device copies are its defaults, and ``--useCudaGraph``,
  ``--useSpinWait``, ``--noDataTransfers`` and ``--separateProfileRun`` only print deprecation warnings.

TensorRT 8.5 (JetPack 5.1) is refused: its ONNX parser has no LayerNormalization, an op every
exported ViT holds (8.6 added it).

``--memPoolSize=workspace:N`` (8.4 and later) takes a bare number as MiB in every version; 10.0
rejects unit suffixes, later versions accept them. ``--minShapes/--optShapes/--maxShapes``,
``--saveEngine``, ``--skipInference``, ``--timingCacheFile``, ``--percentile`` (a list),
``--exportTimes`` and ``--exportProfile`` are spelled the same in 8.6, 10 and 11.

Every export folder gets a README (:func:`readme`); TensorRT targets also get build_engine.sh,
check_engine.sh, bench_engine.sh, check_outputs.py and device_info.py (:func:`write_scripts`). Run
from the bundle folder, they write ``results/PRECISION/`` (trtexec.log, times.json, profile.json,
device.json, check.json): one folder to copy back for ``leapkit bench --from-trtexec``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.errors import ExportError
from leapkit.types import Precision

if TYPE_CHECKING:
    from leapkit.deploy.manifest import ExportManifest, Variant
    from leapkit.profiles import TargetProfile

MIN_TENSORRT = (8, 6)
DEFAULT_TENSORRT = "10.x"  # what the scripts assume when a profile names no TensorRT version
REFERENCE_INPUT = "reference_input.bin"
TIMING_CACHE = "timing.cache"
RESULTS = "results"  # results/PRECISION/: what bench_engine.sh and check_engine.sh leave for leapkit to read
LOGS = "logs"  # logs/PRECISION/: build and check logs, engine outputs (not trtexec timing runs)
TRTEXEC_LOG, TIMES, PROFILE, DEVICE, CHECK = "trtexec.log", "times.json", "profile.json", "device.json", "check.json"
CHECK_OUTPUTS = "check_outputs.py"
DEVICE_INFO = "device_info.py"
# The device-side helpers, copied into each bundle (python3 with numpy; the standard library only).
CHECK_OUTPUTS_PY = (Path(__file__).parent / CHECK_OUTPUTS).read_text()
DEVICE_INFO_PY = (Path(__file__).parent / DEVICE_INFO).read_text()


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an engine accepts (min, max) and is tuned for (opt)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ExportError(
                f"batch range must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}; "
                f"pass --batch N >= 1"
            )


def parse_version(text: str) -> tuple[int, int | None]:
    """Major and minor of a TensorRT version string such as ``10.3``, ``10.x`` or ``8.6.2``.

    Raises:
        ExportError: the string is not a version, or names a TensorRT older than 8.6.
    """
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+|x))?(?:\.[\dx]+)*\s*", str(text))
    if m is None:
        raise ExportError(f"'{text}' is not a TensorRT version; set the profile's tensorrt field to e.g. \"10.3\"")
    major = int(m.group(1))
    minor = int(m.group(2)) if m.group(2) not in (None, "x") else None
    if (major, minor) == (8, 5):
        raise ExportError(
            f"TensorRT {text.strip()} (JetPack 5.1) cannot build these models: its ONNX parser has no "
            f"LayerNormalization, which every exported ViT uses; flash JetPack 6 (TensorRT 8.6 or 10.3) and set "
            f"the profile's tensorrt field to the version the device runs"
        )
    if (major, minor if minor is not None else 99) < MIN_TENSORRT:
        raise ExportError(
            f"TensorRT {text.strip()} is too old: leapkit bundles target TensorRT 8.6 (JetPack 6.0), 10.x "
            f"(JetPack 6.1/6.2) and 11.x; update JetPack or the profile"
        )
    return major, minor


def strongly_typed(version: str) -> bool:
    """Whether engines for this TensorRT version take their precision from the ONNX types."""
    return parse_version(version)[0] >= 10


def precision_flags(version: str, precision: Precision) -> list[str]:
    """The trtexec flags that make an engine of ``precision`` from its ONNX variant."""
    major, _ = parse_version(version)
    if major >= 11:
        return []  # strong typing is the only mode; precision flags were removed
    if major == 10:
        return ["--stronglyTyped"]
    return {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[precision]


def steady_timing_flags(version: str) -> list[str]:
    """CUDA graph, spin-wait, no host/device copies: the defaults of 11.x, flags before it."""
    return [] if parse_version(version)[0] >= 11 else ["--useCudaGraph", "--useSpinWait", "--noDataTransfers"]


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


def _shape(input_name: str, batch: int, chw: Sequence[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in (batch, *chw))}"


def trtexec_build_args(
    variant: BundleVariant,
    *,
    input_name: str,
    chw: Sequence[int],
    batch: BatchRange,
    version: str,
    workspace_mb: int | None = None,
    timing_cache: str | None = TIMING_CACHE,
) -> list[str]:
    """The trtexec arguments that build ``variant``'s engine from its ONNX file on the device.

    Args:
        variant: the ONNX file (fp32, fp16 or Q/DQ int8 graph), its precision and the engine to save;
            the precision picks flags on TensorRT < 10 only.
        input_name: the ONNX input, e.g. ``images``.
        chw: channels, height and width of one input image.
        batch: the optimisation profile's min/opt/max batch.
        version: the TensorRT version the device runs (``10.3``, ``11.x``, ...).
        workspace_mb: builder memory pool limit in MiB; None leaves TensorRT's default.
        timing_cache: a timing cache file to read and update; None disables it.
    """
    args = [
        "trtexec",
        f"--onnx={variant.onnx_file}",
        f"--saveEngine={variant.engine_file}",
        f"--minShapes={_shape(input_name, batch.min, chw)}",
        f"--optShapes={_shape(input_name, batch.opt, chw)}",
        f"--maxShapes={_shape(input_name, batch.max, chw)}",
        *precision_flags(version, variant.precision),
    ]
    if workspace_mb is not None:
        args.append(f"--memPoolSize=workspace:{int(workspace_mb)}")  # MiB; 10.0 cannot parse a unit suffix
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    args.append("--skipInference")
    return args


def trtexec_bench_args(
    engine_file: str,
    *,
    input_name: str,
    chw: Sequence[int],
    batch: int,
    version: str,
    warmup_ms: int = 500,
    duration_s: int = 10,
    times_file: str | None = None,
) -> list[str]:
    """The trtexec arguments of the timing run: one batch size, GPU compute without copies, no profiler."""
    args = [
        "trtexec",
        f"--loadEngine={engine_file}",
        f"--shapes={_shape(input_name, batch, chw)}",
        f"--warmUp={warmup_ms}",
        f"--duration={duration_s}",
        *steady_timing_flags(version),
        "--percentile=90,95,99",
    ]
    if times_file is not None:
        args.append(f"--exportTimes={times_file}")
    return args


def trtexec_profile_args(
    engine_file: str, *, input_name: str, chw: Sequence[int], batch: int, profile_file: str, duration_s: int = 3
) -> list[str]:
    """The trtexec arguments of the per-layer profiling run, kept apart from the timing run.

    A profiler in the timed loop adds a synchronisation per layer, and trtexec 8.6-10.x then prints
    no performance summary; 11.x always profiles in a second pass after the timed one.
    """
    return [
        "trtexec",
        f"--loadEngine={engine_file}",
        f"--shapes={_shape(input_name, batch, chw)}",
        "--warmUp=200",
        f"--duration={duration_s}",
        f"--exportProfile={profile_file}",
    ]


def trtexec_check_args(
    engine_file: str, *, input_name: str, chw: Sequence[int], input_file: str, output_file: str
) -> list[str]:
    """The trtexec arguments that run an engine once on a raw float32 input file and dump the outputs."""
    return [
        "trtexec",
        f"--loadEngine={engine_file}",
        f"--shapes={_shape(input_name, 1, chw)}",
        f"--loadInputs={input_name}:{input_file}",
        f"--exportOutput={output_file}",
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
    ]


def shell_command(args: Sequence[str]) -> str:
    """One command, quoted for POSIX shells, one argument per continued line."""
    return " \\\n    ".join(shlex.quote(a) for a in args)


def _trtexec(args: Sequence[str], indent: str = "    ") -> str:
    """A trtexec command line that runs the trtexec the script found (``$TRTEXEC``), one argument a line."""
    more = " \\\n" + indent + "    "
    return indent + '"$TRTEXEC"' + more + more.join(shlex.quote(a) for a in args[1:])


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
        args = trtexec_build_args(v, input_name=spec.input_name, chw=spec.chw, batch=batch, version=spec.version,
                                  workspace_mb=workspace_mb)
        lines.append(f"  {v.precision})\n{_trtexec(args)} \\\n        2>&1 | tee {LOGS}/{v.precision}/build.log\n"
                     f"    ;;\n")
    lines.append("esac\n")
    # The sidecar tells `leapkit bench` the engine's precision; the device-built engine is not in manifest.json.
    lines.append(
        f"printf '{{\"engine\": \"%s\", \"onnx\": \"%s\", \"precision\": \"%s\", \"built_by\": \"build_engine.sh\", "
        f"\"tensorrt_expected\": \"{spec.version}\", \"created\": \"%s\"}}\\n' \\\n"
        f'    "$ENGINE" "$ONNX" "$PRECISION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$ENGINE.json"\n'
    )
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
                 f'rm -f "$OUT/{TRTEXEC_LOG}" "$OUT/{TIMES}" "$OUT/{PROFILE}" "$OUT/{DEVICE}"\n'
                 'case "$PRECISION" in\n')
    for v in variants:
        out = f"{RESULTS}/{v.precision}"
        timing = trtexec_bench_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, batch=batch,
                                    version=spec.version, times_file=f"{out}/{TIMES}")
        profile = trtexec_profile_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, batch=batch,
                                       profile_file=f"{out}/{PROFILE}")
        profile_log = f"{LOGS}/{v.precision}/profile.log"
        lines.append(
            f"  {v.precision})\n    # the timing run: its log holds the performance summary\n"
            f"{_trtexec(timing)} \\\n        2>&1 | tee {out}/{TRTEXEC_LOG}\n"
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


def check_script(variants: Sequence[BundleVariant], spec: ScriptSpec, input_file: str = REFERENCE_INPUT) -> str:
    """check_engine.sh: runs an engine on the reference input and compares with manifest.json (results/P/check.json)."""
    what = "Check a built engine against the PyTorch reference outputs: ./check_engine.sh [PRECISION]"
    lines = [_head(what, variants, spec), _select(variants), _NEED_ENGINE,
             f'OUT="{RESULTS}/$PRECISION"\nmkdir -p "$OUT" "{LOGS}/$PRECISION"\n'
             f'rm -f "$OUT/{CHECK}" "{LOGS}/$PRECISION/engine_output.json"\n',
             'case "$PRECISION" in\n']
    for v in variants:
        log = f"{LOGS}/{v.precision}"
        args = trtexec_check_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, input_file=input_file,
                                  output_file=f"{log}/engine_output.json")
        lines.append(f"  {v.precision})\n    if ! {_trtexec(args).lstrip()} \\\n        > {log}/check.log 2>&1; then\n"
                     f'        echo "trtexec could not run $ENGINE: see {log}/check.log" >&2\n    fi\n    ;;\n')
    lines.append("esac\n")
    # check_outputs.py reports a missing or unreadable output as a failure, so a failed run still leaves check.json
    lines.append(f'python3 {CHECK_OUTPUTS} "{LOGS}/$PRECISION/engine_output.json" manifest.json "$PRECISION" '
                 f'"$OUT/{CHECK}"\n')
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
        "check_engine.sh": check_script(variants, spec),
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
        f"./check_engine.sh {p}     # runs it on {REFERENCE_INPUT}, compares with manifest.json -> "
        f"{RESULTS}/{p}/{CHECK}",
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
