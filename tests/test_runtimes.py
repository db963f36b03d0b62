"""The Runner protocol: PyTorch and ONNX Runtime runners agree, timed() runs, TensorRT runs without torch.

The TensorRT tests below run against fakes of TensorRT and cuda-python's runtime (FakeTensorRT,
FakeCudart): they are contract tests, which check leapkit's use of the TensorRT/cudart API against a
fake, not the device. A change in TensorRT or cuda-python that the fakes do not mirror passes here;
the runner itself runs only where a GPU and TensorRT exist (tests/test_trt_build.py, marked trt).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from leapkit import host
from leapkit.errors import ConfigError, MissingDependency, ModelError
from leapkit.models import Backbone, create_student
from leapkit.runtimes import tensorrt_runner
from leapkit.runtimes.base import INPUT_NAME, OUTPUT_NAMES, run_batched
from leapkit.runtimes.openvino_runner import OpenVINORunner
from leapkit.runtimes.ort_runner import OrtRunner, ort_providers
from leapkit.runtimes.tensorrt_runner import TensorRTRunner
from leapkit.runtimes.torch_runner import TorchRunner


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


# --- TensorRT without torch: guards here, the runner's plumbing against stand-ins ---------------


def extras() -> set[str]:
    """The optional-dependency groups pyproject.toml declares."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    return set(tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"])


def test_importing_runtimes_needs_no_torch():
    """A Jetson venv has JetPack's TensorRT and at best a CPU torch: only the PyTorch runner pulls torch in."""
    modules = ("leapkit.runtimes", "leapkit.runtimes.ort_runner", "leapkit.runtimes.openvino_runner",
               "leapkit.runtimes.tensorrt_runner", "leapkit.host")
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


def test_backbone_gives_the_three_outputs(student):
    tokens, cls, patches = Backbone(student)(torch.zeros(2, 3, 16, 16))
    assert tokens.shape == (2, 1 + 16, student.embed_dim)  # one class token and a 4 x 4 grid of patches
    assert torch.equal(cls, tokens[:, 0]) and torch.equal(patches, tokens[:, 1:])


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_names_a_real_extra(tmp_path, monkeypatch):
    with pytest.raises(MissingDependency) as e:
        TensorRTRunner(tmp_path / "model.engine")
    assert e.value.extra == "trt" and "pip install 'leapkit[trt]'" in str(e.value)
    monkeypatch.setattr(host, "JETSON_RELEASE", tmp_path / "nv_tegra_release")
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    with pytest.raises(MissingDependency) as e:
        TensorRTRunner(tmp_path / "model.engine")
    message = str(e.value)
    assert "JetPack's TensorRT Python package (apt install python3-libnvinfer)" in message
    assert "--system-site-packages" in message and "pip install 'leapkit[jetson]'" in message
    assert e.value.extra == "jetson" and {"trt", "jetson"} <= extras()


class FakeCudart:
    """cuda-python's runtime API as the runner uses it: calls return (error, value...); copies are recorded."""

    class cudaError_t:  # noqa: N801 (cuda-python's spelling)
        cudaSuccess, cudaErrorNoDevice = 0, 100

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self, devices: int = 1) -> None:
        self.devices, self.calls, self.next_ptr = devices, [], 0x1000

    def cudaGetDeviceCount(self):  # noqa: N802
        ok = self.devices > 0
        return (self.cudaError_t.cudaSuccess if ok else self.cudaError_t.cudaErrorNoDevice), self.devices

    def cudaGetErrorName(self, err):  # noqa: N802
        return self.cudaError_t.cudaSuccess, b"cudaErrorNoDevice"

    def cudaStreamCreate(self):  # noqa: N802
        return self.cudaError_t.cudaSuccess, 7

    def cudaMalloc(self, nbytes):  # noqa: N802
        self.next_ptr += 0x1000
        self.calls.append(("malloc", nbytes))
        return self.cudaError_t.cudaSuccess, self.next_ptr

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        self.calls.append(("memcpy", kind, nbytes))
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        self.calls.append(("sync",))
        return (self.cudaError_t.cudaSuccess,)

    def cudaFree(self, ptr):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)


class FakeTensorRT(SimpleNamespace):
    """A stand-in for TensorRT's named-tensor API: an engine with one dynamic-batch input and one output."""

    def __init__(self, accepts_shape: bool = True) -> None:
        class Logger:
            INFO, WARNING = 3, 2

            def __init__(self, severity: int) -> None:
                self.severity = severity

        class Context:
            def __init__(self) -> None:
                self.shape, self.addresses, self.executed = None, {}, 0

            def set_input_shape(self, name, shape):
                self.shape = shape
                return accepts_shape

            def get_tensor_shape(self, name):
                return (self.shape[0], 8)

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, stream):
                self.executed += 1
                return True

        class Engine:
            num_io_tensors = 2

            def get_tensor_name(self, i):
                return ("images", "cls")[i]

            def get_tensor_mode(self, name):
                return "in" if name == "images" else "out"

            def get_tensor_dtype(self, name):
                return "float32"

            def create_execution_context(self):
                return Context()

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, blob):
                return Engine()

        super().__init__(__version__="10.3.0", Logger=Logger, Runtime=Runtime,
                         TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=lambda dtype: np.float32)


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized engine")
    return path


def stand_ins(monkeypatch, accepts_shape: bool = True, devices: int = 1) -> FakeCudart:
    """TensorRT and cuda-python stand-ins, and no torch at all: the runner must not need it."""
    cudart = FakeCudart(devices)
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(accepts_shape))
    monkeypatch.setitem(sys.modules, "torch", None)
    for module in (host, tensorrt_runner):  # the runner's own calls, and require_cuda's device count
        monkeypatch.setattr(module, "import_cudart", lambda purpose="": cudart)
    return cudart


def test_tensorrt_runner_runs_without_torch(engine_file, monkeypatch):
    """Copies in, runs, copies out; timed() stages the input once; no torch.

    Contract test: checks leapkit's use of the TensorRT/cudart API against a fake, not the device.
    """
    cudart = stand_ins(monkeypatch)
    runner = TensorRTRunner(engine_file)
    out = runner(np.ones((3, 3, 16, 16), dtype=np.float32))
    assert list(out) == ["cls"] and out["cls"].shape == (3, 8) and out["cls"].dtype == np.float32
    copies = [c for c in cudart.calls if c[0] == "memcpy"]
    assert copies == [("memcpy", 1, 3 * 3 * 16 * 16 * 4), ("memcpy", 2, 3 * 8 * 4)]
    assert runner.context.executed == 1 and set(runner.context.addresses) == {"images", "cls"}
    cudart.calls.clear()
    run = runner.timed(np.ones((3, 3, 16, 16), dtype=np.float32))
    run()
    assert [c for c in cudart.calls if c[0] == "memcpy"] == [("memcpy", 1, 3 * 3 * 16 * 16 * 4)]  # staged once
    assert runner.context.executed == 2
    runner.close()


def test_tensorrt_runner_refuses_a_shape_the_engine_rejects(engine_file, monkeypatch):
    """set_input_shape returns False for a batch outside the optimisation profile: a ModelError, not garbage.

    Contract test: checks leapkit's use of the TensorRT/cudart API against a fake, not the device.
    """
    stand_ins(monkeypatch, accepts_shape=False)
    runner = TensorRTRunner(engine_file)
    with pytest.raises(ModelError, match=r"model.engine does not take input shape \(9, 3, 16, 16\): it is outside"):
        runner(np.ones((9, 3, 16, 16), dtype=np.float32))
    with pytest.raises(ModelError, match="rebuild it with build_engine.sh"):
        runner.timed(np.ones((9, 3, 16, 16), dtype=np.float32))


def test_require_cuda_asks_cuda_python_not_torch(monkeypatch):
    """The GPU count comes from cudaGetDeviceCount with torch unimportable; none visible is a ConfigError.

    Contract test: checks leapkit's use of the TensorRT/cudart API against a fake, not the device.
    """
    stand_ins(monkeypatch, devices=1)
    host.require_cuda("running model.engine")  # a GPU through cuda-python, with torch unimportable
    stand_ins(monkeypatch, devices=0)
    with pytest.raises(ConfigError, match="running model.engine needs a CUDA GPU and none is visible here"):
        host.require_cuda("running model.engine")


def test_require_cuda_without_cuda_python_or_torch(monkeypatch):
    def missing(purpose: str = "") -> None:
        raise MissingDependency("cuda-python", "trt", purpose)

    monkeypatch.setattr(host, "import_cudart", missing)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependency, match=r"a TensorRT engine needs the 'cuda-python' package: pip install"):
        host.require_cuda("a TensorRT engine")


def test_missing_cuda_python_names_the_extra(engine_file, monkeypatch):
    """TensorRT (a fake) without cuda-python: the runner names the extra that brings it.

    Contract test: checks leapkit's use of the TensorRT/cudart API against a fake, not the device.
    """
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependency, match=r"running model.engine needs the 'cuda-python' package: "
                                                r"pip install 'leapkit\[trt\]'"):
        TensorRTRunner(engine_file)


def test_openvino_runner_without_openvino_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(MissingDependency, match=r"running model.xml needs the 'openvino' package: "
                                                r"pip install 'leapkit\[openvino\]'"):
        OpenVINORunner(tmp_path / "model.xml")
