"""TensorRT engines built here, with the TensorRT Python API, where TensorRT and a CUDA GPU exist.

The builder follows the TensorRT 10 named-tensor API, which 11.x keeps; engines are run (for
parity) with :class:`leapkit.runtimes.tensorrt_runner.TensorRTRunner`. The GPU is found and named through
cuda-python, not torch. This module imports without TensorRT; the builder has not run on this
project's CI machine (no GPU, no TensorRT), only the guards and the logger level are tested there.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from leapkit.errors import ExportError, MissingDependency
from leapkit.host import cuda_device, cuda_device_count, is_jetson, tensorrt_extra
from leapkit.runtimes.tensorrt_runner import import_tensorrt, tensorrt_logger
from leapkit.trtexec.flags import BatchRange
from leapkit.types import Precision

log = logging.getLogger(__name__)

PURPOSE = "building a TensorRT engine"
MIN_BUILDER_MAJOR = 10


def unavailable_reason() -> str | None:
    """Why engines cannot be built here (None when TensorRT imports and a CUDA GPU is visible).

    What is missing is named with where it comes from on this host: pip's ``trt`` extra, or on a Jetson
    JetPack's TensorRT and the ``jetson`` extra's cuda-python.
    """
    if importlib.util.find_spec("tensorrt") is None:
        if is_jetson():
            return ("the tensorrt package is not installed (JetPack's python3-libnvinfer, in a venv made with "
                    "--system-site-packages)")
        return "the tensorrt package is not installed (pip install 'leapkit[trt]')"
    count = cuda_device_count()
    if count is None:
        return f"cuda-python is not installed (pip install 'leapkit[{tensorrt_extra()}]')"
    if count == 0:
        return "no CUDA GPU is visible"
    return None


def engines_wanted(requested: bool | None) -> tuple[bool, str | None]:
    """Whether to build engines here for a TensorRT target, and why they cannot be when they cannot.

    Args:
        requested: ``--build-engine`` (True), ``--no-build-engine`` (False) or None: build when possible.

    Raises:
        MissingDependency: engines were requested and tensorrt is not installed.
        ExportError: engines were requested and no CUDA GPU is visible.
    """
    reason = unavailable_reason()
    want = requested if requested is not None else reason is None
    if want and reason is not None:
        if importlib.util.find_spec("tensorrt") is None:
            import_tensorrt(f"{PURPOSE} (--build-engine)")  # raises, naming where tensorrt comes from
        if cuda_device_count() is None:
            raise MissingDependency("cuda-python", tensorrt_extra(), f"{PURPOSE} (--build-engine)")
        raise ExportError(
            f"cannot build a TensorRT engine here: {reason}; drop --build-engine to write the deploy bundle only"
        )
    return want, reason


def _require_gpu() -> None:
    if not cuda_device_count():
        raise ExportError(
            "building a TensorRT engine needs a CUDA GPU and none is visible; build on the device with build_engine.sh"
        )


def timing_cache_name() -> str:
    """A timing cache file name for this TensorRT version and GPU (caches do not transfer between them)."""
    trt = import_tensorrt(PURPOSE)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", cuda_device()[0]).strip("-").lower()
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
    tf32: bool = False  # whether fp32 layers may round their matmul inputs to TF32 (off for fp32 engines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _network(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """A strongly typed network parsed from ``onnx_path``, and its parser."""
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    return network, parser  # the parser owns weights the network refers to until the build


def _use_timing_cache(config: Any, cache_path: Path) -> None:
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(blob), False):
        log.warning("timing cache %s does not fit this GPU/TensorRT; starting a fresh one", cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_name: str,
    chw: tuple[int, int, int],
    batch: BatchRange,
    precision: Precision,
    workspace_mb: int | None = None,
    timing_cache: str | Path | None = None,
) -> EngineInfo:
    """Build and save a TensorRT engine from an ONNX file, with a ``.json`` metadata file beside it.

    The network is strongly typed, so the ONNX types (fp32, fp16, or Q/DQ int8) set the precision; fp32
    engines are built with TF32 off, so that fp32 means the fp32 their tolerance was measured in.
    TensorRT's log goes through a logger at INFO under ``leapkit -v``, else at WARNING.

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
    trt = import_tensorrt(PURPOSE)
    _require_gpu()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if int(trt.__version__.split(".")[0]) < MIN_BUILDER_MAJOR:
        raise ExportError(
            f"the Python engine builder needs TensorRT {MIN_BUILDER_MAJOR} or newer (found {trt.__version__}); "
            f"use build_engine.sh"
        )
    logger = tensorrt_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _network(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    tf32 = precision != "fp32"
    if not tf32:  # TF32 is on by default; the fp32 tolerance is for true fp32 (trtexec: --noTF32)
        config.clear_flag(trt.BuilderFlag.TF32)
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (batch.min, *chw), (batch.opt, *chw), (batch.max, *chw))
    if config.add_optimization_profile(profile) < 0:  # TensorRT returns -1 for a profile it cannot use
        raise ExportError(
            f"TensorRT rejected the optimisation profile {input_name} {batch.min}/{batch.opt}/{batch.max} x "
            f"{'x'.join(map(str, chw))} for {onnx_path.name}; rerun with -v for TensorRT's log"
        )
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        _use_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {onnx_path.name}; rerun with -v for the builder log"
        )
    engine_path.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    gpu, capability = cuda_device()
    info = EngineInfo(
        engine=engine_path.name, onnx=onnx_path.name, precision=precision, tensorrt_version=trt.__version__,
        gpu=gpu, compute_capability=capability, batch=asdict(batch),
        workspace_mb=workspace_mb, strongly_typed=True, timing_cache=str(cache_path) if cache_path else None,
        tf32=tf32,
    )
    engine_path.with_suffix(engine_path.suffix + ".json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info
