"""One Runner protocol over the three runtimes leapkit drives: PyTorch, ONNX Runtime and TensorRT.

Every runner answers two questions about the same exported backbone:

    runner(x) -> {"tokens": ..., "cls": ..., "patch_tokens": ...}   outputs of one batch, as numpy
    runner.timed(x) -> fn                                            fn() runs one inference on x,
                                                                      staged once, for the timer

Export uses the first (parity, accuracy), bench the second (latency). The TensorRT runner is
written against the TensorRT 10 Python API (named I/O tensors, ``execute_async_v3``) with torch
CUDA tensors as device buffers; it has not run on this project's CI machine, which has neither
TensorRT nor a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from leapkit.errors import ConfigError, MissingDependency, ModelError
from leapkit.types import Runtime

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


class Backbone(nn.Module):
    """The student's ``forward_features`` with the three documented outputs (what ONNX exports)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.model.forward_features(images)
        return tokens, tokens[:, 0], tokens[:, self.num_prefix_tokens:]


def batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


def run_batched(runner: Callable[[np.ndarray], Outputs], images: np.ndarray, batch_size: int = 32) -> Outputs:
    """The outputs of ``images`` run ``batch_size`` at a time, concatenated."""
    parts = [runner(x) for x in batches(images, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class TorchRunner:
    """PyTorch eager (or torch.compile) under inference_mode, on the CPU or a CUDA device."""

    runtime: Runtime = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", compile: bool = False) -> None:
        self.device = device
        self.providers = [f"torch {torch.__version__} ({device})"]
        self.module = Backbone(model).eval().to(device)
        self.forward: Callable[[torch.Tensor], Any] = torch.compile(self.module) if compile else self.module

    def __call__(self, x: np.ndarray) -> Outputs:
        with torch.inference_mode():
            outs = self.forward(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return {name: o.float().cpu().numpy() for name, o in zip(OUTPUT_NAMES, outs, strict=True)}

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        def run() -> None:
            with torch.inference_mode():
                self.forward(xt)
            _synchronize(self.device)

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


def import_tensorrt(purpose: str = "running a TensorRT engine") -> Any:
    """The tensorrt module, or MissingDependency naming the extra that brings it."""
    try:
        import tensorrt
    except ImportError as e:
        raise MissingDependency("tensorrt", "trt", purpose) from e
    return tensorrt


def tensorrt_logger(trt: Any) -> Any:
    """TensorRT's logger at INFO when leapkit logs at DEBUG (-v), else at WARNING."""
    verbose = logging.getLogger("leapkit").isEnabledFor(logging.DEBUG)
    return trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)


def require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{what} needs a CUDA GPU and none is visible here; run it on the device the engine was built on"
        )


class TensorRTRunner:
    """A serialized TensorRT engine run with ``execute_async_v3`` on a CUDA stream.

    Untested on this project's CI machine (no GPU, no TensorRT); written against TensorRT 10's API.
    """

    runtime: Runtime = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path) -> None:
        trt = import_tensorrt()
        require_cuda(f"running {path.name}")
        self._trt = trt
        self._runtime = trt.Runtime(tensorrt_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ModelError(
                f"TensorRT {trt.__version__} cannot load {Path(path).name}: engines only run on the GPU model and "
                f"TensorRT version that built them; rebuild it on this machine with build_engine.sh from the export"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.providers = [f"TensorRT {trt.__version__}"]

    def _dtype(self, name: str) -> torch.dtype:
        np_dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
        return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype

    def _bind(self, x: np.ndarray) -> dict[str, torch.Tensor]:
        (name,) = self.inputs
        xt = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self._dtype(name))
        self.context.set_input_shape(name, tuple(xt.shape))
        self.context.set_tensor_address(name, xt.data_ptr())
        buffers = {name: xt}
        for out in self.outputs:  # output shapes are known once every input shape is set
            buffers[out] = torch.empty(tuple(self.context.get_tensor_shape(out)), dtype=self._dtype(out), device="cuda")
            self.context.set_tensor_address(out, buffers[out].data_ptr())
        return buffers

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ModelError("TensorRT could not run the engine; rerun with -v for TensorRT's log")
        self.stream.synchronize()

    def __call__(self, x: np.ndarray) -> Outputs:
        buffers = self._bind(x)
        self._execute()
        return {k: buffers[k].float().cpu().numpy() for k in self.outputs}

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        buffers = self._bind(x)  # kept alive by the closure: the context holds their addresses

        def run() -> None:
            assert buffers
            self._execute()

        return run

    def close(self) -> None:
        pass
