"""The TensorRT runner (a serialized engine through cuda-python, no torch) and tensorrt's import and logger.

Written against TensorRT's named-tensor API (``set_input_shape``, ``execute_async_v3``, 8.5 and
later) with cuda-python for device buffers, the stream and the copies: on a Jetson it runs with
JetPack's TensorRT and a torch without CUDA. The GPU is found through :mod:`leapkit.host`. The
runner has not run on this project's CI machine, which has neither TensorRT nor a GPU; its use of
the TensorRT and cudart APIs is checked there against fakes (tests/test_runtimes.py).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from leapkit.errors import MissingDependency, ModelError
from leapkit.host import cuda_call, cuda_device_count, import_cudart, is_jetson, require_cuda
from leapkit.runtimes.base import Outputs
from leapkit.types import Runtime


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


def tensorrt_installed() -> bool:
    """Whether the tensorrt package is installed (pip's wheel, or JetPack's), without importing it."""
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_ready() -> bool:
    """Whether TensorRT engines can run here: tensorrt importable and a CUDA GPU visible."""
    return tensorrt_installed() and bool(cuda_device_count())


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
        self.timing = ("device-resident I/O: execute_async_v3 on an input staged once and a stream synchronize, no "
                       "host/device copy; compare it with trtexec's GPU compute time, which has no launch overhead")
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
