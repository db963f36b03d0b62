"""The ONNX Runtime runner and the execution providers it is given, best first, the CPU always last.

On a GPU the providers are configured per variant (:func:`provider_options`): TensorRT's gets the
precision flags its graph needs (fp16; int8 with fp16 for a Q/DQ graph, which TensorRT builds only with
int8 on), engine and timing caches in a folder beside the model, and the optimisation profile's
min/opt/max shapes; CUDA's gets the device. The timed loop on a GPU keeps its input and outputs on the
device (IOBinding), so that its figure holds no host/device copy, as trtexec's ``--noDataTransfers``
does not; :data:`TIMED_ON_DEVICE` says what it includes. These GPU paths are written against ONNX
Runtime's provider-option names and IOBinding API and checked here against a fake of onnxruntime
(tests/test_runtimes.py); this project's CI machine has no GPU build of onnxruntime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leapkit.errors import MissingDependency, ModelError
from leapkit.runtimes.base import Outputs
from leapkit.types import Runtime

log = logging.getLogger(__name__)

TENSORRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
CACHE_DIR = "ort_trt_cache"
"""Beside the model: ONNX Runtime's TensorRT engines (one folder per model) and its timing cache. They hold
engines for this machine's GPU and TensorRT: they are never part of a deploy bundle."""

TIMED_ON_DEVICE = ("device-resident I/O (IOBinding): the GPU's compute and ONNX Runtime's launch overhead, no "
                   "host/device copy; compare it with trtexec's GPU compute time, which has no launch overhead")

ProviderSpec = str | tuple[str, dict[str, Any]]


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


def _shape(name: str, dims: Sequence[int]) -> str:
    return f"{name}:{'x'.join(str(d) for d in dims)}"


def graph_input(model: Path) -> tuple[str, list[int | str]]:
    """The name and shape of the ONNX graph's first input (a free dimension is its name, e.g. ``batch``).

    Raises:
        ModelError: the file is not a valid ONNX model.
    """
    import onnx

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(f"{model} is not a valid ONNX file ({type(e).__name__}); re-export it with `leapkit export`") \
            from e
    value = graph.input[0]
    dims = value.type.tensor_type.shape.dim
    return value.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def tensorrt_options(model: Path, batch: int, device_id: int = 0) -> dict[str, Any]:
    """ONNX Runtime's TensorRT provider options for one exported variant.

    Args:
        model: the ONNX file; its precision (file name, else graph) picks the builder flags, and its folder
            holds the caches (``ort_trt_cache/``: engines per model, one timing cache).
        batch: the batch the bench runs: the optimisation profile's opt and max (min 1), where the graph's
            batch is free.
        device_id: the CUDA device.
    """
    from leapkit.deploy.graph_precision import graph_precision

    precision = graph_precision(model)
    options: dict[str, Any] = {
        "device_id": device_id,
        # a Q/DQ graph builds only with int8 on; fp16 lets TensorRT run the layers left out of int8 in fp16,
        # as trtexec --int8 --fp16 (the bundle's build flags before TensorRT 10) does
        "trt_fp16_enable": precision in ("fp16", "int8"),
        "trt_int8_enable": precision == "int8",
    }
    cache = model.parent / CACHE_DIR
    try:
        (cache / model.stem).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("no TensorRT engine cache for %s (%s): ONNX Runtime builds its engine at every start",
                    model.name, e.strerror or e)
    else:
        options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / model.stem),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    name, shape = graph_input(model)
    if len(shape) == 4 and not isinstance(shape[0], int):
        chw = shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in chw):
            log.warning("%s has free image dimensions %s: ONNX Runtime's TensorRT provider picks its own profile",
                        model.name, shape)
        else:
            options |= {"trt_profile_min_shapes": _shape(name, [1, *chw]),
                        "trt_profile_opt_shapes": _shape(name, [batch, *chw]),
                        "trt_profile_max_shapes": _shape(name, [batch, *chw])}
    return options


def provider_options(providers: Sequence[str], model: Path, batch: int) -> list[ProviderSpec]:
    """``providers`` with their options for this variant: TensorRT's per precision, CUDA's device; CPU as it is."""
    specs: list[ProviderSpec] = []
    for name in providers:
        if name == TENSORRT_EP:
            specs.append((name, tensorrt_options(model, batch)))
        elif name == CUDA_EP:
            specs.append((name, {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE"}))
        else:
            specs.append(name)
    return specs


def device_resident_run(session: Any, input_name: str, output_names: Sequence[str], x: np.ndarray,
                        device_type: str = "cuda", device_id: int = 0) -> Callable[[], None]:
    """One inference on ``x`` with its input and outputs on ``device_type`` (IOBinding): no copy in the loop.

    The input is copied to the device once, here; the first run allocates the outputs there, and every
    later run writes into those same buffers. ``run_with_iobinding`` returns once the device is done.
    """
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x, device_type, device_id))
    for name in output_names:
        binding.bind_output(name, device_type, device_id)
    session.run_with_iobinding(binding)
    for name, value in zip(output_names, binding.get_outputs(), strict=True):
        binding.bind_ortvalue_output(name, value)

    def run() -> None:
        session.run_with_iobinding(binding)

    run.binding = binding  # type: ignore[attr-defined]  # the outputs stay readable (copy_outputs_to_cpu)
    return run


class OrtRunner:
    """An ONNX model in ONNX Runtime: all graph optimisations, sequential, explicit thread counts.

    Args:
        path: the ONNX file.
        threads: intra-op threads (None: up to 4).
        providers: execution provider names, best first (:func:`ort_providers`); GPU ones get this
            variant's options (:func:`provider_options`).
        spin: let idle intra-op threads spin (lower latency, busy cores).
        batch: the largest batch this runner will be given: the TensorRT provider's profile.
    """

    runtime: Runtime = "onnxruntime"

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        providers: Sequence[str] = (CPU_EP,),
        spin: bool = True,
        batch: int = 1,
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
        path = Path(path)
        specs = provider_options(providers, path, batch) if set(providers) - {CPU_EP} else list(providers)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=specs)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            reason = str(e).splitlines()[0]
            raise ModelError(
                f"ONNX Runtime cannot load {path.name}: {reason}; re-export it with `leapkit export`"
            ) from e
        self.path = path
        self.providers = self.session.get_providers()
        self.device = "cpu" if self.providers[0] == CPU_EP else "cuda"
        self.timing = TIMED_ON_DEVICE if self.device == "cuda" else None
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
        """One inference on ``x``; on a GPU with input and outputs kept on the device (:data:`TIMED_ON_DEVICE`)."""
        feed = {self.input.name: np.ascontiguousarray(x).astype(self.input_dtype, copy=False)}
        if self.device == "cuda":
            return device_resident_run(self.session, self.input.name, self.output_names, feed[self.input.name])

        def run() -> None:
            self.session.run(None, feed)

        return run

    def close(self) -> None:
        del self.session
