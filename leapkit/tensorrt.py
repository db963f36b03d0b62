"""TensorRT: trtexec command lines for a deploy bundle, and an engine builder where TensorRT runs.

How the precision of an engine is chosen depends on the TensorRT major version:

- 8.6 (JetPack 5.1 / 6.0): networks are weakly typed. The builder picks kernels per layer, and
  reduced precision has to be allowed with ``--fp16`` (fp16 model) or ``--int8 --fp16``
  (Q/DQ model: the int8 layers follow the Q/DQ scales, the rest may run in fp16).
- 10.x (JetPack 6.1 / 6.2): strongly typed networks are available (``--stronglyTyped``, the
  ``STRONGLY_TYPED`` network flag): every tensor keeps the type it has in the ONNX graph, so the
  fp16 and int8 (Q/DQ) ONNX files decide the engine's precision and the parity measured on the ONNX
  files carries over. Weak typing still exists but is deprecated since 10.12.
- 11.x: strong typing is the only mode; ``--fp16``, ``--int8``, ``--best`` and the matching builder
  flags are gone and ``--stronglyTyped`` is no longer needed (the network flag is ignored). Its
  migration notes list JetPack as unsupported so far, so Jetson profiles expect 10.3.

``--memPoolSize=workspace:N`` (``--workspace`` was removed in 10.0), ``--minShapes/--optShapes/
--maxShapes``, ``--saveEngine`` and ``--timingCacheFile`` are spelled the same in 8.6, 10 and 11.

The Python builder (:func:`build_engine`) and runner (:class:`EngineRunner`) follow the TensorRT 10
named-tensor API (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), which 11.x
keeps. This module imports without TensorRT; the builder was not run on the machine this code was
written on (no GPU, no TensorRT), only the command lines and the guards are tested there.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from leapkit.errors import ExportError, MissingDependency

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
MIN_TENSORRT = (8, 6)


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an engine accepts (min, max) and is tuned for (opt)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ExportError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}; pass --batch N >= 1")


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
        raise ExportError(f"TensorRT {text} is too old: leapkit bundles target TensorRT 8.6, 10.x and 11.x; update JetPack or the profile")
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


def _shape(input_name: str, batch: int, chw: Sequence[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in (batch, *chw))}"


def _workspace(version: str, workspace_mb: int) -> str:
    # 8.6 reads a bare number as MiB; 10+ also accepts explicit base-2 suffixes.
    suffix = "M" if parse_version(version)[0] >= 10 else ""
    return f"--memPoolSize=workspace:{workspace_mb}{suffix}"


def trtexec_build_args(
    onnx_file: str,
    engine_file: str,
    *,
    input_name: str,
    chw: Sequence[int],
    batch: BatchRange,
    precision: Precision,
    version: str,
    workspace_mb: int | None = None,
    timing_cache: str | None = "timing.cache",
) -> list[str]:
    """The trtexec arguments that build ``engine_file`` from ``onnx_file`` on the device.

    Args:
        onnx_file: the ONNX variant of ``precision`` (fp32, fp16 or Q/DQ int8 graph).
        engine_file: where trtexec saves the engine.
        input_name: the ONNX input, e.g. ``images``.
        chw: channels, height and width of one input image.
        batch: the optimisation profile's min/opt/max batch.
        precision: the variant's precision; picks flags on TensorRT < 10 only.
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


def trtexec_check_args(engine_file: str, *, input_name: str, chw: Sequence[int], input_file: str, output_file: str) -> list[str]:
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
    quoted = [shlex.quote(a) for a in args]
    return " \\\n    ".join(quoted)


# --- the deploy bundle's scripts ----------------------------------------------------------------


@dataclass(frozen=True)
class BundleVariant:
    """One ONNX file of a bundle and the engine the device builds from it."""

    precision: Precision
    onnx_file: str
    engine_file: str


_HEADER = """#!/usr/bin/env bash
# {what}
# Generated by leapkit {leapkit_version} for target {target} (TensorRT {version} expected{jetpack}).
# Not run by leapkit: TensorRT engines are built and timed on the device itself.
set -euo pipefail
cd "$(dirname "$0")"
command -v trtexec >/dev/null || export PATH="$PATH:/usr/src/tensorrt/bin"
command -v trtexec >/dev/null || {{ echo "trtexec not found: install TensorRT (JetPack ships it in /usr/src/tensorrt/bin)" >&2; exit 2; }}
"""


def _choose(variants: Sequence[BundleVariant], default: Precision) -> str:
    names = " ".join(v.precision for v in variants)
    first = default if any(v.precision == default for v in variants) else variants[0].precision
    return f'PRECISION="${{1:-{first}}}"  # one of: {names}\n'


def _header(what: str, target: str, version: str, jetpack: str | None, leapkit_version: str) -> str:
    jp = f", JetPack {jetpack}" if jetpack else ""
    return _HEADER.format(what=what, leapkit_version=leapkit_version, target=target, version=version, jetpack=jp)


def build_script(
    variants: Sequence[BundleVariant],
    *,
    target: str,
    version: str,
    jetpack: str | None,
    input_name: str,
    chw: Sequence[int],
    batch: BatchRange,
    workspace_mb: int | None,
    default: Precision,
    leapkit_version: str,
) -> str:
    """build_engine.sh: ``./build_engine.sh [PRECISION]`` builds one engine with trtexec."""
    lines = [_header("Build a TensorRT engine from the ONNX model: ./build_engine.sh [PRECISION]", target, version, jetpack, leapkit_version)]
    lines.append(_choose(variants, default))
    lines.append('case "$PRECISION" in\n')
    for v in variants:
        args = trtexec_build_args(
            v.onnx_file, v.engine_file, input_name=input_name, chw=chw, batch=batch, precision=v.precision,
            version=version, workspace_mb=workspace_mb,
        )
        lines.append(f"  {v.precision})\n    {shell_command(args)}\n    ;;\n")
    lines.append('  *) echo "unknown precision $PRECISION" >&2; exit 2 ;;\nesac\n')
    lines.append('echo "engine written; time it with ./bench_engine.sh $PRECISION and check it with ./check_engine.sh $PRECISION"\n')
    return "".join(lines)


def bench_script(
    variants: Sequence[BundleVariant],
    *,
    target: str,
    version: str,
    jetpack: str | None,
    input_name: str,
    chw: Sequence[int],
    batch: int,
    default: Precision,
    leapkit_version: str,
) -> str:
    """bench_engine.sh: times one engine with trtexec and keeps the per-iteration times."""
    lines = [_header("Time a built engine: ./bench_engine.sh [PRECISION]", target, version, jetpack, leapkit_version)]
    lines.append(_choose(variants, default))
    lines.append("# For stable numbers on a Jetson: sudo nvpmodel -m 0 && sudo jetson_clocks\n")
    lines.append('case "$PRECISION" in\n')
    for v in variants:
        args = trtexec_bench_args(v.engine_file, input_name=input_name, chw=chw, batch=batch, times_file=f"times_{v.precision}.json")
        lines.append(f'  {v.precision})\n    test -f {shlex.quote(v.engine_file)} || {{ echo "build it first: ./build_engine.sh {v.precision}" >&2; exit 2; }}\n')
        lines.append(f"    {shell_command(args)}\n    ;;\n")
    lines.append('  *) echo "unknown precision $PRECISION" >&2; exit 2 ;;\nesac\n')
    return "".join(lines)


def check_script(
    variants: Sequence[BundleVariant],
    *,
    target: str,
    version: str,
    jetpack: str | None,
    input_name: str,
    chw: Sequence[int],
    default: Precision,
    leapkit_version: str,
    input_file: str = "reference_input.bin",
) -> str:
    """check_engine.sh: runs an engine on the reference input and compares with manifest.json."""
    lines = [_header("Check a built engine against the PyTorch reference outputs: ./check_engine.sh [PRECISION]", target, version, jetpack, leapkit_version)]
    lines.append(_choose(variants, default))
    lines.append('case "$PRECISION" in\n')
    for v in variants:
        out = f"engine_output_{v.precision}.json"
        args = trtexec_check_args(v.engine_file, input_name=input_name, chw=chw, input_file=input_file, output_file=out)
        lines.append(f"  {v.precision})\n    {shell_command(args)}\n")
        lines.append(f"    python3 check_outputs.py {shlex.quote(out)} manifest.json {v.precision}\n    ;;\n")
    lines.append('  *) echo "unknown precision $PRECISION" >&2; exit 2 ;;\nesac\n')
    return "".join(lines)


# A standalone checker for the device (numpy only): trtexec's --exportOutput JSON against the
# manifest's reference outputs.
CHECK_OUTPUTS_PY = '''"""Compare trtexec --exportOutput JSON with the reference outputs in manifest.json.

Usage: python3 check_outputs.py OUTPUT.json manifest.json PRECISION      (exit 1 on a mismatch)
"""
import json
import sys

import numpy as np


def main(output_file, manifest_file, precision):
    manifest = json.load(open(manifest_file))
    ref = manifest["reference"]
    tol = ref["tolerance"][precision]
    dumped = json.load(open(output_file))
    if isinstance(dumped, dict):
        dumped = dumped.get("outputs", [dumped])
    got = {d["name"]: np.asarray(d["values"], dtype=np.float64).ravel() for d in dumped}
    ok = True
    for name, exp in ref["outputs"].items():
        if name not in got:
            print(f"{name}: missing from {output_file}")
            ok = False
            continue
        first = np.asarray(exp["first"], dtype=np.float64)
        head = got[name][: len(first)]
        norm = float(np.linalg.norm(got[name]))
        max_abs = float(np.abs(head - first).max())
        rel_norm = abs(norm - exp["l2"]) / max(exp["l2"], 1e-12)
        good = max_abs <= tol["first_max_abs"] and rel_norm <= tol["l2_rel"]
        ok &= good
        print(f"{name}: first values max |diff| {max_abs:.3g} (<= {tol['first_max_abs']}), "
              f"L2 {norm:.5g} vs {exp['l2']:.5g} (rel {rel_norm:.3g} <= {tol['l2_rel']}): {'ok' if good else 'MISMATCH'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
'''


# --- building and running engines where TensorRT exists ----------------------------------------


def unavailable_reason() -> str | None:
    """Why engines cannot be built here (None when TensorRT imports and a CUDA GPU is visible)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (pip install 'leapkit[trt]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def import_tensorrt() -> Any:
    """The tensorrt module, or MissingDependency naming the extra that brings it."""
    try:
        import tensorrt
    except ImportError as e:
        raise MissingDependency("tensorrt", "trt", "building a TensorRT engine") from e
    return tensorrt


def _require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ExportError("building a TensorRT engine needs a CUDA GPU and none is visible; build on the device with build_engine.sh")


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def timing_cache_name() -> str:
    """A timing cache file name for this TensorRT version and GPU (caches do not transfer between them)."""
    trt = import_tensorrt()
    import torch

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-").lower()
    return f"timing-trt{trt.__version__}-{gpu}.cache"


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built with and for: it runs only on this GPU and TensorRT version."""

    engine: str
    onnx: str
    precision: str
    tensorrt_version: str
    gpu: str
    compute_capability: str
    batch: dict[str, int]
    workspace_mb: int | None
    strongly_typed: bool
    timing_cache: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_name: str,
    chw: Sequence[int],
    batch: BatchRange,
    precision: Precision,
    workspace_mb: int | None = None,
    timing_cache: str | Path | None = None,
) -> EngineInfo:
    """Build and save a TensorRT engine from an ONNX file, with a ``.json`` metadata file beside it.

    The network is strongly typed, so the ONNX types (fp32, fp16, or Q/DQ int8) set the precision.

    Args:
        onnx_path: the ONNX variant to build.
        engine_path: where the serialized engine goes; metadata lands at ``<engine>.json``.
        input_name: the dynamic-batch input.
        chw: channels, height and width of one image.
        batch: min/opt/max batch of the optimisation profile.
        precision: recorded in the metadata (the ONNX types decide it).
        workspace_mb: memory pool limit for the builder's scratch space.
        timing_cache: a timing cache file to reuse and update across builds.

    Raises:
        MissingDependency: tensorrt is not installed.
        ExportError: no GPU, TensorRT older than 10, the parser rejects the graph or the build fails.
    """
    trt = import_tensorrt()
    _require_gpu()
    import torch

    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise ExportError(f"the Python engine builder needs TensorRT 10 or newer (found {trt.__version__}); use build_engine.sh")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (batch.min, *chw), (batch.opt, *chw), (batch.max, *chw))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        if not config.set_timing_cache(config.create_timing_cache(blob), False):
            log.warning("timing cache %s does not fit this GPU/TensorRT; starting a fresh one", cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {Path(onnx_path).name}; rerun with -v for the builder log")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    cc = torch.cuda.get_device_capability()
    info = EngineInfo(
        engine=engine_path.name,
        onnx=Path(onnx_path).name,
        precision=precision,
        tensorrt_version=trt.__version__,
        gpu=torch.cuda.get_device_name(),
        compute_capability=f"{cc[0]}.{cc[1]}",
        batch=asdict(batch),
        workspace_mb=workspace_mb,
        strongly_typed=True,
        timing_cache=str(cache_path) if cache_path is not None else None,
    )
    engine_path.with_suffix(engine_path.suffix + ".json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info


class EngineRunner:
    """Runs a serialized engine on numpy batches, with torch CUDA tensors as the device buffers.

    Args:
        engine_path: a file written by :func:`build_engine` or trtexec on this GPU.
    """

    def __init__(self, engine_path: str | Path) -> None:
        trt = import_tensorrt()
        _require_gpu()
        self._trt = trt
        self._runtime = trt.Runtime(_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ExportError(f"TensorRT could not load {engine_path}: it was built for another GPU or TensorRT version; rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def _torch_dtype(self, name: str) -> Any:
        import torch

        np_dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
        return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs (as float32 numpy arrays) of one batch ``x`` for the single input."""
        import torch

        (name,) = self.inputs
        xt = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self._torch_dtype(name))
        self.context.set_input_shape(name, tuple(xt.shape))
        self.context.set_tensor_address(name, xt.data_ptr())
        outs = {}
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            outs[out] = torch.empty(shape, dtype=self._torch_dtype(out), device="cuda")
            self.context.set_tensor_address(out, outs[out].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT failed to run the engine; rerun with -v for the log")
        stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outs.items()}
