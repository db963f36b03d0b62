"""Measure one artefact: load it in its runtime, pick its thread count, time it, and record the result.

The runners are :mod:`leapkit.runtimes`' (one protocol for PyTorch, ONNX Runtime, OpenVINO and TensorRT);
each is timed through ``runner.timed(x)`` on one fixed random input, staged once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from leapkit.errors import MissingDependency
from leapkit.latency.artifacts import Artifact
from leapkit.latency.cost import Cost, onnx_cost
from leapkit.latency.records import BenchResult
from leapkit.latency.timing import (
    NOISY_CV,
    PROBE_S,
    PROBE_WARMUP_S,
    Method,
    latency_stats,
    peak_rss_mb,
    reset_peak_rss,
    time_runner,
)
from leapkit.runtimes.base import Runner
from leapkit.runtimes.openvino_runner import OpenVINORunner
from leapkit.runtimes.ort_runner import OrtRunner
from leapkit.runtimes.tensorrt_runner import TensorRTRunner
from leapkit.runtimes.torch_runner import TorchRunner
from leapkit.threads import torch_threads

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def _engine_input_shape(runner: TensorRTRunner, batch: int, img_size: int | None) -> list[int]:
    (name,) = runner.inputs
    dims = list(runner.engine.get_tensor_shape(name))
    return [batch if i == 0 and d == -1 else img_size if d == -1 and img_size else d for i, d in enumerate(dims)]


def load_runner(art: Artifact, method: Method, threads: int, student: nn.Module | None) -> Runner:
    """The runtime's runner for ``art`` (the PyTorch student on ``method.device``)."""
    if art.format == "pytorch":
        assert student is not None, "a pytorch artifact comes with the run's student"
        return TorchRunner(student, device=method.device, compile=method.compile)
    assert art.path is not None
    if art.format == "onnx":
        return OrtRunner(art.path, threads, method.providers, batch=method.batch)
    if art.format == "openvino":
        return OpenVINORunner(art.path, threads, hint=art.hint)  # the hint the export checked it with
    return TensorRTRunner(art.path)


def input_shape(runner: Runner, art: Artifact, batch: int, img_size: int | None) -> list[int]:
    """The (B, 3, H, W) input to time ``runner`` on; a model with a fixed batch is timed at that batch.

    Raises:
        ModelError: an ONNX input keeps a free dimension.
    """
    if isinstance(runner, (OrtRunner, OpenVINORunner)):
        shape = runner.input_shape(batch, img_size)
        if shape[0] != batch:
            log.warning("%s has a fixed batch of %d; benchmarking at that batch instead of %d",
                        art.name, shape[0], batch)
        return shape
    if isinstance(runner, TensorRTRunner):
        return _engine_input_shape(runner, batch, img_size)
    assert img_size is not None, "the PyTorch student runs at its training resolution"
    return [batch, 3, img_size, img_size]


def random_input(shape: list[int]) -> np.ndarray:
    """The fixed input every format is timed on."""
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def probe_threads(art: Artifact, method: Method, img_size: int | None, student: nn.Module | None) -> dict[str, float]:
    """p50 latency (ms) of a short run at each of ``method.thread_candidates``, keyed by the count.

    Empty for GPU runners, whose latency the CPU thread count does not set.
    """
    probe: dict[str, float] = {}
    for n in method.thread_candidates:
        with torch_threads(n):
            runner = load_runner(art, method, n, student)
            try:
                if runner.device.startswith("cuda"):
                    return {}
                x = random_input(input_shape(runner, art, method.batch, img_size))
                probe[str(n)] = float(np.median(time_runner(runner.timed(x), PROBE_WARMUP_S, None, PROBE_S)))
            finally:
                runner.close()
    return probe


def _roofline_cost(art: Artifact, shape: list[int], cost: Cost | None) -> Cost | None:
    """The cost of ``art`` at its input: the student's FLOPs (attention included) where the sizes match."""
    if art.format == "pytorch":
        return cost
    same_size = cost is not None and shape[-1] == cost.img_size
    if art.format == "onnx":
        assert art.path is not None
        graph = onnx_cost(art.path, shape[0])
        if cost is None or not same_size:
            return graph
        return Cost(cost.flops, graph.params, graph.io_elements, cost.source, cost.img_size)
    return cost if same_size else None


def measure(
    art: Artifact, method: Method, img_size: int | None, student: nn.Module | None = None, cost: Cost | None = None
) -> tuple[BenchResult, Cost | None]:
    """Measure one format. A format that fails to run is recorded with its error, not raised.

    Args:
        art: what to run.
        method: how to measure.
        img_size: input size for the PyTorch student, and for ONNX inputs with free spatial dims.
        student: the PyTorch student, for ``pytorch`` artifacts.
        cost: the PyTorch student's cost (at ``cost.img_size``), reused for files of that size.

    Returns:
        The result, and the cost for its lower bound (FLOPs of ``cost`` when the file has its input
        size, else counted from the ONNX graph; weights and inputs/outputs of the file).

    Raises:
        MissingDependency: the runtime is not installed.
    """
    result = BenchResult(
        runtime=art.runtime, format=art.format, precision=art.precision, batch=method.batch,
        file=str(art.path) if art.path else None, threads=method.threads, size_mb=art.size_mb, accuracy=art.accuracy,
        export_status=art.status, compiled=method.compile if art.format == "pytorch" else None,
    )
    used: Cost | None = cost if art.format == "pytorch" else None
    try:
        if method.thread_candidates and art.format != "engine":
            probe = probe_threads(art, method, img_size, student)
            if probe:
                result.threads = int(min(probe, key=probe.__getitem__))
                result.thread_probe_p50_ms = probe
        with torch_threads(result.threads):
            runner = load_runner(art, method, result.threads, student)
            shape = input_shape(runner, art, method.batch, img_size)
            result.batch = shape[0]
            used = _roofline_cost(art, shape, cost)
            result.device, result.providers, result.input_shape = runner.device, list(runner.providers), shape
            result.timing = getattr(runner, "timing", None)  # what a GPU figure includes
            run = runner.timed(random_input(shape))
            reset_peak_rss()
            # torch's allocator holds only the PyTorch student's memory; ONNX Runtime and TensorRT on a GPU run
            # beside a torch that may have no CUDA at all (a Jetson venv)
            torch_on_gpu = runner.device.startswith("cuda") and art.format == "pytorch"
            if torch_on_gpu:
                torch.cuda.reset_peak_memory_stats()
            samples = time_runner(run, method.warmup_s, method.iterations, method.duration_s)
            runner.close()
    except MissingDependency:
        raise
    except Exception as e:  # one format failing must not hide the others
        log.warning("%s failed: %s", art.name, e)
        result.status = f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        return result, used
    stats: dict[str, Any] = latency_stats(samples, result.batch)
    for key, value in stats.items():
        setattr(result, key, value)
    result.noisy = stats["cv"] > NOISY_CV
    result.peak_rss_mb = peak_rss_mb()
    result.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if torch_on_gpu else None
    if used is not None:
        result.achieved_tflops = used.flops / (stats["p50_ms"] / 1e3) / 1e12
    return result, used
