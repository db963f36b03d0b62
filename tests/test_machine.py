"""leapkit.latency.machine: the environment fingerprint recorded beside every measurement.

What the fingerprint says of a CPU or a host is checked on fixed inputs (a cpuinfo text written
here, fingerprints written out), each against a fixed answer, never against this machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from leapkit import host
from leapkit.latency.machine import (
    describe_host,
    driver_version,
    environment,
    host_names,
    package_version,
    target_match,
)
from leapkit.profiles import load_target

JETSON = {"host": "orin", "device_model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
          "gpu_names": ["Orin"], "cpu": "ARMv8 Processor rev 1 (v8l)", "machine": "aarch64"}


def test_environment_fingerprint():
    env = environment()
    for key in ("host", "os", "machine", "cpu", "cpu_cores", "cpu_affinity", "cpu_flags", "load_avg_1m", "python",
                "torch", "onnxruntime", "tensorrt", "leapkit", "gpu", "gpu_names", "device_model", "jetson"):
        assert key in env, key
    assert env["torch"] == torch.__version__ and env["onnxruntime"] == package_version("onnxruntime")
    json.dumps(env)  # goes into bench/<target>.json as it is


@pytest.mark.parametrize("flags, cpu_flags, bf16", [
    ("fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile", ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"],
     "amx_bf16"),
    ("fpu avx2 fma avx512f avx512_vnni", ["avx2", "fma", "avx512f", "avx512_vnni"], None),
])
def test_fingerprint_records_the_cpu_flags_bf16_and_openvino(flags, cpu_flags, bf16, monkeypatch, tmp_path):
    """The SIMD flags and the bf16 feature come from /proc/cpuinfo (here a file written by the test)."""
    info = tmp_path / "cpuinfo"
    info.write_text(f"model name\t: Xeon\nflags\t\t: {flags}\n")
    monkeypatch.setattr(host, "CPU_INFO", info)
    openvino = "2026.4.1" if bf16 else None
    monkeypatch.setattr("leapkit.latency.machine.package_version",
                        lambda dist: openvino if dist == "openvino" else package_version(dist))
    env = environment()
    assert env["cpu_flags"] == cpu_flags and env["bf16"] == bf16 and env["openvino"] == openvino


def test_package_version_of_a_missing_distribution():
    assert package_version("surely-not-installed-leapkit-extra") is None


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024", "535.183.01"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)",
     "580.159.04"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  540.4.0  Release Build", "540.4.0"),
    ("no driver here", None),
])
def test_driver_version_from_proc(text, version):
    assert driver_version(text) == version


def test_a_jetson_is_its_module_and_nothing_else():
    assert host_names(JETSON) == [JETSON["device_model"], "Orin", JETSON["cpu"], "aarch64"]
    for name in ("jetson-orin-nano", "jetson-orin-nano-super"):
        match = target_match(load_target(name), JETSON)
        assert match.is_target and f"this host is {name}: '{JETSON['device_model']}' matches" in match.reason
    for name in ("jetson-orin-nx", "jetson-agx-orin", "rtx-4090", "x86-cpu", "raspberry-pi-5"):
        assert not target_match(load_target(name), JETSON).is_target, name


def test_a_cpu_vm_is_the_cpu_class_and_no_jetson():
    env = {"host": "vm", "device_model": None, "gpu_names": [], "cpu": "AMD EPYC 7B13", "machine": "x86_64"}
    assert describe_host(env) == "vm (AMD EPYC 7B13, x86_64)"
    assert target_match(load_target("x86-cpu"), env).is_target
    match = target_match(load_target("jetson-orin-nano"), env)
    assert not match.is_target and match.reason == "nothing on vm (AMD EPYC 7B13, x86_64) matches 'Jetson Orin Nano'"


def test_an_arm_board_is_its_board_and_not_the_x86_class():
    env = {"host": "pi", "device_model": "Raspberry Pi 5 Model B Rev 1.0", "gpu_names": [], "cpu": "Cortex-A76",
           "machine": "aarch64"}
    assert describe_host(env) == "pi (Raspberry Pi 5 Model B Rev 1.0, Cortex-A76, aarch64)"
    assert target_match(load_target("raspberry-pi-5"), env).is_target
    assert not target_match(load_target("x86-cpu"), env).is_target
    assert describe_host({}) == "this host (unknown hardware)"


def test_a_gpu_box_is_the_gpu_target_and_the_cpu_class():
    env = {"host": "ws", "device_model": None, "gpu_names": ["NVIDIA GeForce RTX 4090"], "cpu": "AMD Ryzen 9 7950X",
           "machine": "x86_64"}
    assert target_match(load_target("rtx-4090"), env).is_target and target_match(load_target("x86-cpu"), env).is_target
    assert describe_host(env) == "ws (NVIDIA GeForce RTX 4090, AMD Ryzen 9 7950X, x86_64)"
