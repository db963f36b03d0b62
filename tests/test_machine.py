"""leapkit.latency.machine: the environment fingerprint recorded beside every measurement."""

from __future__ import annotations

import json

import pytest
import torch

from leapkit.latency.machine import (
    describe_host,
    driver_version,
    environment,
    host_names,
    package_version,
    target_match,
)
from leapkit.profiles import load_target
from leapkit.runtimes import cpu_bf16

JETSON = {"host": "orin", "device_model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
          "gpu_names": ["Orin"], "cpu": "ARMv8 Processor rev 1 (v8l)", "machine": "aarch64"}


def test_environment_fingerprint():
    env = environment()
    for key in ("host", "os", "machine", "cpu", "cpu_cores", "cpu_affinity", "cpu_flags", "load_avg_1m", "python",
                "torch", "onnxruntime", "tensorrt", "leapkit", "gpu", "gpu_names", "device_model", "jetson"):
        assert key in env, key
    assert env["torch"] == torch.__version__ and env["onnxruntime"] == package_version("onnxruntime")
    assert (env["gpu"] is None) == (not torch.cuda.is_available())
    json.dumps(env)  # goes into bench/<target>.json as it is


def test_fingerprint_records_bf16_and_openvino(monkeypatch, tmp_path):
    import leapkit.runtimes as runtimes

    env = environment()
    assert env["bf16"] == cpu_bf16() and env["openvino"] == package_version("openvino")
    assert (env["bf16"] is None) == ("avx512_bf16" not in env["cpu_flags"] and "amx_bf16" not in env["cpu_flags"])
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Xeon\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n")
    monkeypatch.setattr(runtimes, "CPU_FLAGS", info)
    monkeypatch.setattr("leapkit.latency.machine.package_version",
                        lambda dist: None if dist == "openvino" else package_version(dist))
    env = environment()
    assert env["bf16"] == "amx_bf16" and env["openvino"] is None  # the flag that gives bf16, and no OpenVINO


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


def test_this_machine_is_judged_by_what_it_is():
    env = environment()
    x86 = env["machine"] == "x86_64"
    assert target_match(load_target("x86-cpu"), env).is_target == x86
    match = target_match(load_target("jetson-orin-nano"), env)
    assert match.is_target == ("Jetson Orin Nano" in (env["device_model"] or ""))
    if not match.is_target:
        assert match.reason == f"nothing on {describe_host(env)} matches 'Jetson Orin Nano'"
    assert describe_host(env).startswith(f"{env['host']} (") and env["cpu"] in describe_host(env)


def test_a_gpu_box_is_the_gpu_target_and_the_cpu_class():
    env = {"host": "ws", "device_model": None, "gpu_names": ["NVIDIA GeForce RTX 4090"], "cpu": "AMD Ryzen 9 7950X",
           "machine": "x86_64"}
    assert target_match(load_target("rtx-4090"), env).is_target and target_match(load_target("x86-cpu"), env).is_target
    assert describe_host(env) == "ws (NVIDIA GeForce RTX 4090, AMD Ryzen 9 7950X, x86_64)"
