"""A fingerprint of the machine and software a measurement came from, and whether that machine is the target.

Every bench report records the fingerprint under ``environment`` (``bf16``: the CPU feature that
gives bf16 arithmetic, or null; ``openvino``: its version when installed); the benchmarks/ scripts
record it too. :func:`target_match` compares it with a profile's ``device_match`` patterns: a host whose
device-tree model, GPU name, CPU model or architecture one of them finds *is* the target, and
only its timings are measurements of the target.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from leapkit import __version__
from leapkit.host import cpu_bf16, cpu_features
from leapkit.latency.timing import usable_cores

if TYPE_CHECKING:
    from leapkit.profiles import TargetProfile

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
    have = cpu_features()
    return [f for f in _CPU_FLAGS if f in have]


def device_tree_model() -> str | None:
    """The board's name from /proc/device-tree/model (Jetson, Raspberry Pi, other Arm boards), or None."""
    model = _read("/proc/device-tree/model")
    return model.rstrip("\x00").strip() or None if model else None


def jetson_info() -> dict[str, Any] | None:
    """Module, L4T release, power mode and clocks of a Jetson; None on any other machine."""
    release = _read("/etc/nv_tegra_release")
    model = device_tree_model()
    if release is None and not (model and "jetson" in model.lower()):
        return None
    info: dict[str, Any] = {"model": model, "l4t": release.splitlines()[0] if release else None}
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
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info: dict[str, Any] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                                "memory_gb": round(props.total_memory / 1e9, 1), "cuda": torch.version.cuda}
    else:  # a Jetson venv: JetPack's TensorRT and cuda-python beside a CPU build of torch
        from leapkit.host import cuda_device, cuda_device_count

        if not cuda_device_count():
            return None
        name, capability = cuda_device()
        info = {"name": name, "compute_capability": capability, "memory_gb": None, "cuda": None}
    info["driver"] = driver_version(_read("/proc/driver/nvidia/version") or "")
    if info["driver"] is None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return info


def gpu_names() -> list[str]:
    """The names of the NVIDIA GPUs here: torch's CUDA devices, else nvidia-smi's (a CPU-only torch)."""
    if torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return []


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
        "bf16": cpu_bf16(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "openvino": package_version("openvino"),
        "tensorrt": package_version("tensorrt") or package_version("tensorrt-cu12") or package_version("tensorrt_lean"),
        "leapkit": __version__,
        "gpu": gpu_info(),
        "gpu_names": gpu_names(),
        "device_model": device_tree_model(),
        "jetson": jetson_info(),
    }
    with contextlib.suppress(ImportError):  # onnxruntime is a core dependency; a trimmed install may lack it
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    return env


def host_names(env: dict[str, Any]) -> list[str]:
    """What identifies a machine, most specific first: device-tree model, GPU names, CPU model, architecture."""
    names = [env.get("device_model"), *(env.get("gpu_names") or []), env.get("cpu"), env.get("machine")]
    return [n for n in names if n]


def describe_host(env: dict[str, Any]) -> str:
    """``vm (AMD EPYC, x86_64)``: the host name and what identifies it, for labels and reasons."""
    names = host_names(env)
    return f"{env.get('host') or 'this host'} ({', '.join(dict.fromkeys(names)) or 'unknown hardware'})"


@dataclass
class TargetMatch:
    """Whether a machine is the target, and why, in one line.

    Args:
        is_target: one of the profile's ``device_match`` patterns names the machine.
        reason: the name that matched, or what was compared.
        host: the machine (:func:`describe_host`).
    """

    is_target: bool
    reason: str
    host: str


def target_match(profile: TargetProfile, env: dict[str, Any]) -> TargetMatch:
    """Whether the machine ``env`` describes is ``profile``'s device (see :meth:`TargetProfile.matches`).

    Args:
        profile: the target.
        env: a fingerprint from :func:`environment` (or a device's, with the same keys).
    """
    host = describe_host(env)
    if not profile.device_match:
        return TargetMatch(False, f"the profile {profile.name} has no device_match to recognise its device by", host)
    name = profile.matches(host_names(env))
    patterns = " or ".join(repr(p) for p in profile.device_match)
    if name:
        return TargetMatch(True, f"this host is {profile.name}: '{name}' matches {patterns}", host)
    return TargetMatch(False, f"nothing on {host} matches {patterns}", host)
