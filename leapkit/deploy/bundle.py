"""The TensorRT deploy bundle: trtexec command lines and scripts to build, time and check engines on the device.

How the precision of an engine is chosen depends on the TensorRT major version:

- 8.6 (JetPack 5.1 / 6.0): networks are weakly typed. The builder picks kernels per layer, and
  reduced precision has to be allowed with ``--fp16`` (fp16 model) or ``--int8 --fp16``
  (Q/DQ model: the int8 layers follow the Q/DQ scales, the rest may run in fp16).
- 10.x (JetPack 6.1 / 6.2): strongly typed networks are available (``--stronglyTyped``, the
  ``STRONGLY_TYPED`` network flag): every tensor keeps the type it has in the ONNX graph, so the
  fp16 and int8 (Q/DQ) ONNX files decide the engine's precision and the parity measured on the ONNX
  files carries over. Weak typing still exists but is deprecated since 10.12.
- 11.x: strong typing is the only mode; ``--fp16``, ``--int8``, ``--best`` and the matching builder
  flags are gone and ``--stronglyTyped`` is not needed (the network flag is ignored). Its
  migration notes list JetPack as unsupported so far, so Jetson profiles expect 10.3.

``--memPoolSize=workspace:N`` (``--workspace`` was removed in 10.0), ``--minShapes/--optShapes/
--maxShapes``, ``--saveEngine`` and ``--timingCacheFile`` are spelled the same in 8.6, 10 and 11.

Every export folder gets a README (:func:`readme`); TensorRT targets also get build_engine.sh,
bench_engine.sh, check_engine.sh and check_outputs.py (:func:`write_scripts`).
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
    from leapkit.deploy.manifest import ExportManifest
    from leapkit.profiles import TargetProfile

MIN_TENSORRT = (8, 6)
DEFAULT_TENSORRT = "10.x"  # what the scripts assume when a profile names no TensorRT version
REFERENCE_INPUT = "reference_input.bin"
CHECK_OUTPUTS = "check_outputs.py"
# The device-side checker, copied into each bundle (numpy only).
CHECK_OUTPUTS_PY = (Path(__file__).parent / CHECK_OUTPUTS).read_text()


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
    if (major, minor if minor is not None else 99) < MIN_TENSORRT:
        raise ExportError(
            f"TensorRT {text} is too old: leapkit bundles target TensorRT 8.6, 10.x and 11.x; "
            f"update JetPack or the profile"
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


def _shape(input_name: str, batch: int, chw: Sequence[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in (batch, *chw))}"


def _workspace(version: str, workspace_mb: int) -> str:
    # 8.6 reads a bare number as MiB; 10+ also accepts explicit base-2 suffixes.
    suffix = "M" if parse_version(version)[0] >= 10 else ""
    return f"--memPoolSize=workspace:{workspace_mb}{suffix}"


def trtexec_build_args(
    variant: BundleVariant,
    *,
    input_name: str,
    chw: Sequence[int],
    batch: BatchRange,
    version: str,
    workspace_mb: int | None = None,
    timing_cache: str | None = "timing.cache",
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
        args.append(_workspace(version, workspace_mb))
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
    warmup_ms: int = 500,
    duration_s: int = 10,
    times_file: str | None = None,
) -> list[str]:
    """The trtexec arguments that time an engine at one batch size (GPU compute, no copies)."""
    args = [
        "trtexec",
        f"--loadEngine={engine_file}",
        f"--shapes={_shape(input_name, batch, chw)}",
        f"--warmUp={warmup_ms}",
        f"--duration={duration_s}",
        "--useCudaGraph",
        "--useSpinWait",
        "--noDataTransfers",
        "--percentile=50,90,99",
    ]
    if times_file is not None:
        args.append(f"--exportTimes={times_file}")
    return args


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


_HEADER = """#!/usr/bin/env bash
# {what}
# Generated by leapkit {leapkit_version} for target {target} (TensorRT {version} expected{jetpack}).
# Not run by leapkit: TensorRT engines are built and timed on the device itself.
set -euo pipefail
cd "$(dirname "$0")"
command -v trtexec >/dev/null || export PATH="$PATH:/usr/src/tensorrt/bin"
command -v trtexec >/dev/null || {{
    echo "trtexec not found: install TensorRT (JetPack ships it in /usr/src/tensorrt/bin)" >&2; exit 2; }}
"""
_UNKNOWN = '  *) echo "unknown precision $PRECISION" >&2; exit 2 ;;\nesac\n'


def _head(what: str, variants: Sequence[BundleVariant], spec: ScriptSpec) -> list[str]:
    jp = f", JetPack {spec.jetpack}" if spec.jetpack else ""
    names = " ".join(v.precision for v in variants)
    first = spec.default if any(v.precision == spec.default for v in variants) else variants[0].precision
    return [
        _HEADER.format(what=what, leapkit_version=spec.leapkit_version, target=spec.target, version=spec.version,
                       jetpack=jp),
        f'PRECISION="${{1:-{first}}}"  # one of: {names}\n',
    ]


def build_script(
    variants: Sequence[BundleVariant], spec: ScriptSpec, batch: BatchRange, workspace_mb: int | None
) -> str:
    """build_engine.sh: ``./build_engine.sh [PRECISION]`` builds one engine with trtexec."""
    lines = _head("Build a TensorRT engine from the ONNX model: ./build_engine.sh [PRECISION]", variants, spec)
    lines.append('case "$PRECISION" in\n')
    for v in variants:
        args = trtexec_build_args(
            v, input_name=spec.input_name, chw=spec.chw, batch=batch, version=spec.version, workspace_mb=workspace_mb
        )
        lines.append(f"  {v.precision})\n    {shell_command(args)}\n    ;;\n")
    lines.append(_UNKNOWN)
    lines.append('echo "engine written; time it with ./bench_engine.sh $PRECISION and check it with '
                 './check_engine.sh $PRECISION"\n')
    return "".join(lines)


def bench_script(variants: Sequence[BundleVariant], spec: ScriptSpec, batch: int) -> str:
    """bench_engine.sh: times one engine with trtexec and keeps the per-iteration times."""
    lines = _head("Time a built engine: ./bench_engine.sh [PRECISION]", variants, spec)
    lines.append("# For stable numbers on a Jetson: sudo nvpmodel -m 0 && sudo jetson_clocks\n")
    lines.append('case "$PRECISION" in\n')
    for v in variants:
        args = trtexec_bench_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, batch=batch,
                                  times_file=f"times_{v.precision}.json")
        lines.append(f"  {v.precision})\n    test -f {shlex.quote(v.engine_file)} || "
                     f'{{ echo "build it first: ./build_engine.sh {v.precision}" >&2; exit 2; }}\n')
        lines.append(f"    {shell_command(args)}\n    ;;\n")
    lines.append(_UNKNOWN)
    return "".join(lines)


def check_script(variants: Sequence[BundleVariant], spec: ScriptSpec, input_file: str = REFERENCE_INPUT) -> str:
    """check_engine.sh: runs an engine on the reference input and compares with manifest.json."""
    what = "Check a built engine against the PyTorch reference outputs: ./check_engine.sh [PRECISION]"
    lines = _head(what, variants, spec)
    lines.append('case "$PRECISION" in\n')
    for v in variants:
        out = f"engine_output_{v.precision}.json"
        args = trtexec_check_args(v.engine_file, input_name=spec.input_name, chw=spec.chw, input_file=input_file,
                                  output_file=out)
        lines.append(f"  {v.precision})\n    {shell_command(args)}\n")
        lines.append(f"    python3 {CHECK_OUTPUTS} {shlex.quote(out)} manifest.json {v.precision}\n    ;;\n")
    lines.append(_UNKNOWN)
    return "".join(lines)


def write_scripts(out: Path, manifest: ExportManifest, profile: TargetProfile) -> None:
    """Write the three scripts and check_outputs.py for the manifest's ONNX variants into ``out``."""
    variants = [BundleVariant.of(v.precision, v.file) for v in manifest.variants if v.format == "onnx"]
    size = manifest.student["img_size"]
    spec = ScriptSpec(
        target=profile.name, version=profile.tensorrt or DEFAULT_TENSORRT, jetpack=profile.jetpack,
        input_name=manifest.input.name, chw=(3, size, size), default=profile.precision,
        leapkit_version=manifest.leapkit_version,
    )
    batch = BatchRange(**manifest.batch)
    scripts = {
        "build_engine.sh": build_script(variants, spec, batch, profile.workspace_mb),
        "bench_engine.sh": bench_script(variants, spec, batch.opt),
        "check_engine.sh": check_script(variants, spec),
    }
    for name, text in scripts.items():
        (out / name).write_text(text)
        (out / name).chmod(0o755)
    (out / CHECK_OUTPUTS).write_text(CHECK_OUTPUTS_PY)


# --- the README ---------------------------------------------------------------------------------


def readme(manifest: ExportManifest, profile: TargetProfile) -> str:
    """README.md of an export folder: the model's interface, the variants' evidence, how to run it."""
    from leapkit.deploy.summary import variants_table

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
    if profile.runtime == "tensorrt":
        version = profile.tensorrt or DEFAULT_TENSORRT
        jetpack = f" (JetPack {profile.jetpack})" if profile.jetpack else ""
        p = profile.precision
        lines += [
            "## On the device",
            f"Expected: TensorRT {version}{jetpack}. Engines do not move between GPUs or TensorRT versions, "
            f"so build them there:",
            "",
            "```sh",
            f"./build_engine.sh {p}     # trtexec: ONNX -> model*.engine (timing cache in timing.cache)",
            f"./check_engine.sh {p}     # runs the engine on {REFERENCE_INPUT}, compares with manifest.json",
            f"./bench_engine.sh {p}     # latency with trtexec (GPU compute, CUDA graph, p50/p90/p99)",
            "```",
            "",
        ]
        if strongly_typed(version):
            lines.append("The engines are strongly typed: each ONNX file's types set the precision (fp16 weights and "
                         "arithmetic with LayerNorm/softmax in fp32; int8 from the Q/DQ nodes, the rest fp32).")
        else:
            lines.append("TensorRT 8.6 is weakly typed: the fp16 and int8 scripts pass --fp16 / --int8 so that the "
                         "builder may use them.")
        lines.append("")
    else:
        lines += [
            "## Running it",
            "```python",
            "import onnxruntime as ort",
            "session = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
            f"tokens, cls, patch_tokens = session.run(None, {{'{inp.name}': images}})  "
            f"# images: float32 (B, 3, {size}, {size})",
            "```",
            "",
        ]
    lines += ["## Not run when this bundle was made", ""]
    lines += [f"- {item}" for item in manifest.not_run] or ["- nothing: every check ran"]
    lines.append("")
    return "\n".join(lines)
