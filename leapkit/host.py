"""This machine: its CPU features, whether it is a Jetson, its CUDA GPUs, and the torch device a stage runs on.

Every question about the host the code runs on is answered here, once: the CPU's features and the
one that gives bf16 arithmetic (/proc/cpuinfo), a Jetson (L4T's release file), the CUDA GPUs
(cuda-python, so that a Jetson venv with a CPU build of torch still sees its GPU), the torch device
``--device NAME`` means and a GPU's peak for MFU. torch and cuda-python are imported only by the
functions that need them: the TensorRT runner uses this module without torch.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leapkit.errors import ConfigError, MissingDependency, ModelError

if TYPE_CHECKING:
    import torch

CPU_INFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
JETSON_RELEASE = Path("/etc/nv_tegra_release")  # L4T's release file: present on every Jetson

# Dense bf16/fp16 tensor-core peaks (TFLOP/s) from NVIDIA's datasheets, for model FLOP utilisation.
# Longer names first: "H100 PCIe" must not match "H100".
GPU_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
}


# --- the CPU ------------------------------------------------------------------------------------


def cpu_features() -> set[str]:
    """The features the CPU reports in /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty where there is none."""
    try:
        info = CPU_INFO.read_text()
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
    if not CPU_INFO.is_file() and importlib.util.find_spec("openvino") is not None:
        import openvino

        if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "bf16 (OpenVINO)"
    return None


# --- a Jetson -----------------------------------------------------------------------------------


def is_jetson() -> bool:
    return JETSON_RELEASE.is_file()


def tensorrt_extra() -> str:
    """The extra that brings TensorRT's companions here: ``jetson`` on a Jetson (cuda-python only), else ``trt``."""
    return "jetson" if is_jetson() else "trt"


# --- CUDA GPUs, through cuda-python ----------------------------------------------------------------


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


# --- the torch device a stage runs on ------------------------------------------------------------


def resolve_device(name: str | torch.device, local_rank: int | None = None) -> torch.device:
    """The torch device that ``--device NAME`` means, checked to exist on this machine.

    Args:
        name: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or any
            other torch device string.
        local_rank: under torchrun, this process's GPU: ``cuda`` and ``auto`` become
            ``cuda:<local_rank>``.

    Raises:
        ConfigError: the name is not a device, or names a GPU this machine does not have.
    """
    import torch

    text = str(name)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise ConfigError(f"unknown device '{text}'; use auto, cpu, cuda or cuda:N") from e
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{text}' requested but CUDA is not available; use --device cpu")
    if device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device '{device}' requested but this machine has {count} CUDA device(s); use cuda:0 to cuda:{count - 1}"
        )
    return device


def gpu_peak_tflops(device: torch.device) -> float | None:
    """The dense half-precision peak of ``device`` in TFLOP/s, or None for a CPU or an unlisted GPU."""
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_TFLOPS.items() if key in name), None)
