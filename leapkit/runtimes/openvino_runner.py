"""The OpenVINO runner (an IR or ONNX file on the CPU, explicit threads and precision hint) and openvino's import.

OpenVINO's own default precision is bf16 wherever the CPU has it: the runner always passes a hint,
the one the export stored in the IR's ``runtime_options`` unless told otherwise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from leapkit.errors import MissingDependency, ModelError
from leapkit.runtimes.base import Outputs
from leapkit.runtimes.signal_stack import keep_signal_stack
from leapkit.types import OpenVINOHint, Runtime

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
