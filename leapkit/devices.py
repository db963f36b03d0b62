"""Where a stage runs: one resolver for every ``--device`` option, and GPU peaks for MFU."""

from __future__ import annotations

import torch

from leapkit.errors import ConfigError

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
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_TFLOPS.items() if key in name), None)
