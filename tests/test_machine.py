"""leapkit.latency.machine: the environment fingerprint recorded beside every measurement."""

from __future__ import annotations

import json

import pytest
import torch

from leapkit.latency.machine import driver_version, environment, package_version


def test_environment_fingerprint():
    env = environment()
    for key in ("host", "os", "machine", "cpu", "cpu_cores", "cpu_affinity", "cpu_flags", "load_avg_1m", "python",
                "torch", "onnxruntime", "tensorrt", "leapkit", "gpu", "jetson"):
        assert key in env, key
    assert env["torch"] == torch.__version__ and env["onnxruntime"] == package_version("onnxruntime")
    assert (env["gpu"] is None) == (not torch.cuda.is_available())
    json.dumps(env)  # goes into bench/<target>.json as it is


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
