"""The Runner protocol: PyTorch and ONNX Runtime runners agree, timed() runs, TensorRT runs without torch.

The TensorRT tests below run against fakes of TensorRT and cuda-python's runtime (FakeTensorRT,
FakeCudart), the ONNX Runtime GPU tests against a fake of a GPU build of onnxruntime (FakeOrt): they are
contract tests, which check leapkit's use of those APIs against a fake, not the device. A change in
TensorRT, cuda-python or ONNX Runtime that the fakes do not mirror passes here; the runners themselves
run on a GPU only where one and TensorRT exist (tests/test_trt_build.py, marked trt).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from leapkit import host
from leapkit.errors import ConfigError, MissingDependency, ModelError, RunError
from leapkit.latency.artifacts import Artifact
from leapkit.latency.measure import measure
from leapkit.latency.timing import Method
from leapkit.models import Backbone, create_student
from leapkit.runtimes import tensorrt_runner
from leapkit.runtimes.base import INPUT_NAME, OUTPUT_NAMES, run_batched
from leapkit.runtimes.openvino_runner import OpenVINORunner
from leapkit.runtimes.ort_runner import TIMED_ON_DEVICE, OrtRunner, device_resident_run, ort_providers
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
        cudaSuccess, cudaErrorInsufficientDriver, cudaErrorNoDevice = 0, 35, 100

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    NAMES = {35: b"cudaErrorInsufficientDriver", 100: b"cudaErrorNoDevice"}

    def __init__(self, devices: int = 1, error: int | None = None, driver: int = 12060, runtime: int = 12060) -> None:
        """``error``: what cudaGetDeviceCount fails with; ``driver``: the driver's CUDA (0: no driver installed)."""
        self.devices, self.calls, self.next_ptr = devices, [], 0x1000
        self.error, self.driver, self.runtime = error, driver, runtime

    def cudaGetDeviceCount(self):  # noqa: N802
        if self.error is not None:
            return self.error, 0
        ok = self.devices > 0
        return (self.cudaError_t.cudaSuccess if ok else self.cudaError_t.cudaErrorNoDevice), self.devices

    def cudaGetErrorName(self, err):  # noqa: N802
        return self.cudaError_t.cudaSuccess, self.NAMES[err]

    def cudaDriverGetVersion(self):  # noqa: N802
        return self.cudaError_t.cudaSuccess, self.driver

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return self.cudaError_t.cudaSuccess, self.runtime

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


def stand_ins(monkeypatch, accepts_shape: bool = True, devices: int = 1, **cuda: int) -> FakeCudart:
    """TensorRT and cuda-python stand-ins, and no torch at all: the runner must not need it."""
    cudart = FakeCudart(devices, **cuda)
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


# --- ONNX Runtime's GPU providers: per-variant options and device-resident I/O, against a fake --------------


class FakeOrt(SimpleNamespace):
    """onnxruntime as a GPU build answers OrtRunner: providers with their options, IOBinding, OrtValues.

    Sessions record the providers they were given; bindings record where inputs and outputs were bound and how
    many runs went through them; ``session.run`` (host I/O) is counted apart.
    """

    def __init__(self) -> None:
        fake = self
        self.uploads: list[tuple[tuple[int, ...], str, int]] = []
        self.sessions: list[Any] = []

        class Binding:
            def __init__(self) -> None:
                self.inputs, self.outputs, self.rebound, self.runs = {}, {}, {}, 0

            def bind_ortvalue_input(self, name, value):
                self.inputs[name] = value

            def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None,
                            buffer_ptr=None):
                self.outputs[name] = (device_type, device_id)

            def get_outputs(self):
                return [f"device buffer of {name}" for name in self.outputs]

            def bind_ortvalue_output(self, name, value):
                self.rebound[name] = value

        class Session:
            def __init__(self, path, so, providers):
                self.specs, self.host_runs, self.bindings = providers, 0, []
                fake.sessions.append(self)

            def get_providers(self):
                return [p if isinstance(p, str) else p[0] for p in self.specs]

            def get_inputs(self):
                return [SimpleNamespace(name="images", type="tensor(float)", shape=["batch", 3, 16, 16])]

            def get_outputs(self):
                return [SimpleNamespace(name=n) for n in OUTPUT_NAMES]

            def run(self, names, feed):
                self.host_runs += 1

            def io_binding(self):
                self.bindings.append(Binding())
                return self.bindings[-1]

            def run_with_iobinding(self, binding, run_options=None):
                binding.runs += 1

        class OrtValue:
            @staticmethod
            def ortvalue_from_numpy(x, device_type="cpu", device_id=0):
                fake.uploads.append((x.shape, device_type, device_id))
                return f"{device_type}:{device_id} copy of the input"

        class SessionOptions:
            def add_session_config_entry(self, key, value):
                pass

        super().__init__(SessionOptions=SessionOptions, InferenceSession=Session, OrtValue=OrtValue,
                         GraphOptimizationLevel=SimpleNamespace(ORT_ENABLE_ALL=99),
                         ExecutionMode=SimpleNamespace(ORT_SEQUENTIAL=0))


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.fixture
def variants(onnx_file, tmp_path):
    """The fp32 graph under the export's variant names: leapkit names each variant's precision in its file."""
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("model.onnx", "model_fp16.onnx", "model_int8.onnx"):
        shutil.copy(onnx_file, folder / name)
    return folder


@pytest.mark.parametrize("name, fp16, int8", [("model.onnx", False, False), ("model_fp16.onnx", True, False),
                                              ("model_int8.onnx", True, True)])
def test_tensorrt_provider_gets_the_variants_options(variants, monkeypatch, name, fp16, int8):
    """Precision flags, engine and timing caches beside the model, the profile's shapes; CUDA gets its device.

    Contract test: checks leapkit's use of ONNX Runtime's provider options against a fake, not the device.
    """
    fake = FakeOrt()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    runner = OrtRunner(variants / name, threads=1, providers=GPU_PROVIDERS, batch=8)
    trt, cuda, cpu = fake.sessions[0].specs
    cache = variants / "ort_trt_cache"
    assert trt == ("TensorrtExecutionProvider", {
        "device_id": 0, "trt_fp16_enable": fp16, "trt_int8_enable": int8,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / Path(name).stem),
        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": "images:1x3x16x16", "trt_profile_opt_shapes": "images:8x3x16x16",
        "trt_profile_max_shapes": "images:8x3x16x16",
    })
    assert cuda == ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE"})
    assert cpu == "CPUExecutionProvider" and (cache / Path(name).stem).is_dir()
    assert runner.device == "cuda" and runner.providers == list(GPU_PROVIDERS)


def test_cpu_providers_get_no_options(onnx_file, monkeypatch):
    fake = FakeOrt()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    runner = OrtRunner(onnx_file, threads=1)
    assert fake.sessions[0].specs == ["CPUExecutionProvider"] and runner.timing is None
    assert not (onnx_file.parent / "ort_trt_cache").exists()


def test_gpu_timed_loop_keeps_input_and_outputs_on_the_device(variants, monkeypatch):
    """The input goes to the GPU once; every timed run goes through the binding, none through session.run.

    Contract test: checks leapkit's use of ONNX Runtime's IOBinding API against a fake, not the device.
    """
    fake = FakeOrt()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    runner = OrtRunner(variants / "model_fp16.onnx", threads=1, providers=GPU_PROVIDERS[1:], batch=4)
    run = runner.timed(np.zeros((4, 3, 16, 16), dtype=np.float32))
    for _ in range(3):
        run()
    session = fake.sessions[0]
    (binding,) = session.bindings
    assert fake.uploads == [((4, 3, 16, 16), "cuda", 0)] and binding.inputs == {"images": "cuda:0 copy of the input"}
    assert binding.outputs == dict.fromkeys(OUTPUT_NAMES, ("cuda", 0))
    assert binding.rebound == {n: f"device buffer of {n}" for n in OUTPUT_NAMES}  # later runs reuse the buffers
    assert binding.runs == 1 + 3 and session.host_runs == 0
    assert runner.timing == TIMED_ON_DEVICE and "trtexec's GPU compute time" in runner.timing


def test_device_resident_run_with_real_onnxruntime(onnx_file):
    """The same binding code on ONNX Runtime's CPU device: its outputs are the session's."""
    runner = OrtRunner(onnx_file, threads=1)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    run = device_resident_run(runner.session, runner.input.name, runner.output_names, x, device_type="cpu")
    run()
    ref = runner(x)
    for name, got in zip(runner.output_names, run.binding.copy_outputs_to_cpu(), strict=True):
        np.testing.assert_array_equal(got, ref[name])


def test_bench_records_what_a_gpu_figure_includes(variants, monkeypatch):
    """measure() on ONNX Runtime's CUDA provider beside a torch without CUDA: timed on the device, labelled.

    Contract test: checks leapkit's use of ONNX Runtime against a fake, not the device.
    """
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt())
    art = Artifact(format="onnx", precision="fp16", path=variants / "model_fp16.onnx")
    method = Method(batch=2, threads=1, warmup_s=0.0, iterations=3, providers=GPU_PROVIDERS[1:])
    result, _ = measure(art, method, img_size=16)
    assert result.status == "ok" and result.device == "cuda" and result.peak_cuda_mb is None
    assert result.to_dict()["timing"] == TIMED_ON_DEVICE
    cpu, _ = measure(Artifact(format="onnx", precision="fp32", path=variants / "model.onnx"),
                     replace(method, providers=("CPUExecutionProvider",)), img_size=16)
    assert "timing" not in cpu.to_dict()


# --- GPU environment errors by name ------------------------------------------------------------------------


def no_cuda_python(monkeypatch) -> None:
    """cuda-python not installed: both of its module layouts fail to import."""
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)


def test_no_cuda_python_is_not_hidden_by_torch(monkeypatch):
    """A CUDA torch must not stand in for cuda-python: the count is None, and require_cuda names the extra."""
    no_cuda_python(monkeypatch)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert host.cuda_device_count() is None
    with pytest.raises(MissingDependency, match=r"^a TensorRT engine needs the 'cuda-python' package: "
                                                r"pip install 'leapkit\[trt\]'$"):
        host.require_cuda("a TensorRT engine")


def test_a_cudart_error_is_named_with_the_cuda_versions(monkeypatch):
    """A driver older than cuda-python's runtime is an error naming both versions, not "no GPU".

    Contract test: checks leapkit's use of cuda-python's runtime API against a fake, not the device.
    """
    stand_ins(monkeypatch, error=35, driver=12060, runtime=12090)
    with pytest.raises(host.CudaError) as e:
        host.cuda_device_count()
    message = str(e.value)
    assert message.startswith("CUDA failed counting the GPUs: cudaErrorInsufficientDriver (driver supports CUDA 12.6, "
                              "cuda-python's runtime is CUDA 12.9); install the cuda-python of the driver's CUDA")
    assert "\n" not in message and e.value.exit_code == 2
    with pytest.raises(host.CudaError, match="cudaErrorInsufficientDriver"):
        host.require_cuda("running model.engine")


def test_no_driver_and_no_device_are_zero_gpus(monkeypatch):
    """A CPU machine with cuda-python (no NVIDIA driver: version 0) and a driver without a GPU both count 0.

    Contract test: checks leapkit's use of cuda-python's runtime API against a fake, not the device.
    """
    stand_ins(monkeypatch, error=35, driver=0, runtime=12090)
    assert host.cuda_device_count() == 0
    stand_ins(monkeypatch, devices=0)
    assert host.cuda_device_count() == 0


def test_a_failed_cuda_call_in_the_runner_names_the_error(engine_file, monkeypatch):
    """A cudart call failing inside the TensorRT runner: CUDA's name for it and the versions, one line.

    Contract test: checks leapkit's use of cuda-python's runtime API against a fake, not the device.
    """
    cudart = stand_ins(monkeypatch, driver=12020, runtime=12060)
    cudart.cudaStreamCreate = lambda: (cudart.cudaError_t.cudaErrorInsufficientDriver, None)
    with pytest.raises(host.CudaError, match=r"^CUDA failed creating a stream: cudaErrorInsufficientDriver \(driver "
                                             r"supports CUDA 12.2, cuda-python's runtime is CUDA 12.6\)"):
        TensorRTRunner(engine_file)


def test_export_finds_a_missing_cuda_python_before_any_work(tmp_path, monkeypatch):
    """TensorRT installed, cuda-python not: the export of a TensorRT target stops first, naming the extra."""
    from leapkit.deploy import export as export_module

    no_cuda_python(monkeypatch)
    monkeypatch.setattr(export_module, "tensorrt_installed", lambda: True)
    monkeypatch.setattr(export_module, "export_plan", lambda plan: pytest.fail("the export started its work"))
    with pytest.raises(MissingDependency) as e:
        export_module.export(tmp_path / "run", target="jetson-orin-nano")
    assert str(e.value) == ("building this export's TensorRT engines (tensorrt is installed; --no-build-engine skips "
                            "them) needs the 'cuda-python' package: pip install 'leapkit[trt]'")
    with pytest.raises(RunError):  # --no-build-engine: no engines, no cuda-python needed
        export_module.export(tmp_path / "run", target="jetson-orin-nano", build_engine=False)
