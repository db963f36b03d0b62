"""A fingerprint of the machine and software a measurement came from: CPU, GPU, Jetson, versions.

Every bench report records it under ``environment``; the benchmarks/ scripts record it too.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from leapkit import __version__
from leapkit.latency.timing import usable_cores

# SIMD features that decide which kernels ONNX Runtime and torch pick (x86 and Arm names).
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd",
              "asimddp", "fphp", "i8mm")


def _read(path: str | Path) -> str | None:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return None


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (x86 ``model name``, Arm ``Hardware``/``Model``)."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features of :data:`_CPU_FLAGS` that this CPU reports."""
    info = _read("/proc/cpuinfo") or ""
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", info, re.M)
    have = set(m.group(2).split()) if m else set()
    return [f for f in _CPU_FLAGS if f in have]


def jetson_info() -> dict[str, Any] | None:
    """Module, L4T release, power mode and clocks of a Jetson; None on any other machine."""
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    info: dict[str, Any] = {"model": model.rstrip("\x00") if model else None,
                            "l4t": release.splitlines()[0] if release else None}
    status = _read("/var/lib/nvpmodel/status")  # e.g. "pmode:0002 fmode:..."
    m = re.search(r"pmode:(\d+)", status or "")
    if m:
        mode_id = int(m.group(1))
        info["power_mode_id"] = mode_id
        conf = _read("/etc/nvpmodel.conf") or ""
        names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)}
        info["power_mode"] = names.get(mode_id)
    for path in sorted(Path("/sys/class/devfreq").glob("*")):
        if "gpu" in path.name or "ga10b" in path.name or "gv11b" in path.name:
            cur, top = _read(path / "cur_freq"), _read(path / "max_freq")
            info["gpu_freq_mhz"] = int(cur) / 1e6 if cur and cur.isdigit() else None
            info["gpu_max_freq_mhz"] = int(top) / 1e6 if top and top.isdigit() else None
    cpu = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    info["cpu0_freq_mhz"] = int(cpu) / 1e3 if cpu and cpu.isdigit() else None
    return info


def driver_version(proc_text: str) -> str | None:
    """The NVIDIA driver version from /proc/driver/nvidia/version's NVRM line.

    Both forms occur: "... Kernel Module  580.95.05  ..." and, for the open modules,
    "... Open Kernel Module for x86_64  580.159.04  ...".
    """
    m = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)*)\s", proc_text + " ")
    return m.group(1) if m else None


def gpu_info() -> dict[str, Any] | None:
    """Name, compute capability, memory, CUDA and driver version of GPU 0; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info: dict[str, Any] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                            "memory_gb": round(props.total_memory / 1e9, 1), "cuda": torch.version.cuda}
    info["driver"] = driver_version(_read("/proc/driver/nvidia/version") or "")
    if info["driver"] is None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return info


def environment() -> dict[str, Any]:
    """A fingerprint of the machine and software a measurement came from (JSON-ready)."""
    env: dict[str, Any] = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": usable_cores(),
        "cpu_flags": cpu_flags(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "tensorrt": package_version("tensorrt") or package_version("tensorrt-cu12") or package_version("tensorrt_lean"),
        "leapkit": __version__,
        "gpu": gpu_info(),
        "jetson": jetson_info(),
    }
    with contextlib.suppress(ImportError):  # onnxruntime is a core dependency; a trimmed install may lack it
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    return env
