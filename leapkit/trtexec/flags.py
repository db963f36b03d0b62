"""trtexec's command lines: building an engine, timing it, profiling its layers, checking its outputs, per version.

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

Used by the deploy bundle's scripts (:mod:`leapkit.deploy.bundle`) and the latency model's device
timing (:mod:`leapkit.planning.device_timing`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from leapkit.errors import ExportError
from leapkit.types import Precision

MIN_TENSORRT = (8, 6)
DEFAULT_TENSORRT = "10.x"  # what the scripts assume when a profile names no TensorRT version
TIMING_CACHE = "timing.cache"


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


def tf32_flags(precision: Precision) -> list[str]:
    """``--noTF32`` for fp32 engines: TensorRT (every version, trtexec and the builder alike) lets fp32 matmuls
    round their inputs to TF32's 10-bit mantissa by default, which is not the fp32 the parity was measured in."""
    return ["--noTF32"] if precision == "fp32" else []


def steady_timing_flags(version: str) -> list[str]:
    """CUDA graph, spin-wait, no host/device copies: the defaults of 11.x, flags before it."""
    return [] if parse_version(version)[0] >= 11 else ["--useCudaGraph", "--useSpinWait", "--noDataTransfers"]


def _shape(input_name: str, batch: int, chw: Sequence[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in (batch, *chw))}"


def trtexec_build_args(
    onnx_file: str,
    engine_file: str,
    precision: Precision,
    *,
    input_name: str,
    chw: Sequence[int],
    batch: BatchRange,
    version: str,
    workspace_mb: int | None = None,
    timing_cache: str | None = TIMING_CACHE,
) -> list[str]:
    """The trtexec arguments that build an engine from its ONNX file on the device.

    Args:
        onnx_file: the ONNX file (fp32, fp16 or Q/DQ int8 graph).
        engine_file: the engine to save.
        precision: the ONNX file's precision; it picks flags on TensorRT < 10 only.
        input_name: the ONNX input, e.g. ``images``.
        chw: channels, height and width of one input image.
        batch: the optimisation profile's min/opt/max batch.
        version: the TensorRT version the device runs (``10.3``, ``11.x``, ...).
        workspace_mb: builder memory pool limit in MiB; None leaves TensorRT's default.
        timing_cache: a timing cache file to read and update; None disables it.
    """
    args = [
        "trtexec",
        f"--onnx={onnx_file}",
        f"--saveEngine={engine_file}",
        f"--minShapes={_shape(input_name, batch.min, chw)}",
        f"--optShapes={_shape(input_name, batch.opt, chw)}",
        f"--maxShapes={_shape(input_name, batch.max, chw)}",
        *precision_flags(version, precision),
        *tf32_flags(precision),
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


def trtexec_layer_profile_args(
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
    engine_file: str, *, input_name: str, chw: Sequence[int], input_file: str, output_file: str, batch: int = 1
) -> list[str]:
    """The trtexec arguments that run an engine once on a raw float32 input file of ``batch`` images and dump the
    outputs (trtexec refuses an input file whose size is not the shape's)."""
    return [
        "trtexec",
        f"--loadEngine={engine_file}",
        f"--shapes={_shape(input_name, batch, chw)}",
        f"--loadInputs={input_name}:{input_file}",
        f"--exportOutput={output_file}",
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
    ]
