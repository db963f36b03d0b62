"""One Runner protocol over the runtimes leapkit drives: PyTorch, ONNX Runtime, OpenVINO and TensorRT.

Every runner answers two questions about the same exported backbone:

    runner(x) -> {"tokens": ..., "cls": ..., "patch_tokens": ...}   outputs of one batch, as numpy
    runner.timed(x) -> fn                                            fn() runs one inference on x,
                                                                      staged once, for the timer

Export uses the first (parity, accuracy), bench the second (latency). The TensorRT runner is
written against TensorRT's named-tensor API (``set_input_shape``, ``execute_async_v3``, 8.5 and
later) with cuda-python for device buffers, the stream and the copies: on a Jetson it runs with
JetPack's TensorRT and a torch without CUDA. The OpenVINO runner runs an OpenVINO IR (or an ONNX
file) on the CPU with explicit threads and an explicit precision hint (OpenVINO's own default is
bf16 wherever the CPU has it). torch is imported only by the PyTorch runner and :class:`Backbone`.
The TensorRT runner has not run on this project's CI machine, which has neither TensorRT nor a
GPU; its guards are tested there.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from leapkit.errors import ConfigError, MissingDependency, ModelError
from leapkit.types import OpenVINOHint, Runtime

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES = ("tokens", "cls", "patch_tokens")

Outputs = dict[str, np.ndarray]


class Runner(Protocol):
    """A loaded model ready to run batches of (B, 3, H, W) float32 images."""

    runtime: Runtime
    device: str
    providers: list[str]

    def __call__(self, x: np.ndarray) -> Outputs: ...

    def timed(self, x: np.ndarray) -> Callable[[], None]: ...

    def close(self) -> None: ...


@functools.cache
def _backbone_class() -> type[nn.Module]:
    """:class:`Backbone`, defined on first use (it subclasses torch's nn.Module)."""
    from torch import nn

    class Backbone(nn.Module):
        """The student's ``forward_features`` with the three documented outputs (what ONNX exports)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model
            self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))

        def forward(self, images: Any) -> tuple[Any, Any, Any]:
            tokens = self.model.forward_features(images)
            return tokens, tokens[:, 0], tokens[:, self.num_prefix_tokens:]

    Backbone.__module__, Backbone.__qualname__ = __name__, "Backbone"
    return Backbone


def __getattr__(name: str) -> Any:
    # Backbone subclasses torch's nn.Module: it is made on first use, so that importing this module
    # for ONNX Runtime or TensorRT does not import torch.
    if name == "Backbone":
        return _backbone_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


def run_batched(runner: Callable[[np.ndarray], Outputs], images: np.ndarray, batch_size: int = 32) -> Outputs:
    """The outputs of ``images`` run ``batch_size`` at a time, concatenated."""
    parts = [runner(x) for x in batches(images, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class TorchRunner:
    """PyTorch eager (or torch.compile) under inference_mode, on the CPU or a CUDA device."""

    runtime: Runtime = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", compile: bool = False) -> None:
        import torch

        self._torch = torch
        self.device = device
        self.providers = [f"torch {torch.__version__} ({device})"]
        self.module = _backbone_class()(model).eval().to(device)
        self.forward: Callable[[Any], Any] = torch.compile(self.module) if compile else self.module

    def __call__(self, x: np.ndarray) -> Outputs:
        torch = self._torch
        with torch.inference_mode():
            outs = self.forward(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return {name: o.float().cpu().numpy() for name, o in zip(OUTPUT_NAMES, outs, strict=True)}

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        torch = self._torch
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        def run() -> None:
            with torch.inference_mode():
                self.forward(xt)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)

        return run

    def close(self) -> None:
        pass


def ort_providers(choice: str, gpu_target: bool) -> list[str]:
    """ONNX Runtime execution providers, best first, always ending with the CPU.

    Args:
        choice: ``auto`` (CUDA for GPU targets when this build has it), ``cpu``, ``cuda`` or ``tensorrt``.
        gpu_target: whether the target profile is a GPU or Jetson device.

    Raises:
        MissingDependency: the requested provider is not in this onnxruntime build.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    want = {
        "cpu": [],
        "cuda": ["CUDAExecutionProvider"],
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    }
    if choice == "auto":
        chosen = ["CUDAExecutionProvider"] if gpu_target and "CUDAExecutionProvider" in available else []
    else:
        chosen = want[choice]
        if chosen and chosen[0] not in available:
            raise MissingDependency("onnxruntime-gpu", "ort-gpu", f"ONNX Runtime's {chosen[0]}")
        chosen = [p for p in chosen if p in available]
    return chosen + ["CPUExecutionProvider"]


class OrtRunner:
    """An ONNX model in ONNX Runtime: all graph optimisations, sequential, explicit thread counts."""

    runtime: Runtime = "onnxruntime"

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        spin: bool = True,
    ) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            reason = str(e).splitlines()[0]
            raise ModelError(
                f"ONNX Runtime cannot load {path.name}: {reason}; re-export it with `leapkit export`"
            ) from e
        self.path = path
        self.providers = self.session.get_providers()
        self.device = "cpu" if self.providers[0] == "CPUExecutionProvider" else "cuda"
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def input_dtype(self) -> type:
        return np.float16 if self.input.type == "tensor(float16)" else np.float32

    def input_shape(self, batch: int, img_size: int | None = None) -> list[int]:
        """The input shape with the free batch dimension set to ``batch`` and free spatial ones to ``img_size``.

        Raises:
            ModelError: a free dimension remains.
        """
        shape = [batch if i == 0 and not isinstance(d, int) else d for i, d in enumerate(self.input.shape)]
        if len(shape) == 4 and img_size is not None:
            shape = [d if isinstance(d, int) else img_size for d in shape]
        if not all(isinstance(d, int) for d in shape):
            raise ModelError(
                f"{self.path.name} has an input with free dimensions {self.input.shape}; "
                "export it with a fixed image size"
            )
        return shape

    def __call__(self, x: np.ndarray) -> Outputs:
        outs = self.session.run(None, {self.input.name: np.ascontiguousarray(x).astype(self.input_dtype, copy=False)})
        return dict(zip(self.output_names, outs, strict=True))

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        feed = {self.input.name: np.ascontiguousarray(x).astype(self.input_dtype, copy=False)}

        def run() -> None:
            self.session.run(None, feed)

        return run

    def close(self) -> None:
        del self.session


OPENVINO_HINT_KEY = ("runtime_options", "INFERENCE_PRECISION_HINT")


def import_openvino(purpose: str = "running an OpenVINO model") -> Any:
    """The openvino module, or MissingDependency naming the extra that brings it."""
    try:
        import openvino
    except ImportError as e:
        raise MissingDependency("openvino", "openvino", purpose) from e
    return openvino


def openvino_version() -> str:
    """OpenVINO's release (``2026.4.1``), without its build suffix.

    Raises:
        MissingDependency: openvino is not installed.
    """
    return str(import_openvino("reading OpenVINO's version").__version__).split("-")[0]


def openvino_installed() -> bool:
    """Whether the openvino package (the ``openvino`` extra) is installed, without importing it."""
    return importlib.util.find_spec("openvino") is not None


CPU_FLAGS = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_features() -> set[str]:
    """The features the CPU reports in /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty where there is none."""
    try:
        info = CPU_FLAGS.read_text()
    except OSError:
        return set()
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", info, re.M)
    return set(m.group(2).split()) if m else set()


def cpu_bf16() -> str | None:
    """The CPU feature that gives bf16 arithmetic here (``avx512_bf16``, ``amx_bf16``), or None.

    Read from /proc/cpuinfo (Linux); OpenVINO's ``OPTIMIZATION_CAPABILITIES`` answers elsewhere.
    """
    flags = cpu_features()
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return found[-1]
    if openvino_installed() and not CPU_FLAGS.is_file():
        import openvino

        if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "bf16 (OpenVINO)"
    return None


class SignalStack(ctypes.Structure):
    """``stack_t`` of <signal.h>: an alternate signal stack."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library this process already has loaded (no ``find_library``, which runs ldconfig in a subprocess)."""
    return ctypes.CDLL(None)


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Give the calling thread back its alternate signal stack when the block ends (Linux; elsewhere a no-op).

    OpenVINO's CPU plugin sets an alternate signal stack of its own on the thread that compiles a model and
    unmaps it when the compiled model and its core are released, without handing the thread its old stack
    back. Python runs its signal handlers on the alternate stack (SA_ONSTACK), so a later signal delivered to
    that thread writes its frame into unmapped or reused memory: in one process that also spawns
    subprocesses (the test suite), that ended in a SIGSEGV raised by the kernel at a subprocess start.
    """
    libc = _libc() if sys.platform == "linux" else None
    before = SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


class OpenVINORunner:
    """An OpenVINO IR or ONNX file on the CPU: latency mode, one stream, explicit threads and precision hint.

    Args:
        path: the ``.xml`` IR (its ``.bin`` beside it) or an ``.onnx`` file.
        threads: inference threads (None: OpenVINO's choice).
        hint: the precision of what is not INT8; None reads the IR's ``runtime_options`` (written by
            the export; OpenVINO itself does not apply them), else ``f32``.
    """

    runtime: Runtime = "openvino"
    device = "cpu"

    def __init__(self, path: Path, threads: int | None = None, hint: OpenVINOHint | None = None) -> None:
        ov = import_openvino(f"running {Path(path).name}")
        self.path = Path(path)
        self._core = ov.Core()
        try:
            self.model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for unreadable models
            raise ModelError(
                f"OpenVINO cannot read {self.path.name}: {str(e).splitlines()[0]}; re-export it with `leapkit export`"
            ) from e
        if hint is None:
            stored = self.model.has_rt_info(list(OPENVINO_HINT_KEY))
            hint = str(self.model.get_rt_info(list(OPENVINO_HINT_KEY)).value) if stored else "f32"
        self.hint = hint
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                       "INFERENCE_PRECISION_HINT": hint}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        with keep_signal_stack():
            self.compiled = self._core.compile_model(self.model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what the plugin took: f32 without bf16
        self.providers = [f"OpenVINO {openvino_version()} CPU ({used.to_string()}, "
                          f"{self.compiled.get_property('INFERENCE_NUM_THREADS')} threads)"]

    def input_shape(self, batch: int, img_size: int | None = None) -> list[int]:
        """The input shape with the free batch dimension set to ``batch`` and free spatial ones to ``img_size``.

        Raises:
            ModelError: a free dimension remains.
        """
        dims = [d.get_length() if d.is_static else None for d in self.model.inputs[0].get_partial_shape()]
        shape = [batch if i == 0 and d is None else d for i, d in enumerate(dims)]
        if len(shape) == 4 and img_size is not None:
            shape = [img_size if d is None else d for d in shape]
        if any(d is None for d in shape):
            raise ModelError(f"{self.path.name} has an input with free dimensions {dims}; export it with a fixed "
                             f"image size")
        return [int(d) for d in shape]

    def __call__(self, x: np.ndarray) -> Outputs:
        outs = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        by_name = {k.get_any_name(): v for k, v in outs.items()}
        return {name: np.array(by_name[name], dtype=np.float32) for name in self.output_names}

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        """One inference on ``x`` with a model compiled for exactly its shape, as a deployment would."""
        model = self._core.read_model(str(self.path))
        model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
        with keep_signal_stack():
            request = self._core.compile_model(model, "CPU", self.config).create_infer_request()
        request.set_input_tensor(0, import_openvino().Tensor(np.ascontiguousarray(x, dtype=np.float32)))

        def run() -> None:
            request.infer()

        return run

    def close(self) -> None:
        del self.request, self.compiled


# --- TensorRT and CUDA without torch ----------------------------------------------------------

JETSON_RELEASE = Path("/etc/nv_tegra_release")  # L4T's release file: present on every Jetson


def is_jetson() -> bool:
    return JETSON_RELEASE.is_file()


def tensorrt_extra() -> str:
    """The extra that brings TensorRT's companions here: ``jetson`` on a Jetson (cuda-python only), else ``trt``."""
    return "jetson" if is_jetson() else "trt"


class JetPackTensorRTMissing(MissingDependency):
    """TensorRT's Python package is missing on a Jetson, where it comes from JetPack, not from pip."""

    def __init__(self, purpose: str) -> None:
        super().__init__("tensorrt", "jetson", purpose)
        self.args = (
            f"{purpose} needs JetPack's TensorRT Python package (apt install python3-libnvinfer); pip's tensorrt "
            f"wheels do not run on a Jetson: create the venv with --system-site-packages, then "
            f"pip install 'leapkit[jetson]'",
        )


def import_tensorrt(purpose: str = "running a TensorRT engine") -> Any:
    """The tensorrt module, or MissingDependency naming the extra that brings it (JetPack on a Jetson)."""
    try:
        import tensorrt
    except ImportError as e:
        if is_jetson():
            raise JetPackTensorRTMissing(purpose) from e
        raise MissingDependency("tensorrt", "trt", purpose) from e
    return tensorrt


def tensorrt_logger(trt: Any) -> Any:
    """TensorRT's logger at INFO when leapkit logs at DEBUG (-v), else at WARNING."""
    verbose = logging.getLogger("leapkit").isEnabledFor(logging.DEBUG)
    return trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)


def import_cudart(purpose: str = "running a TensorRT engine") -> Any:
    """cuda-python's CUDA runtime module: ``cuda.bindings.runtime`` (12.6 and later), else ``cuda.cudart``.

    Raises:
        MissingDependency: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError as e:
        raise MissingDependency("cuda-python", tensorrt_extra(), purpose) from e


def cuda_call(cudart: Any, result: tuple[Any, ...], what: str) -> Any:
    """The value of a cuda-python call that returns ``(error, value...)``.

    Raises:
        ModelError: the call failed; the message names CUDA's error.
    """
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise ModelError(f"CUDA failed {what}: {name}; check the GPU with nvidia-smi (tegrastats on a Jetson)")
    return values[0] if len(values) == 1 else None


def cuda_device_count() -> int | None:
    """How many CUDA GPUs are visible (cuda-python, else torch); None when neither is installed."""
    try:
        cudart = import_cudart()
    except MissingDependency:
        try:
            import torch
        except ImportError:
            return None
        return torch.cuda.device_count()
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:  # cuda-python raises when it cannot load the driver library at all
        return 0
    return int(count) if err == cudart.cudaError_t.cudaSuccess else 0


def cuda_device() -> tuple[str, str]:
    """Name and compute capability (``8.7``) of CUDA device 0.

    Raises:
        MissingDependency: cuda-python is not installed.
        ModelError: no CUDA device answers.
    """
    cudart = import_cudart("naming the GPU")
    prop = cuda_call(cudart, cudart.cudaGetDeviceProperties(0), "reading the GPU's properties")
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


def require_cuda(what: str) -> None:
    """Refuse to go on without a CUDA GPU, found through cuda-python (torch only where cuda-python is missing).

    Raises:
        MissingDependency: neither cuda-python nor torch is installed to look for a GPU.
        ConfigError: no CUDA GPU is visible.
    """
    count = cuda_device_count()
    if count is None:
        raise MissingDependency("cuda-python", tensorrt_extra(), what)
    if count == 0:
        raise ConfigError(
            f"{what} needs a CUDA GPU and none is visible here; run it on the device the engine was built on"
        )


def tensorrt_ready() -> bool:
    """Whether TensorRT engines can run here: tensorrt importable and a CUDA GPU visible."""
    return importlib.util.find_spec("tensorrt") is not None and bool(cuda_device_count())


class TensorRTRunner:
    """A serialized TensorRT engine run with ``execute_async_v3`` on a CUDA stream.

    Device buffers, the stream and the copies are cuda-python's (no torch). Untested on this
    project's CI machine (no GPU, no TensorRT); written against TensorRT's named-tensor API.
    """

    runtime: Runtime = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path) -> None:
        path = Path(path)
        trt = import_tensorrt()
        self._cudart = import_cudart(f"running {path.name}")
        require_cuda(f"running {path.name}")
        self.path = path
        self._trt = trt
        self._runtime = trt.Runtime(tensorrt_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(
                f"TensorRT {trt.__version__} cannot load {path.name}: engines only run on the GPU model and "
                f"TensorRT version that built them; rebuild it on this machine with build_engine.sh from the export"
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda_call(self._cudart, self._cudart.cudaStreamCreate(), "creating a stream")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.providers = [f"TensorRT {trt.__version__}"]
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name`` (grown for a larger batch), bound to it."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                cuda_call(self._cudart, self._cudart.cudaFree(ptr), "freeing GPU memory")
            ptr = cuda_call(self._cudart, self._cudart.cudaMalloc(nbytes), f"allocating {nbytes} bytes on the GPU")
            self._buffers[name] = (ptr, nbytes)
        self.context.set_tensor_address(name, ptr)
        return ptr

    def _copy(self, dst: int, src: int, nbytes: int, to_gpu: bool) -> None:
        kinds = self._cudart.cudaMemcpyKind
        kind = kinds.cudaMemcpyHostToDevice if to_gpu else kinds.cudaMemcpyDeviceToHost
        cuda_call(self._cudart, self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream),
                  f"copying {nbytes} bytes {'to' if to_gpu else 'from'} the GPU")

    def _bind(self, x: np.ndarray) -> Outputs:
        """Copy ``x`` to the GPU, set the shapes and addresses; host arrays for the outputs to land in.

        Raises:
            ModelError: the engine does not take this input shape.
        """
        (name,) = self.inputs
        x = np.ascontiguousarray(x, dtype=self._dtype(name))
        if not self.context.set_input_shape(name, tuple(x.shape)):
            raise ModelError(
                f"{self.path.name} does not take input shape {tuple(x.shape)}: it is outside the optimisation "
                f"profile the engine was built with; bench it at a batch within that profile, or rebuild it with "
                f"build_engine.sh"
            )
        self._copy(self._device_buffer(name, x.nbytes), x.ctypes.data, x.nbytes, to_gpu=True)
        outs = {}
        for out in self.outputs:  # output shapes are known once every input shape is set
            outs[out] = np.empty(tuple(self.context.get_tensor_shape(out)), dtype=self._dtype(out))
            self._device_buffer(out, max(outs[out].nbytes, 1))
        return outs

    def _execute(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise ModelError("TensorRT could not run the engine; rerun with -v for TensorRT's log")

    def _synchronize(self) -> None:
        cuda_call(self._cudart, self._cudart.cudaStreamSynchronize(self.stream), "waiting for the GPU")

    def __call__(self, x: np.ndarray) -> Outputs:
        outs = self._bind(x)
        self._execute()
        for name, host in outs.items():
            self._copy(host.ctypes.data, self._buffers[name][0], host.nbytes, to_gpu=False)
        self._synchronize()
        return {k: v.astype(np.float32, copy=False) for k, v in outs.items()}

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        self._bind(x)
        self._synchronize()  # the input is on the GPU before the first timed run

        def run() -> None:
            self._execute()
            self._synchronize()

        return run

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            cuda_call(self._cudart, self._cudart.cudaFree(ptr), "freeing GPU memory")
        self._buffers.clear()
        if self.stream is not None:
            cuda_call(self._cudart, self._cudart.cudaStreamDestroy(self.stream), "destroying a stream")
            self.stream = None
