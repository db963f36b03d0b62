"""The Runner protocol: PyTorch and ONNX Runtime runners agree, timed() runs, TensorRT is guarded."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

from leapkit.errors import MissingDependency
from leapkit.models import create_student
from leapkit.runtimes import (
    INPUT_NAME,
    OUTPUT_NAMES,
    Backbone,
    OrtRunner,
    TensorRTRunner,
    TorchRunner,
    ort_providers,
    run_batched,
)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return create_student("leapkit_demo_student", 16).eval()


@pytest.fixture(scope="module")
def onnx_file(student, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Backbone(student), (torch.zeros(2, 3, 16, 16),), str(path), dynamo=False, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=17,
        )
    return path


def test_torch_and_onnxruntime_runners_agree(student, onnx_file):
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    ref = run_batched(TorchRunner(student), x, batch_size=2)
    got = run_batched(OrtRunner(onnx_file, threads=1), x, batch_size=2)
    assert set(ref) == set(got) == set(OUTPUT_NAMES)
    prefix = Backbone(student).num_prefix_tokens
    assert ref["tokens"].shape == (5, prefix + 16, student.embed_dim)
    np.testing.assert_allclose(ref["cls"], ref["tokens"][:, 0])
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5)


def test_timed_runs_one_inference_per_call(student, onnx_file):
    runner = OrtRunner(onnx_file, threads=1, spin=False)
    assert runner.input_shape(3) == [3, 3, 16, 16]
    fn = runner.timed(np.zeros(runner.input_shape(3), dtype=np.float32))
    fn()
    calls = []
    torch_runner = TorchRunner(student)
    torch_runner.forward = lambda x: calls.append(x.shape)
    torch_runner.timed(np.zeros((2, 3, 16, 16), dtype=np.float32))()
    assert calls == [torch.Size([2, 3, 16, 16])]


def test_cpu_provider_is_always_last():
    assert ort_providers("cpu", gpu_target=True) == ["CPUExecutionProvider"]
    assert ort_providers("auto", gpu_target=False) == ["CPUExecutionProvider"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_runner_names_the_extra(tmp_path):
    with pytest.raises(MissingDependency, match=r"pip install 'leapkit\[trt\]'"):
        TensorRTRunner(tmp_path / "model.engine")
