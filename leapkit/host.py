"""This machine: its CPU features, whether it is a Jetson, its CUDA GPUs, and the torch device a stage runs on.

Every question about the host the code runs on is answered here, once: the CPU's features and the
one that gives bf16 arithmetic (/proc/cpuinfo), a Jetson (L4T's release file) and the CUDA its JetPack
ships, the CUDA GPUs (cuda-python, so that a Jetson venv with a CPU build of torch still sees its GPU;
its errors named with the driver's and runtime's CUDA versions), the torch device ``--device NAME``
means, the precision training takes on it and a GPU's peak for MFU. torch and cuda-python are imported
only by the functions that need them: the TensorRT runner uses this module without torch.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leapkit.errors import ConfigError, MissingDependency
from leapkit.types import Amp

if TYPE_CHECKING:
    import torch

CPU_INFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
JETSON_RELEASE = Path("/etc/nv_tegra_release")  # L4T's release file: present on every Jetson
# The CUDA each JetPack release ships (NVIDIA's JetPack release notes): the `jetson` extra pins cuda-python to it.
JETPACK_CUDA: dict[str, str] = {"6.0": "12.2", "6.1": "12.6", "6.2": "12.6"}

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


class CudaError(ConfigError):
    """A CUDA runtime call failed: the message names CUDA's error and the driver's and runtime's CUDA versions."""


def _cuda_version(value: int) -> str:
    """``12060`` -> ``12.6``: CUDA's integer version as major.minor."""
    return f"{value // 1000}.{value % 1000 // 10}"


def cuda_versions(cudart: Any) -> tuple[str | None, str | None]:
    """The CUDA version the driver supports and the one cuda-python's runtime is (``12.6``); None where unknown.

    The driver's is 0 (None here) where no NVIDIA driver is installed.
    """
    versions: list[str | None] = []
    for call in (cudart.cudaDriverGetVersion, cudart.cudaRuntimeGetVersion):
        try:
            err, value = call()
        except Exception:  # cuda-python raises when it cannot load the driver library at all
            versions.append(None)
            continue
        ok = err == cudart.cudaError_t.cudaSuccess and int(value) > 0
        versions.append(_cuda_version(int(value)) if ok else None)
    return versions[0], versions[1]


def cuda_error(cudart: Any, err: Any, what: str) -> CudaError:
    """The error of a failed cudart call: CUDA's name for it, the driver's and runtime's CUDA versions, a fix."""
    try:
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # an error code this cuda-python does not know
        name = f"CUDA error {int(err)}"
    driver, runtime = cuda_versions(cudart)
    versions = f"driver supports CUDA {driver or 'unknown'}, cuda-python's runtime is CUDA {runtime or 'unknown'}"
    if name == "cudaErrorInsufficientDriver":
        fix = (f"install the cuda-python of the driver's CUDA (pip install 'leapkit[{tensorrt_extra()}]' pins "
               f"JetPack's on a Jetson) or update the driver")
    else:
        fix = "check the GPU with nvidia-smi (tegrastats on a Jetson)"
    return CudaError(f"CUDA failed {what}: {name} ({versions}); {fix}")


def cuda_call(cudart: Any, result: tuple[Any, ...], what: str) -> Any:
    """The value of a cuda-python call that returns ``(error, value...)``.

    Raises:
        CudaError: the call failed; the message names CUDA's error and the CUDA versions.
    """
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise cuda_error(cudart, err, what)
    return values[0] if len(values) == 1 else None


def cuda_device_count() -> int | None:
    """How many CUDA GPUs cuda-python sees; None when cuda-python is not installed (torch is not asked).

    No NVIDIA driver at all (a CPU machine with cuda-python installed) is 0 GPUs; any other failure is an error.

    Raises:
        CudaError: cuda-python cannot load the driver library, or cudaGetDeviceCount fails with another
            error than "no device" on a machine with a driver (e.g. a driver older than cuda-python's runtime).
    """
    try:
        cudart = import_cudart()
    except MissingDependency:
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as e:  # cuda-python raises when it cannot load the driver library at all
        raise CudaError(f"cuda-python cannot load the CUDA driver ({e}); check the driver with nvidia-smi") from e
    if err == cudart.cudaError_t.cudaSuccess:
        return int(count)
    if err == cudart.cudaError_t.cudaErrorNoDevice or cuda_versions(cudart)[0] is None:
        return 0
    raise cuda_error(cudart, err, "counting the GPUs")


def cuda_device() -> tuple[str, str]:
    """Name and compute capability (``8.7``) of CUDA device 0.

    Raises:
        MissingDependency: cuda-python is not installed.
        CudaError: no CUDA device answers.
    """
    cudart = import_cudart("naming the GPU")
    prop = cuda_call(cudart, cudart.cudaGetDeviceProperties(0), "reading the GPU's properties")
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


def require_cuda(what: str) -> None:
    """Refuse to go on without a CUDA GPU, found through cuda-python.

    Raises:
        MissingDependency: cuda-python is not installed (the extra that brings it is named).
        CudaError: cuda-python fails to count the GPUs (its error and the CUDA versions are named).
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


BF16_NATIVE_CAPABILITY = (8, 0)
"""Ampere and later compute bf16 on their tensor cores; earlier GPUs (T4, V100) only emulate it, slowly."""


def amp_dtype(amp: Amp, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training on ``device``: bf16 or fp16 on CUDA, None (float32) elsewhere or when off.

    ``auto`` takes bf16 only where it is native (compute capability 8.0 and later), else fp16, whose loss the
    trainer scales (GradScaler). ``torch.cuda.is_bf16_supported()`` is no test: it is true where bf16 is emulated.
    """
    import torch

    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and torch.cuda.get_device_capability(device) < BF16_NATIVE_CAPABILITY):
        return torch.float16
    return torch.bfloat16


def gpu_peak_tflops(device: torch.device) -> float | None:
    """The dense half-precision peak of ``device`` in TFLOP/s, or None for a CPU or an unlisted GPU."""
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_TFLOPS.items() if key in name), None)
