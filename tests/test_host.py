"""leapkit.host: the CPU's features read from a given /proc/cpuinfo, a Jetson, one device resolver, and the CUDA
that the `jetson` and `trt` extras pin cuda-python to.

The CPU tests read a cpuinfo text written here, never this machine's: each expects a fixed answer.
"""

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from packaging.requirements import Requirement

from leapkit import host
from leapkit.errors import ConfigError
from leapkit.host import cpu_bf16, cpu_features, gpu_peak_tflops, is_jetson, resolve_device
from leapkit.profiles import list_targets, load_target

NO_CUDA = "device 'cuda' requested but CUDA is not available; use --device cpu"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Write a /proc/cpuinfo text to a file that leapkit.host reads instead of this machine's."""
    def write(text: str) -> None:
        (tmp_path / "cpuinfo").write_text(text)

    monkeypatch.setattr(host, "CPU_INFO", tmp_path / "cpuinfo")
    return write


@pytest.mark.parametrize("flags,found", [
    ("fpu sse avx512f avx512_vnni avx512_bf16 avx512_fp16", "avx512_bf16"),
    ("fpu sse avx512_bf16 amx_bf16 amx_int8", "amx_bf16"),
    ("fpu sse avx2 fma avx_vnni", None),
    ("fpu avx2 avx512f avx512_vnni", None),
])
def test_cpu_bf16_reads_the_cpu_flags(flags, found, cpuinfo):
    cpuinfo(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    assert cpu_bf16() == found


def test_cpu_features_reads_x86_flags_and_arm_features(cpuinfo):
    cpuinfo("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2 fma\n")
    assert cpu_features() == {"fpu", "avx2", "fma"}
    cpuinfo("processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd4b\n")
    assert cpu_features() == {"fp", "asimd", "asimddp", "i8mm"}
    cpuinfo("processor\t: 0\n")
    assert cpu_features() == set() and cpu_bf16() is None


def test_no_cpuinfo_and_no_openvino_is_no_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "CPU_INFO", tmp_path / "missing")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert cpu_features() == set() and cpu_bf16() is None


def test_a_jetson_is_known_by_its_release_file(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "JETSON_RELEASE", tmp_path / "nv_tegra_release")
    assert not is_jetson() and host.tensorrt_extra() == "trt"
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert is_jetson() and host.tensorrt_extra() == "jetson"


def test_cpu_and_auto_without_cuda(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert gpu_peak_tflops(torch.device("cpu")) is None


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_config_error(no_cuda, name):
    with pytest.raises(ConfigError, match=rf"device '{name}' requested but CUDA is not available; use --device cpu"):
        resolve_device(name)


def test_unknown_device_names_the_choices():
    with pytest.raises(ConfigError, match="unknown device 'gpu0'; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")


def test_cuda_takes_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="this machine has 2 CUDA device"):
        resolve_device("cuda:2")


def test_eval_cuda_without_gpu_is_one_line_exit_2(no_cuda, tmp_path, monkeypatch, capsys):
    code, err = run_cli(["eval", str(tmp_path), "--device", "cuda"], monkeypatch, capsys)
    assert code == 2 and err.strip() == f"error: {NO_CUDA}"


def test_distill_cuda_without_gpu_is_the_same_line(no_cuda, teacher_file, image_dir, tmp_path, monkeypatch, capsys):
    args = ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(image_dir),
            "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cuda"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.strip() == f"error: {NO_CUDA}"
    assert not (tmp_path / "out").exists()


# --- the CUDA the extras pin -------------------------------------------------------------------------------


def extra_requirements(name: str) -> dict[str, Requirement]:
    """The requirements of one extra of pyproject.toml, by package name."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in pyproject["project"]["optional-dependencies"][name]]
    return {r.name: r for r in reqs}


def test_jetson_extra_pins_cuda_python_to_the_jetpack_of_the_profiles():
    """cuda-python's runtime needs a driver of its CUDA: a later one fails on JetPack ("driver insufficient")."""
    cuda_python = extra_requirements("jetson")["cuda-python"].specifier
    jetpacks = {load_target(name).jetpack for name in list_targets() if load_target(name).family == "jetson"}
    assert jetpacks and None not in jetpacks
    for jetpack in jetpacks:
        major, minor = (int(p) for p in host.JETPACK_CUDA[jetpack].split("."))
        assert cuda_python.contains(f"{major}.{minor}.0"), (jetpack, str(cuda_python))
        assert not cuda_python.contains(f"{major}.{minor + 1}.0") and not cuda_python.contains(f"{major + 1}.0.0")


def test_trt_extra_pins_cuda_python_to_the_cuda_major_of_the_tensorrt_wheel():
    reqs = extra_requirements("trt")
    (wheel,) = [name for name in reqs if name.startswith("tensorrt")]
    major = int(re.fullmatch(r"tensorrt-cu(\d+)", wheel).group(1))  # NVIDIA's wheel for one CUDA major
    cuda_python = reqs["cuda-python"].specifier
    assert cuda_python.contains(f"{major}.0.0") and cuda_python.contains(f"{major}.9.0")
    assert not cuda_python.contains(f"{major + 1}.0.0") and not cuda_python.contains(f"{major - 1}.8.0")
