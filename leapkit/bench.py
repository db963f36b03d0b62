"""Latency benchmarks gated on a target's budget: `leapkit bench [MODEL] --target T`.

The method follows trtexec: warm up for a fixed time, then time a counted number of iterations
(or run for a duration), one synchronous inference at a time, and report min/mean/percentiles/max,
throughput and the coefficient of variation. Thread counts are set explicitly and reported.

Beside every measured figure sits a roofline *estimate* for the target: a lower bound on latency
from the model's FLOPs and bytes and the profile's peak dense throughput and memory bandwidth. It
needs no device and is never a measurement.

The verdict judges one result against ``budget_ms`` on ``budget_stat`` (p99 by default): the
result in the target's own runtime and default precision when it was benched, otherwise the
fastest result in the target's runtime, otherwise the fastest result (see :func:`gated_result`).

TensorRT engines are run through the TensorRT 10 Python API with torch-allocated CUDA buffers.
That path is written against the documented API but has not been run on this project's CI
machine, which has neither TensorRT nor a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import logging
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from leapkit import __version__, callable_stage
from leapkit.errors import CheckFailed, ConfigError, MissingDependency, ModelError
from leapkit.profiles import STATS, Stat, TargetProfile, load_target
from leapkit.run import CONFIG, atomic_write_bytes, read_json, read_run_config, write_json
from leapkit.threads import torch_threads

log = logging.getLogger(__name__)

Runtime = Literal["torch", "onnxruntime", "tensorrt"]
Format = Literal["pytorch", "onnx", "engine"]
OrtProvider = Literal["auto", "cpu", "cuda", "tensorrt"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
NOISY_CV = 0.10  # above this the spread says more about the machine than about the model
MIN_ITERATIONS = 10
# --threads auto: each candidate thread count is timed this long (after this warm-up) per format.
PROBE_S, PROBE_WARMUP_S = 0.5, 0.2
_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


# ---------------------------------------------------------------- what to bench


@dataclass
class Artifact:
    """One model file (or the in-memory PyTorch student) to benchmark."""

    format: Format
    precision: str  # fp32|fp16|int8, or "unknown" for an engine without a hint
    path: Path | None = None
    size_mb: float | None = None
    accuracy: float | None = None  # linear-probe top-1 (%) when the export recorded it
    status: str = "ok"  # "ok" or why the export marked it as failed


@dataclass
class ModelSource:
    """A resolved MODEL argument: what can be benched and where the report goes."""

    kind: Literal["run", "export", "onnx", "engine"]
    artifacts: list[Artifact]
    out_dir: Path  # bench/<target>.* is written here
    run_dir: Path | None = None
    export_dir: Path | None = None
    img_size: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def _precision_from_name(name: str) -> str | None:
    for p in ("int8", "fp16", "fp32"):
        if re.search(rf"(^|[._-]){p}([._-]|$)", name):
            return p
    return None


def onnx_precision(path: Path) -> str:
    """fp32, fp16 or int8, from the file name or else from the graph (QDQ/QLinear ops, fp16 weights)."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path} is not a valid ONNX file ({type(e).__name__}); re-export it with `leapkit export`") from e
    hint = _precision_from_name(path.name)
    if hint:
        return hint
    ops = {n.op_type for n in m.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger", "DynamicQuantizeLinear"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
        return "fp16"
    return "fp32"


def _file_mb(path: Path) -> float:
    size = path.stat().st_size
    data = path.with_name(path.name + ".data")  # ONNX external data saved next to the model
    if data.is_file():
        size += data.stat().st_size
    return size / 1e6


def _manifest_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """What the export recorded about one file (status, parity, accuracy), when anything.

    Looks in ``variants`` (what leapkit.export writes), ``artifacts``, ``formats`` or ``results``, given either as a mapping keyed by file name
    or as a list of entries with a ``file`` (or ``name``/``path``) field.
    """
    for key in ("variants", "artifacts", "formats", "results"):
        section = manifest.get(key)
        if isinstance(section, dict) and isinstance(section.get(name), dict):
            return section[name]
        if isinstance(section, list):
            for entry in section:
                if isinstance(entry, dict) and name in (entry.get("file"), entry.get("name"), Path(str(entry.get("path", ""))).name):
                    return entry
    return {}


def _entry_accuracy(entry: dict[str, Any]) -> float | None:
    for key in ("accuracy", "linear_probe_top1", "top1"):
        v = entry.get(key)
        if isinstance(v, dict):
            v = v.get("linear_probe_top1", v.get("top1"))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _entry_status(entry: dict[str, Any]) -> str:
    """``ok``, ``unchecked``, or ``failed: <why>`` as the export recorded it."""
    status = str(entry.get("status", "ok")).lower()
    parity = entry.get("parity")
    if status in ("failed", "fail", "error") or (isinstance(parity, dict) and parity.get("passed") is False):
        notes = entry.get("notes") or []
        return "failed" + (f": {'; '.join(map(str, notes))}" if notes else "")
    return "unchecked" if status == "unchecked" else "ok"


def export_failed(status: str) -> bool:
    return status.startswith("failed")


def _file_artifact(path: Path, manifest: dict[str, Any] | None = None) -> Artifact:
    entry = _manifest_entry(manifest or {}, path.name)
    if path.suffix in ONNX_SUFFIXES:
        fmt, precision = "onnx", entry.get("precision") or onnx_precision(path)
    else:
        meta = path.with_name(path.name + ".json")  # written beside engines by leapkit.tensorrt.build_engine
        built = read_json(meta) if meta.is_file() else {}
        fmt, precision = "engine", entry.get("precision") or built.get("precision") or _precision_from_name(path.name) or "unknown"
    return Artifact(fmt, precision, path, _file_mb(path), _entry_accuracy(entry), _entry_status(entry))


def _export_artifacts(export_dir: Path) -> tuple[list[Artifact], dict[str, Any]]:
    manifest_path = export_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    names = list(manifest.get("files", {})) if isinstance(manifest.get("files"), dict) else []
    if not names:  # a folder without a manifest: whatever model files it holds
        names = sorted(p.name for p in export_dir.iterdir() if p.suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES)
    paths = [export_dir / n for n in names if Path(n).suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES and (export_dir / n).is_file()]
    return [_file_artifact(p, manifest) for p in paths], manifest


def _run_export_dir(run_dir: Path, target: str | None) -> Path | None:
    """The run's export for ``target`` when there is one, else its newest export (export/latest)."""
    root = run_dir / "export"
    for candidate in ([root / target] if target else []) + [root / "latest"]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _input_img_size(manifest: dict[str, Any]) -> int | None:
    shape = (manifest.get("input") or {}).get("shape")
    if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[-1], int):
        return shape[-1]
    return None


def resolve_model(model: str | Path | None, target: str | None = None) -> ModelSource:
    """Work out what MODEL names: a run directory, an export folder, an ONNX file or an engine.

    A run contributes its PyTorch student and the files of its export for ``target`` (or its
    newest export); ``None`` means ``runs/latest``.

    Raises:
        RunError: no run at runs/latest.
        ModelError: the path does not exist or is not ONNX, an engine, an export or a run.
    """
    from leapkit.run import STUDENT, resolve_run

    if model is None:
        run_dir = resolve_run(None)
        return _from_run(run_dir, target)
    path = Path(model)
    if not path.exists():
        raise ModelError(f"model not found: {path}; pass an .onnx file, a TensorRT engine, an export folder or a run directory")
    if path.is_file():
        if path.suffix not in ONNX_SUFFIXES + ENGINE_SUFFIXES:
            raise ModelError(
                f"{path.name} is not a model leapkit can bench; pass an .onnx file, a TensorRT engine "
                f"({'/'.join(ENGINE_SUFFIXES)}), an export folder or a run directory"
            )
        art = _file_artifact(path)
        return ModelSource("onnx" if art.format == "onnx" else "engine", [art], out_dir=path.parent.resolve())
    if (path / CONFIG).is_file():
        return _from_run(resolve_run(path, need=(CONFIG,)), target)
    if (path / "manifest.json").is_file() or any(p.suffix in ONNX_SUFFIXES + ENGINE_SUFFIXES for p in path.iterdir()):
        export_dir = path.resolve()
        artifacts, manifest = _export_artifacts(export_dir)
        src = manifest.get("source_run")
        run_dir = Path(src) if isinstance(src, str) and (Path(src) / CONFIG).is_file() and (Path(src) / STUDENT).is_file() else None
        return ModelSource(
            "export", artifacts, out_dir=run_dir or export_dir, run_dir=run_dir, export_dir=export_dir,
            img_size=_input_img_size(manifest), manifest=manifest,
        )
    raise ModelError(f"{path} holds no run (config.yaml), export (manifest.json) or model file; pass one of those")


def _from_run(run_dir: Path, target: str | None) -> ModelSource:
    from leapkit.run import STUDENT

    cfg = read_run_config(run_dir)
    artifacts: list[Artifact] = []
    if (run_dir / STUDENT).is_file():
        acc = read_json(run_dir / "eval.json").get("linear_probe_top1") if (run_dir / "eval.json").is_file() else None
        artifacts.append(Artifact("pytorch", "fp32", None, (run_dir / STUDENT).stat().st_size / 1e6, acc))
    export_dir = _run_export_dir(run_dir, target)
    manifest: dict[str, Any] = {}
    if export_dir is not None:
        files, manifest = _export_artifacts(export_dir)
        artifacts += files
        if artifacts and artifacts[0].format == "pytorch" and artifacts[0].accuracy is None:
            # the export probes the PyTorch student on the same split as its ONNX files
            for v in manifest.get("variants") or []:
                acc = v.get("accuracy") if isinstance(v, dict) else None
                if isinstance(acc, dict) and isinstance(acc.get("pytorch_top1"), (int, float)):
                    artifacts[0].accuracy = float(acc["pytorch_top1"])
                    break
    if not artifacts:
        raise ModelError(f"{run_dir} has no student.safetensors and no export; finish `leapkit distill` or run `leapkit export` first")
    return ModelSource("run", artifacts, out_dir=run_dir, run_dir=run_dir, export_dir=export_dir, img_size=cfg.model.img_size, manifest=manifest)


# ---------------------------------------------------------------- runners


class Runner:
    """One ready-to-run model: calling it runs one synchronous inference on a fixed input."""

    runtime: str
    device: str = "cpu"
    providers: list[str] = []
    input_shape: list[int] = []

    def __call__(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TorchRunner(Runner):
    """PyTorch eager (or torch.compile) on the CPU or a CUDA device, under inference_mode."""

    runtime = "torch"

    def __init__(self, model: nn.Module, batch: int, img_size: int, device: str = "cpu", compile: bool = False):
        self.device = device
        self.model = model.eval().to(device)
        self.fn: Callable[[torch.Tensor], Any] = self.model.forward_features if hasattr(self.model, "forward_features") else self.model
        if compile:
            self.fn = torch.compile(self.fn)
        self.x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device)
        self.input_shape = list(self.x.shape)

    def __call__(self) -> None:
        with torch.inference_mode():
            self.fn(self.x)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)


def ort_providers(choice: OrtProvider, profile: TargetProfile) -> list[str]:
    """Execution providers for ONNX Runtime, best first, always ending with the CPU.

    Raises:
        MissingDependency: the requested provider is not in this onnxruntime build.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    want = {"cpu": [], "cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    if choice == "auto":
        gpu_target = profile.family != "cpu"
        chosen = ["CUDAExecutionProvider"] if gpu_target and "CUDAExecutionProvider" in available else []
    else:
        chosen = want[choice]
        if chosen and chosen[0] not in available:
            raise MissingDependency("onnxruntime-gpu", "gpu", f"ONNX Runtime's {chosen[0]}")
        chosen = [p for p in chosen if p in available]
    return chosen + ["CPUExecutionProvider"]


class OrtRunner(Runner):
    """An ONNX model in ONNX Runtime with all graph optimisations and explicit thread counts."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, batch: int, threads: int, providers: Sequence[str], img_size: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise ModelError(f"ONNX Runtime cannot load {path.name}: {str(e).splitlines()[0]}; re-export it with `leapkit export`") from e
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        inp = self.session.get_inputs()[0]
        shape = [batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(inp.shape)]
        if len(shape) == 4 and img_size is not None:
            shape = [d if isinstance(d, int) else img_size for d in shape]
        if not all(isinstance(d, int) for d in shape):
            raise ModelError(f"{path.name} has an input with free dimensions {inp.shape}; export it with a fixed image size")
        if shape[0] != batch:
            log.warning("%s has a fixed batch of %d; benchmarking at that batch instead of %d", path.name, shape[0], batch)
        self.batch = shape[0]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(dtype)}
        self.input_shape = list(shape)

    def __call__(self) -> None:
        self.session.run(None, self.feed)


class TensorRTRunner(Runner):
    """A serialised TensorRT engine, run with ``execute_async_v3`` on a CUDA stream.

    Written against the TensorRT 10 Python API (named I/O tensors); untested on this project's
    CI machine, which has no GPU.
    """

    runtime = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, batch: int):
        trt = _import_tensorrt()
        _require_cuda(path.name)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(
                f"TensorRT {trt.__version__} cannot load {path.name}; engines only run on the GPU model and "
                f"TensorRT version that built them: rebuild it on this machine (build_engine.sh in the export)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        pairs = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8,
                 "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}
        dtypes = {getattr(trt, k): v for k, v in pairs.items() if hasattr(trt, k)}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.buffers: dict[str, torch.Tensor] = {}
        for name in inputs:
            shape = [batch if d == -1 else d for d in self.engine.get_tensor_shape(name)]
            self.context.set_input_shape(name, shape)
            dtype = dtypes[self.engine.get_tensor_dtype(name)]
            self.buffers[name] = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).cuda()
            self.input_shape = list(shape)
        for name in names:
            if name not in inputs:  # output shapes are known once every input shape is set
                shape = tuple(self.context.get_tensor_shape(name))
                self.buffers[name] = torch.empty(shape, dtype=dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
        for name, buf in self.buffers.items():
            self.context.set_tensor_address(name, buf.data_ptr())
        self.batch = batch
        self.providers = [f"TensorRT {trt.__version__}"]

    def __call__(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ModelError("TensorRT execute_async_v3 failed; run with LEAPKIT_DEBUG=1 and check the TensorRT log")
        self.stream.synchronize()


def _require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(f"{what} needs a CUDA GPU and none is visible here; bench TensorRT engines on the device they were built on")


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise MissingDependency("tensorrt", "trt", "benchmarking a TensorRT engine") from e
    return trt


# ---------------------------------------------------------------- timing


def time_runner(fn: Callable[[], None], warmup_s: float = 0.5, iterations: int | None = None, duration_s: float = 3.0) -> list[float]:
    """Per-inference latencies in ms: warm up for ``warmup_s``, then ``iterations`` calls or ``duration_s``.

    At least one warm-up call and :data:`MIN_ITERATIONS` timed calls run whatever the limits.
    """
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warmup_s:
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if iterations is not None:
            if len(samples) >= iterations:
                break
        elif len(samples) >= MIN_ITERATIONS and time.perf_counter() - start >= duration_s:
            break
    return samples


def latency_stats(samples_ms: Sequence[float], batch: int) -> dict[str, float]:
    """min/mean/p50/p90/p95/p99/max and std in ms, throughput in images/s, cv = std/mean."""
    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    out = {"min_ms": float(a.min()), "mean_ms": mean}
    for q in (50, 90, 95, 99):
        out[f"p{q}_ms"] = float(np.percentile(a, q))
    out.update(max_ms=float(a.max()), std_ms=std, cv=std / mean if mean > 0 else 0.0, throughput=batch * 1e3 / mean, iterations=int(a.size))
    return out


def stat_key(stat: str) -> str:
    """The results key for a budget statistic (``p99`` -> ``p99_ms``)."""
    if stat not in STATS:
        raise ConfigError(f"unknown statistic '{stat}'; use one of {', '.join(STATS)}")
    return f"{stat}_ms"


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def _peak_rss_mb() -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


# ---------------------------------------------------------------- cost and roofline


@dataclass
class Cost:
    """What one inference costs: FLOPs (2 x MACs) and bytes moved (weights + activations)."""

    flops: float
    param_bytes: float
    activation_bytes: float  # written once and read once, at the format's element size
    source: str
    img_size: int | None = None  # the input resolution the figures are for

    def at(self, precision: str) -> Cost:
        """The same model with weights and activations at ``precision`` (fp32 counts scaled)."""
        scale = _BYTES.get(precision, 4) / 4
        return Cost(self.flops, self.param_bytes * scale, self.activation_bytes * scale, self.source, self.img_size)


class _ActivationBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Sums the bytes of every tensor an op produces, skipping views (they allocate nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out


def torch_cost(model: nn.Module, img_size: int, batch: int = 1) -> Cost:
    """FLOPs and fp32 bytes of one forward of ``model`` (its ``forward_features`` when it has one)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    fn = model.forward_features if hasattr(model, "forward_features") else model
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, img_size, img_size, device=device)
    flops, source = None, "torch.utils.flop_counter"
    try:
        from leapkit.flops import model_flops  # the project's counter, when present
    except ImportError:
        model_flops = None
    if model_flops is not None:
        try:
            got = model_flops(model, img_size, batch, memory=False)
            got = getattr(got, "flops", got)
            flops = float(got["flops"] if isinstance(got, dict) else got)
            source = "leapkit.flops.model_flops"
        except Exception as e:  # a counter bug must not stop a latency run
            log.debug("leapkit.flops.model_flops failed (%s); counting with FlopCounterMode", e)
    # The math SDPA backend runs attention as plain matmuls, which the counter sees; the fused CPU
    # flash-attention kernel is not counted by FlopCounterMode.
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        if flops is None:
            with FlopCounterMode(display=False) as fc:
                fn(x)
            flops = float(fc.get_total_flops())
        counter = _ActivationBytes()
        with counter:
            fn(x)
    params = sum(p.numel() * 4 for p in model.parameters())
    return Cost(flops, float(params), 2.0 * counter.bytes, source, img_size)


def onnx_cost(path: Path, batch: int = 1) -> Cost:
    """FLOPs of MatMul/Gemm/Conv nodes (2 x MACs) and the bytes of initializers and activations.

    Shapes come from ONNX shape inference with the batch fixed; elementwise ops are not counted
    (a few percent of a ViT's FLOPs).
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    m = onnx.load(str(path), load_external_data=True)
    inits = {t.name: t for t in m.graph.initializer}
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    m = shape_inference.infer_shapes(m, data_prop=True)  # propagates Shape->Reshape values
    elem = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
            onnx.TensorProto.INT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.BFLOAT16: 2}
    shapes: dict[str, list[int]] = {}
    act = 0
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        shapes[vi.name] = dims
        if vi.name not in inits:
            act += math.prod(dims) * elem.get(t.elem_type, 4)
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    flops = 0.0
    for node in m.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or 0 in out:
            continue
        if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a = shapes.get(node.input[0 if node.op_type != "QLinearMatMul" else 0])
            if a:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a and len(a) >= 2 else a[-1]
                flops += 2.0 * math.prod(out) * k
        elif node.op_type in ("Conv", "QLinearConv"):
            w = shapes.get(node.input[1 if node.op_type == "Conv" else 3])
            if w:
                flops += 2.0 * math.prod(out) * math.prod(w[1:])
    params = sum(numpy_helper.to_array(t).nbytes for t in inits.values())
    size = next((d[-1] for d in (shapes.get(i.name) for i in m.graph.input) if d and len(d) == 4), None)
    return Cost(flops, float(params), 2.0 * act, "onnx graph (MatMul/Gemm/Conv)", size)


def roofline(cost: Cost, profile: TargetProfile, precision: str) -> dict[str, Any] | None:
    """Lower-bound latency on ``profile`` at ``precision``: max(FLOPs / peak, bytes / bandwidth).

    An estimate, not a measurement: it assumes peak clocks, perfect overlap of compute and memory
    traffic and no launch overheads. None when the profile has no peak for ``precision``.
    """
    peak = profile.peak_ops(precision) if precision in _BYTES else None
    if not peak:
        return None
    compute_ms = cost.flops / peak * 1e3
    moved = cost.param_bytes + cost.activation_bytes
    memory_ms = moved / (profile.memory_bandwidth_gbs * 1e9) * 1e3
    return {
        "kind": "estimate (roofline lower bound)",
        "estimate_ms": max(compute_ms, memory_ms),
        "compute_ms": compute_ms,
        "memory_ms": memory_ms,
        "bound": "compute" if compute_ms >= memory_ms else "memory",
        "flops": cost.flops,
        "bytes": moved,
        "peak_tops": profile.peak_tops.get(precision),
        "memory_bandwidth_gbs": profile.memory_bandwidth_gbs,
        "flops_source": cost.source,
    }


# ---------------------------------------------------------------- environment


def _read(path: str) -> str | None:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    info = _read("/proc/cpuinfo") or ""
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", info, re.M)
    have = set(m.group(2).split()) if m else set()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd", "asimddp", "fphp", "i8mm")
    return [f for f in wanted if f in have]


def _jetson() -> dict[str, Any] | None:
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    info: dict[str, Any] = {"model": model.rstrip("\x00") if model else None, "l4t": release.splitlines()[0] if release else None}
    status = _read("/var/lib/nvpmodel/status")  # e.g. "pmode:0002 fmode:..."
    m = re.search(r"pmode:(\d+)", status or "")
    if m:
        mode_id = int(m.group(1))
        info["power_mode_id"] = mode_id
        conf = _read("/etc/nvpmodel.conf") or ""
        names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)}
        info["power_mode"] = names.get(mode_id)
    for path in sorted(Path("/sys/class/devfreq").glob("*")):
        if "gpu" in path.name or "ga10b" in path.name or "gv11b" in path.name:
            cur, top = _read(str(path / "cur_freq")), _read(str(path / "max_freq"))
            info["gpu_freq_mhz"] = int(cur) / 1e6 if cur and cur.isdigit() else None
            info["gpu_max_freq_mhz"] = int(top) / 1e6 if top and top.isdigit() else None
    cpu = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    info["cpu0_freq_mhz"] = int(cpu) / 1e3 if cpu and cpu.isdigit() else None
    return info


def driver_version(proc_text: str) -> str | None:
    """The NVIDIA driver version from /proc/driver/nvidia/version's NVRM line.

    Both forms occur: "... Kernel Module  580.95.05  ..." and, for the open modules,
    "... Open Kernel Module for x86_64  580.159.04  ...".
    """
    m = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)*)\s", proc_text + " ")
    return m.group(1) if m else None


def _gpu() -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info: dict[str, Any] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}", "memory_gb": round(props.total_memory / 1e9, 1),
                            "cuda": torch.version.cuda}
    info["driver"] = driver_version(_read("/proc/driver/nvidia/version") or "")
    if info["driver"] is None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return info


def environment() -> dict[str, Any]:
    """A fingerprint of the machine and software a measurement came from."""
    env: dict[str, Any] = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": usable_cores(),
        "cpu_flags": _cpu_flags(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "tensorrt": _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt_lean"),
        "leapkit": __version__,
        "gpu": _gpu(),
        "jetson": _jetson(),
    }
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    return env


# ---------------------------------------------------------------- the benchmark


@dataclass
class BenchReport:
    """Everything ``leapkit bench`` measured and decided; ``data`` is what bench/<target>.json holds."""

    data: dict[str, Any]
    json_path: Path
    md_path: Path

    @property
    def verdict(self) -> str:
        return self.data["verdict"]

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.data["results"]

    def check(self) -> None:
        """Raise CheckFailed when the verdict is FAIL."""
        if self.verdict == "FAIL":
            raise CheckFailed(f"bench verdict FAIL on {self.data['target']}: {self.data['verdict_reason']} (report: {self.md_path})")


def _label(r: dict[str, Any]) -> str:
    if r["format"] == "pytorch":
        return "PyTorch (torch.compile)" if r.get("compiled") else "PyTorch eager"
    return {"onnx": f"ONNX {r['precision']}", "engine": f"TensorRT engine {r['precision']}"}[r["format"]]


def gated_result(results: list[dict[str, Any]], profile: TargetProfile, key: str) -> dict[str, Any] | None:
    """The result the verdict judges.

    The target's own runtime at its default precision when benched; else the fastest result in the
    target's runtime; else the fastest result of all. Results that did not run are skipped, but a
    failed export (parity) of the chosen format still fails the verdict.
    """
    ran = [r for r in results if r.get(key) is not None]
    if not ran:
        return None
    exact = [r for r in ran if r["runtime"] == profile.runtime and r["precision"] == profile.precision]
    same_rt = [r for r in ran if r["runtime"] == profile.runtime]
    pool = exact or same_rt or ran
    return min(pool, key=lambda r: r[key])


def _choose_runtimes(src: ModelSource, runtimes: Sequence[str] | None) -> list[str]:
    has = {"torch": src.run_dir is not None and any(a.format == "pytorch" for a in src.artifacts),
           "onnxruntime": any(a.format == "onnx" for a in src.artifacts),
           "tensorrt": any(a.format == "engine" for a in src.artifacts)}
    if not runtimes or "all" in runtimes:
        chosen = [r for r in RUNTIMES if has[r]]
        trt_ready = _version("tensorrt") is not None and torch.cuda.is_available()
        if chosen == ["tensorrt"] and not trt_ready:
            _import_tensorrt()
            _require_cuda("a TensorRT engine")
        if "tensorrt" in chosen and not trt_ready:
            log.warning("skipping the TensorRT engine: it needs tensorrt and a CUDA GPU (bench it on the device)")
            chosen.remove("tensorrt")
        return chosen
    for r in runtimes:
        if r not in RUNTIMES:
            raise ConfigError(f"unknown runtime '{r}'; use torch, onnxruntime, tensorrt or all")
        if not has[r]:
            need = {"torch": "a run directory with student.safetensors", "onnxruntime": "an .onnx file or an export holding one",
                    "tensorrt": "a TensorRT engine (.engine/.plan), built on the device with build_engine.sh"}[r]
            raise ConfigError(f"--runtime {r} needs {need}; nothing of that kind was found in {src.export_dir or src.out_dir}")
    if "tensorrt" in runtimes:
        _import_tensorrt()
        _require_cuda("--runtime tensorrt")
    return list(dict.fromkeys(runtimes))


def _export_target(model: str | Path | None) -> str:
    """The target an export was made for, so that `leapkit bench` alone benches the newest export."""
    target = resolve_model(model).manifest.get("target")
    if isinstance(target, dict):
        target = target.get("name")
    if isinstance(target, str):
        return target
    raise ConfigError("no target given and none recorded by an export; pass --target T (see `leapkit profiles list`)")


@dataclass(frozen=True)
class Method:
    """How every format is measured; recorded in the report."""

    batch: int
    threads: int
    warmup_s: float = 0.5
    iterations: int | None = None
    duration_s: float = 3.0
    compile: bool = False
    device: str = "cpu"  # for the PyTorch student
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # --threads auto: probe these thread counts per format and measure with the fastest; empty: use `threads`
    thread_candidates: tuple[int, ...] = ()

    def problems(self) -> list[str]:
        p = []
        if self.batch < 1:
            p.append(f"--batch must be >= 1, got {self.batch}")
        if self.threads < 1:
            p.append(f"--threads must be >= 1, got {self.threads}")
        if self.iterations is not None and self.iterations < 1:
            p.append(f"--iterations must be >= 1, got {self.iterations}")
        if not self.duration_s > 0:
            p.append(f"--duration must be > 0 s, got {self.duration_s}")
        if not self.warmup_s >= 0:
            p.append(f"--warmup must be >= 0 s, got {self.warmup_s}")
        return p


_RUNTIME_OF = {"pytorch": "torch", "onnx": "onnxruntime", "engine": "tensorrt"}


def usable_cores() -> int | None:
    """The CPUs this process may run on (its affinity mask), or None where the OS cannot say."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def auto_thread_candidates(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself: what ``--threads auto`` probes."""
    counts = {cores}
    n = 1
    while n < cores:
        counts.add(n)
        n *= 2
    return tuple(sorted(counts))


def parse_threads(value: int | str | None) -> int | Literal["auto"] | None:
    """``--threads``: a positive integer, ``auto``, or None (the target's); ConfigError otherwise."""
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(value).strip() != str(n):
        raise ConfigError(f"--threads must be a positive integer or 'auto', got {value!r}")
    return n


def _make_runner(art: Artifact, method: Method, threads: int, img_size: int | None, student: nn.Module | None) -> Runner:
    if art.format == "pytorch":
        return TorchRunner(student, method.batch, img_size, device=method.device, compile=method.compile)
    if art.format == "onnx":
        return OrtRunner(art.path, method.batch, threads, method.providers, img_size)
    return TensorRTRunner(art.path, method.batch)


def probe_threads(art: Artifact, method: Method, img_size: int | None, student: nn.Module | None) -> dict[int, float]:
    """p50 latency (ms) of a short run at each of ``method.thread_candidates``; empty for GPU runners,
    whose latency the CPU thread count does not set."""
    probe: dict[int, float] = {}
    for n in method.thread_candidates:
        with torch_threads(n):
            runner = _make_runner(art, method, n, img_size, student)
            try:
                if runner.device.startswith("cuda"):
                    return {}
                probe[n] = float(np.median(time_runner(runner, PROBE_WARMUP_S, None, PROBE_S)))
            finally:
                runner.close()
    return probe


def bench_artifact(art: Artifact, method: Method, img_size: int | None, student: nn.Module | None = None, cost: Cost | None = None) -> tuple[dict[str, Any], Cost | None]:
    """Measure one format. A format that fails to run is recorded with its error, not raised.

    Args:
        art: what to run.
        method: how to measure.
        img_size: input size for the PyTorch student, and for ONNX inputs with free spatial dims.
        student: the PyTorch student, for ``pytorch`` artifacts.
        cost: the PyTorch student's cost (at ``cost.img_size``), reused for files of that size.

    Returns:
        The result entry, and the cost used for its roofline (FLOPs of ``cost`` when the file has
        its input size, else counted from the ONNX graph; bytes at the format's element size).
    """
    entry: dict[str, Any] = {
        "runtime": _RUNTIME_OF[art.format], "format": art.format, "precision": art.precision,
        "file": str(art.path) if art.path else None, "batch": method.batch, "threads": method.threads,
        "size_mb": art.size_mb, "accuracy": art.accuracy, "export_status": art.status,
    }
    try:
        threads = method.threads
        if method.thread_candidates and art.format != "engine":
            probe = probe_threads(art, method, img_size, student)
            if probe:
                threads = min(probe, key=probe.__getitem__)
                entry["threads"], entry["thread_probe_p50_ms"] = threads, probe
        with torch_threads(threads):
            runner = _make_runner(art, method, threads, img_size, student)
            if art.format == "pytorch":
                entry["compiled"] = method.compile
            elif art.format == "onnx":
                entry["batch"] = runner.batch
                graph = onnx_cost(art.path, runner.batch)
                if cost is None or runner.input_shape[-1] != cost.img_size:
                    cost = graph
                else:  # the student's FLOPs (attention included), this file's weight bytes
                    cost = Cost(cost.flops, graph.param_bytes, cost.at(art.precision).activation_bytes, cost.source, cost.img_size)
            else:
                cost = cost.at(art.precision) if cost and runner.input_shape[-1:] == [cost.img_size] else None
            entry["device"], entry["providers"], entry["input_shape"] = runner.device, list(runner.providers), runner.input_shape
            _reset_peak_rss()
            if runner.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            samples = time_runner(runner, method.warmup_s, method.iterations, method.duration_s)
            runner.close()
    except MissingDependency:
        raise
    except Exception as e:  # one format failing must not hide the others
        log.warning("%s failed: %s", art.path.name if art.path else "PyTorch student", e)
        entry["status"] = f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        return entry, cost
    entry.update(latency_stats(samples, entry["batch"]))
    entry["noisy"] = entry["cv"] > NOISY_CV
    entry["peak_rss_mb"] = _peak_rss_mb()
    torch_on_gpu = runner.device.startswith("cuda") and art.format != "onnx"
    entry["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch_on_gpu else None
    entry["status"] = "ok"
    if cost is not None:
        entry["achieved_tflops"] = cost.flops / (entry["p50_ms"] / 1e3) / 1e12
    return entry, cost


def decide(results: list[dict[str, Any]], profile: TargetProfile, budget_ms: float, stat: str) -> tuple[str, str, dict[str, Any] | None]:
    """PASS or FAIL, the reason in one line, and the result that was judged (see gated_result)."""
    key = stat_key(stat)
    gated = gated_result(results, profile, key)
    if gated is None:
        failures = "; ".join(f"{_label(r)} {r['status']}" for r in results)
        return "FAIL", f"no format ran ({failures})", None
    ok = gated[key] <= budget_ms and not export_failed(gated["export_status"])
    reasons = [f"{_label(gated)} ({gated['runtime']}) {stat} {gated[key]:.3f} ms {'<=' if gated[key] <= budget_ms else '>'} {budget_ms:g} ms"]
    if export_failed(gated["export_status"]):
        reasons.append(f"the export marked it as {gated['export_status']}")
    if gated["runtime"] != profile.runtime:
        reasons.append(f"measured with {gated['runtime']}, not the target's {profile.runtime}")
    return ("PASS" if ok else "FAIL"), "; ".join(reasons), gated


def _warnings(results: list[dict[str, Any]], env: dict[str, Any]) -> list[str]:
    out = [f"{_label(r)}: {r['status']}" for r in results if r["status"] != "ok"]
    out += [f"{_label(r)}: the export marked it as {r['export_status']}" for r in results if export_failed(r["export_status"])]
    out += [f"{_label(r)}: cv {r['cv']:.2f} > {NOISY_CV}: the machine is too noisy to trust the tail latency" for r in results if r.get("noisy")]
    load, cores = env.get("load_avg_1m"), env.get("cpu_affinity")
    if load and cores and load > cores:
        out.append(f"load average {load:.1f} exceeds the {cores} usable cores: other processes competed for the CPU")
    return out


def bench(
    model: str | Path | None = None,
    target: str | Path | TargetProfile | None = None,
    runtimes: Sequence[str] | None = None,
    budget_ms: float | None = None,
    stat: Stat | None = None,
    precisions: Sequence[str] | None = None,
    batch: int | None = None,
    threads: int | Literal["auto"] | None = None,
    warmup_s: float = 0.5,
    iterations: int | None = None,
    duration_s: float = 3.0,
    compile: bool = False,
    ort_provider: OrtProvider = "auto",
    device: str | None = None,
    out_dir: str | Path | None = None,
    check: bool = True,
) -> BenchReport:
    """Benchmark MODEL for a target, write bench/<target>.json and .md, and judge the budget.

    Args:
        model: a run directory, an export folder, an .onnx file or a TensorRT engine; None is
            runs/latest (its PyTorch student plus its export for the target, or newest export).
        target: profile name, family (``jetson``), YAML path, or a loaded profile; None takes
            the target of MODEL's export (its manifest's ``target``).
        runtimes: any of torch, onnxruntime, tensorrt, or ``["all"]``; None benches what MODEL has.
        budget_ms: overrides the profile's latency budget.
        stat: the statistic judged against the budget (default: the profile's, p99).
        precisions: only bench formats at these precisions.
        batch: batch size (default: the profile's).
        threads: CPU threads for torch and ONNX Runtime (default: the profile's, else all cores);
            ``"auto"`` probes 1, 2, 4, ... up to the usable cores for PROBE_S seconds each, per
            format, and measures each format with its fastest count (recorded per result).
        warmup_s: warm-up time per format.
        iterations: timed iterations; when None, run for ``duration_s``.
        duration_s: timed duration per format when ``iterations`` is None.
        compile: run the PyTorch student through torch.compile.
        ort_provider: ONNX Runtime execution provider; auto picks CUDA for GPU targets when present.
        device: device for the PyTorch student (default: cuda when the target is a GPU and one is
            present, else cpu).
        out_dir: where bench/ goes (default: the run, else next to the model).
        check: raise CheckFailed after writing the report when the verdict is FAIL.

    Raises:
        ConfigError: bad budget, statistic, runtime or option values.
        ModelError: MODEL is not a run, export, ONNX file or engine.
        MissingDependency: a requested runtime is not installed.
        CheckFailed: the verdict is FAIL and ``check`` is set.
    """
    profile = load_target(target if target is not None else _export_target(model))
    budget = profile.latency_budget_ms if budget_ms is None else budget_ms
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ConfigError(f"the budget must be a positive number of ms, got {budget_ms!r} (--budget-ms)")
    stat = stat or profile.budget_stat
    stat_key(stat)
    threads = parse_threads(threads)
    candidates = auto_thread_candidates(usable_cores() or os.cpu_count() or 1) if threads == "auto" else ()
    method = Method(
        batch=batch or profile.batch, threads=max(candidates) if candidates else threads or profile.threads or os.cpu_count() or 1,
        warmup_s=warmup_s, iterations=iterations, duration_s=duration_s, compile=compile,
        device=device or ("cuda" if profile.family != "cpu" and torch.cuda.is_available() else "cpu"),
        thread_candidates=candidates,
    )
    if method.problems():
        raise ConfigError("; ".join(method.problems()))

    src = resolve_model(model, profile.name)
    chosen = _choose_runtimes(src, runtimes)
    artifacts = [a for a in src.artifacts if _RUNTIME_OF[a.format] in chosen and (not precisions or a.precision in precisions)]
    if not artifacts:
        raise ConfigError(f"nothing to bench in {src.export_dir or src.out_dir} for runtimes {chosen or 'none'} and precisions {list(precisions or []) or 'any'}")
    if "onnxruntime" in chosen:
        method = dataclasses.replace(method, providers=tuple(ort_providers(ort_provider, profile)))
    # The student runs at its training resolution (its position embeddings are fixed to it); the
    # exported files run at whatever size they were exported for.
    img_size = profile.resolve_input_size(src.img_size) if src.img_size else None
    student, cost = None, None
    if src.run_dir is not None:
        from leapkit.run import load_student

        student = load_student(src.run_dir)
        with torch_threads(method.threads):
            cost = torch_cost(student, read_run_config(src.run_dir).model.img_size, method.batch)

    results = []
    for art in artifacts:
        log.info("benchmarking %s (%s, %s) for %s", art.path.name if art.path else "the PyTorch student", art.format, art.precision, profile.name)
        size = cost.img_size if art.format == "pytorch" else img_size
        entry, used = bench_artifact(art, method, size, student, cost)
        entry["roofline"] = roofline(used, profile, art.precision) if used is not None else None
        entry["budget_ok"] = entry.get(f"{stat}_ms") is not None and entry[f"{stat}_ms"] <= budget
        results.append(entry)

    verdict, reason, gated = decide(results, profile, budget, stat)
    env = environment()
    warnings = _warnings(results, env)
    for w in warnings:
        log.warning(w)
    data = {
        "target": profile.name,
        "target_description": profile.description,
        "model": str(model) if model is not None else "runs/latest",
        "source_run": str(src.run_dir) if src.run_dir else None,
        "export_dir": str(src.export_dir) if src.export_dir else None,
        "input_shape": next((r["input_shape"] for r in results if r.get("input_shape")), None),
        "results": results,
        "budget_ms": float(budget),
        "budget_stat": stat,
        "budget_source": "--budget-ms" if budget_ms is not None else f"profile {profile.name}",
        "verdict": verdict,
        "verdict_reason": reason,
        "gated": _label(gated) if gated else None,
        "method": {**asdict(method), "min_iterations": MIN_ITERATIONS, "noisy_cv": NOISY_CV,
                   "timer": "time.perf_counter, one synchronous inference per sample"},
        "roofline_note": "roofline figures are estimates, not measurements: max(FLOPs / peak dense throughput, bytes / memory bandwidth) "
        "from the target profile, with every weight and activation crossing memory once (caches ignored)",
        "warnings": warnings,
        "environment": env,
        "leapkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    json_path = (Path(out_dir) if out_dir is not None else src.out_dir) / "bench" / f"{profile.name}.json"
    md_path = json_path.with_suffix(".md")
    write_json(json_path, data)
    atomic_write_bytes(md_path, render_markdown(data).encode())
    log.info("wrote %s and %s", json_path, md_path)
    report = BenchReport(data, json_path, md_path)
    if check:
        report.check()
    return report


# ---------------------------------------------------------------- report


def _f(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    """One row per benched format: the columns of the Markdown and terminal tables."""
    key = f"{data['budget_stat']}_ms"
    rows = []
    for r in data["results"]:
        status = r["status"].split(":")[0] + ("" if r["export_status"] == "ok" else f", export {r['export_status'].split(':')[0]}")
        est = (r.get("roofline") or {}).get("estimate_ms")
        verdict = "-" if r.get(key) is None else ("PASS" if r["budget_ok"] and not export_failed(r["export_status"]) else "FAIL")
        rows.append([
            _label(r), r["precision"], r["runtime"], status, _f(r.get("size_mb")), _f(r.get("accuracy"), ".1f"),
            _f(r.get("p50_ms"), ".3f"), _f(r.get("p99_ms"), ".3f"), _f(r.get("throughput"), ".1f"), _f(est, ".3f"),
            f"{data['budget_stat']} <= {data['budget_ms']:g} ms", verdict,
        ])
    return rows


TABLE_HEADER = ["format", "precision", "runtime", "status", "size MB", "accuracy %", "p50 ms", "p99 ms", "FPS", "roofline est. ms", "budget", "verdict"]


def render_markdown(data: dict[str, Any]) -> str:
    """bench/<target>.md: the latency table, the verdict, the method and the environment."""
    env = data["environment"]
    lines = [
        f"# Latency on {data['target']}",
        "",
        f"{data['target_description']}. Model: `{data['model']}`"
        + (f", input {'x'.join(map(str, data['input_shape']))}" if data.get("input_shape") else "") + ".",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join("---" for _ in TABLE_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(data)]
    lines += [
        "",
        f"**Verdict: {data['verdict']}** ({data['verdict_reason']}); budget from {data['budget_source']}.",
        "",
        "Latencies are measured on the machine below, one synchronous inference per sample. "
        "The roofline column is an *estimate* for the target, not a measurement: "
        "max(FLOPs / peak dense throughput, bytes / memory bandwidth) from the target profile, with every weight and "
        "activation crossing memory once (caches ignored), at peak clocks and with no launch overheads.",
    ]
    if data["warnings"]:
        lines += ["", "Warnings:", *[f"- {w}" for w in data["warnings"]]]
    m = data["method"]
    runs = f"{m['iterations']} iterations" if m["iterations"] else f"{m['duration_s']:g} s (at least {m['min_iterations']} iterations)"
    if m.get("thread_candidates"):
        threads = (f"CPU threads chosen per format: each of {', '.join(map(str, m['thread_candidates']))} timed for "
                   f"{PROBE_S:g} s (p50 in brackets), the fastest measured")
    else:
        threads = f"{m['threads']} CPU threads"
    lines += ["", "## Method", "", f"Warm-up {m['warmup_s']:g} s, then {runs}; {threads}; timer: {m['timer']}.", ""]
    lines += ["| format | threads | iterations | min ms | mean ms | p90 ms | p95 ms | max ms | cv | process peak RSS MB | achieved TFLOP/s at p50 | est. bound |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        roof = r.get("roofline") or {}
        probe = r.get("thread_probe_p50_ms")
        row_threads = f"{r['threads']}" + (" (" + ", ".join(f"{n}: {ms:.3f} ms" for n, ms in probe.items()) + ")" if probe else "")
        lines.append(
            f"| {_label(r)} | {row_threads} | {r.get('iterations', '-')} | {_f(r.get('min_ms'), '.3f')} | {_f(r.get('mean_ms'), '.3f')} | {_f(r.get('p90_ms'), '.3f')} | "
            f"{_f(r.get('p95_ms'), '.3f')} | {_f(r.get('max_ms'), '.3f')} | {_f(r.get('cv'), '.3f')} | {_f(r.get('peak_rss_mb'), '.0f')} | "
            f"{_f(r.get('achieved_tflops'), '.4f')} | {roof.get('bound', '-')} |"
        )
    gpu = env.get("gpu") or {}
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu']} ({env['cpu_cores']} cores, {env.get('cpu_affinity')} usable; {', '.join(env['cpu_flags']) or 'no SIMD flags read'}); "
        f"load average {_f(env.get('load_avg_1m'), '.1f')}",
        f"- GPU: {gpu.get('name', 'none')}" + (f", driver {gpu.get('driver')}, CUDA {gpu.get('cuda')}" if gpu else ""),
        f"- torch {env['torch']}, onnxruntime {env.get('onnxruntime')}, tensorrt {env.get('tensorrt') or 'not installed'}, leapkit {env['leapkit']}; {env['os']}, Python {env['python']}",
    ]
    if env.get("jetson"):
        j = env["jetson"]
        lines.append(f"- Jetson: {j.get('model')}, {j.get('l4t')}, power mode {j.get('power_mode')} (id {j.get('power_mode_id')}), GPU {j.get('gpu_freq_mhz')} MHz")
    return "\n".join(lines) + "\n"


callable_stage(__name__)  # `leapkit.bench(...)` works after `import leapkit.bench` too
