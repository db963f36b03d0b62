"""The ONNX Runtime runner and the execution providers it is given, best first, the CPU always last."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from leapkit.errors import MissingDependency, ModelError
from leapkit.runtimes.base import Outputs
from leapkit.types import Runtime


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
