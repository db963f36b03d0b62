"""CUDA paths: AMP (bf16 and fp16 with a grad scaler), the teacher in half precision, MFU.

The training tests are skipped without a CUDA GPU; `bash benchmarks/gpu_check.sh` runs them on a GPU
machine. The choice of ``amp: auto`` is checked everywhere, on the compute capability torch reports
(set by the test): it checks the rule, not the device.
"""

import pytest
import torch

from leapkit.host import amp_dtype
from leapkit.train import distill

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("capability, dtype", [
    ((7, 0), torch.float16),   # V100: bf16 only emulated
    ((7, 5), torch.float16),   # T4
    ((8, 0), torch.bfloat16),  # A100
    ((8, 7), torch.bfloat16),  # Jetson Orin
    ((9, 0), torch.bfloat16),  # H100
])
def test_amp_auto_takes_bf16_only_where_it_is_native(monkeypatch, capability, dtype):
    """``is_bf16_supported`` is true on pre-Ampere GPUs too (emulation): the capability decides."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda", 0)
    assert amp_dtype("auto", cuda) == dtype
    assert amp_dtype("fp16", cuda) == torch.float16 and amp_dtype("bf16", cuda) == torch.bfloat16
    assert amp_dtype("auto", torch.device("cpu")) is None and amp_dtype("off", cuda) is None


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_on_cuda(tiny_config, tmp_path, amp):
    import json

    tiny_config.train.device, tiny_config.train.amp = "cuda", amp
    summary = distill(tiny_config, out=tmp_path / amp, show_progress=False)  # with the evidence (leapkit.evidence)
    assert summary.steps == 9 and summary.device == "cuda:0"
    assert summary.train_flops > 0 and summary.achieved_tflops_per_s > 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / amp / "metrics.jsonl").read_text().splitlines()]
    assert all(loss == loss and loss < float("inf") for loss in losses)
    # fp16 scales the loss (the scaler's state is checkpointed); bf16 needs no scaling
    scaler = torch.load(tmp_path / amp / "checkpoints" / "last.pt", weights_only=True)["scaler"]
    assert bool(scaler) == (amp == "fp16")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_cuda_resume_matches(tiny_config, tmp_path, monkeypatch, amp):
    """Killed after the first epoch's checkpoint and resumed: the same weights as one run (loss scale included)."""
    from safetensors.torch import load_file

    from leapkit.run import RunWriter

    tiny_config.train.device, tiny_config.train.amp, tiny_config.train.epochs = "cuda", amp, 2
    distill(tiny_config, out=tmp_path / "a", show_progress=False)
    real_save = RunWriter.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny_config, out=tmp_path / "b", show_progress=False)
    monkeypatch.setattr(RunWriter, "save_checkpoint", real_save)
    distill(None, out=tmp_path / "b", resume=True, show_progress=False)
    a, b = load_file(tmp_path / "a" / "student.safetensors"), load_file(tmp_path / "b" / "student.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
