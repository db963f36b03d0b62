"""Write the fingerprint of the device a bench run came from, as JSON.

Usage: python3 device_info.py OUT.json [--trtexec-log LOG] [--trtexec PATH] [--target NAME]
           [--tensorrt-expected V] [--jetpack-expected V] [--precision P] [--engine FILE] [--batch N]

Records the Jetson module (/proc/device-tree/model), its L4T release, JetPack package, power
mode and clocks (GPU and CPU from sysfs, EMC from debugfs where readable, and whether
jetson_clocks locked them), the GPU name from nvidia-smi where there is one, the TensorRT version
and device trtexec printed in LOG, the host name and the date. Reads only: it never changes the
power mode or the clocks.
"""
# Copied into every TensorRT deploy bundle and run on the device by bench_engine.sh (python3 >= 3.8,
# the standard library only): leapkit need not be installed there.
import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().strip().rstrip("\x00")
    except OSError:
        return None


def _run(*cmd):
    """The stripped stdout of ``cmd``, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def l4t_release(line):
    """``36.4.3`` from /etc/nv_tegra_release's ``# R36 (release), REVISION: 4.3, ...``."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", line or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def power_mode():
    """(id, name) of the nvpmodel mode in use, from nvpmodel's status file or ``nvpmodel -q``."""
    mode_id, name = None, None
    m = re.search(r"pmode:(\d+)", _read("/var/lib/nvpmodel/status") or "")
    if m:
        mode_id = int(m.group(1))
        conf = _read("/etc/nvpmodel.conf") or ""
        names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)}
        name = names.get(mode_id)
    query = _run("nvpmodel", "-q") if name is None else None
    if query:
        m = re.search(r"NV Power Mode:\s*(\S+)", query)
        name = m.group(1) if m else name
        ids = re.findall(r"^\s*(\d+)\s*$", query, re.M)
        mode_id = int(ids[-1]) if ids and mode_id is None else mode_id
    return mode_id, name


# The GPU's devfreq node: <addr>.gpu (Nano, JetPack 6), <addr>.gv11b (Xavier), <addr>.ga10b (Orin, JetPack 5)
_GPU_DEVFREQ = re.compile(r"\.(gpu|gv11b|ga10b|gp10b|gm20b)$")
# The EMC clock in Hz: the BPMP's (Xavier, Orin) or the kernel's (Nano, TX2) debugfs; root only
_EMC_RATE = ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "sys/kernel/debug/clk/emc/clk_rate")
_EMC_MAX = ("sys/kernel/debug/bpmp/debug/clk/emc/max_rate",)


def _number(root, *paths):
    """The first of ``paths`` under ``root`` that holds an integer, or None."""
    for path in paths:
        text = _read(os.path.join(root, path))
        if text and text.split()[0].isdigit():
            return int(text.split()[0])
    return None


def _mhz(value, per_mhz):
    return round(value / per_mhz, 1) if value is not None else None


def clocks(root="/"):
    """GPU, EMC and CPU clocks in MHz and whether they are locked at their maximum, as ``jetson_clocks`` does.

    The GPU's devfreq node gives its clock and range (jetson_clocks sets its minimum to its maximum), CPU 0's
    cpufreq its range (likewise), the EMC's debugfs node its clock (readable by root only: None otherwise).
    ``clocks_locked`` is True when every readable one is pinned at its maximum, None when none is readable.
    """
    gpu = next((d for d in sorted(glob.glob(os.path.join(root, "sys/class/devfreq/*"))) if _GPU_DEVFREQ.search(d)),
               None)
    gpu_hz = [_number(gpu, name) if gpu else None for name in ("cur_freq", "min_freq", "max_freq")]
    cpu = "sys/devices/system/cpu/cpu0/cpufreq"
    cpu_khz = [_number(root, f"{cpu}/{name}") for name in ("scaling_cur_freq", "scaling_min_freq", "cpuinfo_max_freq")]
    emc_hz, emc_max_hz = _number(root, *_EMC_RATE), _number(root, *_EMC_MAX)
    gpu_locked = gpu_hz[1] == gpu_hz[2] if None not in gpu_hz[1:] else None
    cpu_locked = cpu_khz[1] == cpu_khz[2] if None not in cpu_khz[1:] else None
    emc_locked = emc_hz == emc_max_hz if None not in (emc_hz, emc_max_hz) else None
    known = [x for x in (gpu_locked, cpu_locked, emc_locked) if x is not None]
    return {
        "gpu_mhz": _mhz(gpu_hz[0], 1e6), "gpu_min_mhz": _mhz(gpu_hz[1], 1e6), "gpu_max_mhz": _mhz(gpu_hz[2], 1e6),
        "cpu_mhz": _mhz(cpu_khz[0], 1e3), "cpu_min_mhz": _mhz(cpu_khz[1], 1e3), "cpu_max_mhz": _mhz(cpu_khz[2], 1e3),
        "emc_mhz": _mhz(emc_hz, 1e6), "emc_max_mhz": _mhz(emc_max_hz, 1e6),
        "gpu_locked": gpu_locked, "cpu_locked": cpu_locked, "emc_locked": emc_locked,
        "clocks_locked": all(known) if known else None,
    }


def jetson():
    """Module, L4T, JetPack package and power mode; None on a machine that is not a Jetson."""
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    mode_id, mode = power_mode()
    line = release.splitlines()[0] if release else None
    return {"model": model, "l4t": line, "l4t_release": l4t_release(line),
            "jetpack": _run("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"),
            "power_mode_id": mode_id, "power_mode": mode, "clocks": clocks()}


def gpu():
    """Name and driver of GPU 0 from nvidia-smi; None where nvidia-smi is missing or says nothing."""
    out = _run("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
    if not out:
        return None
    fields = [f.strip() for f in out.splitlines()[0].split(",")]
    return {"name": fields[0], "driver": fields[1] if len(fields) > 1 else None}


def from_trtexec_log(path):
    """The TensorRT version and the device that trtexec printed in its log."""
    text = _read(path) if path else None
    if not text:
        return None, None
    m = re.search(r"TensorRT version:\s*(\S+)", text)
    version = m.group(1) if m else None
    if version is None:
        m = re.search(r"\[TensorRT v(\d+)\]", text)
        if m:  # 8.x: v8603 = 8.6.3; 10.x on: v100300 = 10.3.0
            n = int(m.group(1))
            scale = 1000 if n < 10000 else 10000
            version = f"{n // scale}.{n % scale // 100}.{n % 100}"
    m = re.search(r"Selected Device:\s*(.+)", text)
    return version, m.group(1).strip() if m else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    for name in ("trtexec-log", "trtexec", "target", "tensorrt-expected", "jetpack-expected", "precision", "engine"):
        ap.add_argument("--" + name)
    ap.add_argument("--batch", type=int)
    a = ap.parse_args(argv)
    version, device = from_trtexec_log(a.trtexec_log)
    info = {
        "host": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "jetson": jetson(),
        "gpu": gpu(),
        "tensorrt": version,
        "trtexec_device": device,
        "trtexec": shutil.which(a.trtexec) if a.trtexec else None,
        "expected": {"target": a.target, "tensorrt": a.tensorrt_expected, "jetpack": a.jetpack_expected or None},
        "run": {"precision": a.precision, "engine": a.engine, "batch": a.batch},
    }
    with open(a.out, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
