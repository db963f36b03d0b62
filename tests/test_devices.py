"""One device resolver: the same answer and the same one-line error for every command."""


import pytest
import torch
from helpers import run_cli

from leapkit.devices import gpu_peak_tflops, resolve_device
from leapkit.errors import ConfigError

NO_CUDA = "device 'cuda' requested but CUDA is not available; use --device cpu"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)




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
