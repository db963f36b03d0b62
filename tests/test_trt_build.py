"""leapkit.deploy.trt_build: guards without TensorRT, TensorRT's log level under -v, and (trt) a real build."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from leapkit import host
from leapkit.deploy import trt_build as tb
from leapkit.errors import ExportError, MissingDependency
from leapkit.runtimes.tensorrt_runner import TensorRTRunner
from leapkit.trtexec.flags import BatchRange

CHW = (3, 224, 224)
BATCH = BatchRange(1, 4, 8)
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_guards_without_tensorrt(tmp_path):
    assert tb.unavailable_reason() == "the tensorrt package is not installed (pip install 'leapkit[trt]')"
    message = r"building a TensorRT engine needs the 'tensorrt' package: pip install 'leapkit\[trt\]'"
    with pytest.raises(MissingDependency, match=message):
        tb.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="images", chw=CHW, batch=BATCH,
                        precision="fp32")
    with pytest.raises(MissingDependency, match="tensorrt"):
        TensorRTRunner(tmp_path / "m.engine")
    assert tb.engines_wanted(None) == (False, tb.unavailable_reason())
    assert tb.engines_wanted(False) == (False, tb.unavailable_reason())
    with pytest.raises(MissingDependency, match=r"building a TensorRT engine \(--build-engine\) needs the 'tensorrt'"):
        tb.engines_wanted(True)


def test_build_engine_without_a_gpu_names_the_bundle(monkeypatch):
    monkeypatch.setattr(tb, "unavailable_reason", lambda: "no CUDA GPU is visible")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    message = "cannot build a TensorRT engine here: no CUDA GPU is visible; drop --build-engine"
    with pytest.raises(ExportError, match=message):
        tb.engines_wanted(True)


def test_unavailable_reason_asks_cuda_python(monkeypatch):
    """Whether a GPU is there is asked of cuda-python: a Jetson's torch has no CUDA."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(tb, "cuda_device_count", lambda: 0)
    assert tb.unavailable_reason() == "no CUDA GPU is visible"
    monkeypatch.setattr(tb, "cuda_device_count", lambda: None)
    assert tb.unavailable_reason() == "cuda-python is not installed (pip install 'leapkit[trt]')"
    with pytest.raises(MissingDependency, match=r"needs the 'cuda-python' package"):
        tb.engines_wanted(True)
    monkeypatch.setattr(tb, "cuda_device_count", lambda: 1)
    assert tb.unavailable_reason() is None


@pytest.fixture(params=[False, True], ids=["x86-64 host", "Jetson"])
def jetson(request, tmp_path, monkeypatch) -> bool:
    """This host as a Jetson or not, through the one Jetson check (L4T's release file, leapkit.host)."""
    release = tmp_path / "nv_tegra_release"
    if request.param:
        release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(host, "JETSON_RELEASE", release)
    assert host.is_jetson() is request.param
    return request.param


def test_missing_cuda_python_names_the_extra_of_this_host(jetson, monkeypatch):
    """On a Jetson cuda-python comes from the jetson extra (pinned to JetPack's CUDA), elsewhere from trt."""
    extra = "jetson" if jetson else "trt"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(tb, "cuda_device_count", lambda: None)
    assert tb.unavailable_reason() == f"cuda-python is not installed (pip install 'leapkit[{extra}]')"
    with pytest.raises(MissingDependency) as e:
        tb.engines_wanted(True)
    assert (e.value.package, e.value.extra) == ("cuda-python", extra)
    assert str(e.value) == (f"building a TensorRT engine (--build-engine) needs the 'cuda-python' package: "
                            f"pip install 'leapkit[{extra}]'")


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_where_this_host_gets_it(jetson):
    """pip's tensorrt wheel elsewhere; JetPack's python3-libnvinfer on a Jetson (pip's wheels do not run there)."""
    reason = tb.unavailable_reason()
    with pytest.raises(MissingDependency) as e:
        tb.engines_wanted(True)
    if jetson:
        assert "python3-libnvinfer" in reason and "leapkit[trt]" not in reason
        assert "apt install python3-libnvinfer" in str(e.value) and "leapkit[trt]" not in str(e.value)
    else:
        assert reason == "the tensorrt package is not installed (pip install 'leapkit[trt]')"
        assert str(e.value).endswith("needs the 'tensorrt' package: pip install 'leapkit[trt]'")

class FakeTensorRT(SimpleNamespace):
    """Just enough of the tensorrt module for build_engine to reach the parser (which rejects the graph unless
    ``parses``) and the optimisation profile (which ``add_optimization_profile`` refuses with -1)."""

    def __init__(self, parses: bool = False) -> None:
        loggers: list = []
        configs: list = []

        class Logger:
            INFO, WARNING = 3, 2

            def __init__(self, severity: int) -> None:
                self.severity = severity
                loggers.append(self)

        class Builder:
            def __init__(self, logger) -> None:
                self.logger = logger

            def create_network(self, flags):
                return SimpleNamespace(flags=flags)

            def create_builder_config(self):
                flags = {"TF32"}  # TensorRT's default: fp32 layers may use TF32
                configs.append(SimpleNamespace(add_optimization_profile=lambda profile: -1, flags=flags,
                                               clear_flag=flags.discard, set_flag=flags.add))
                return configs[-1]

            def create_optimization_profile(self):
                return SimpleNamespace(set_shape=lambda name, lo, opt, hi: None)

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path):
                return parses

            def get_error(self, i):
                return "unsupported op FakeOp"

        super().__init__(__version__="10.3.0", Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
                         NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0), loggers=loggers,
                         BuilderFlag=SimpleNamespace(TF32="TF32"), configs=configs)


@pytest.mark.parametrize("level,severity", [(logging.DEBUG, "INFO"), (logging.INFO, "WARNING")])
def test_tensorrt_log_follows_verbose(level, severity, tmp_path, monkeypatch, caplog):
    """"rerun with -v" must mean something: under -v (leapkit at DEBUG) the builder logs at TensorRT's INFO."""
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tb, "_require_gpu", lambda: None)
    caplog.set_level(level, logger="leapkit")
    with pytest.raises(ExportError, match="TensorRT's ONNX parser rejected m.onnx: unsupported op FakeOp"):
        tb.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="images", chw=CHW, batch=BATCH,
                        precision="fp32")
    assert [lg.severity for lg in fake.loggers] == [getattr(fake.Logger, severity)]


def test_a_refused_optimisation_profile_stops_the_build(tmp_path, monkeypatch):
    """add_optimization_profile returns -1 for a profile TensorRT cannot use: say so instead of building on."""
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(parses=True))
    monkeypatch.setattr(tb, "_require_gpu", lambda: None)
    with pytest.raises(ExportError, match=r"TensorRT rejected the optimisation profile images 1/4/8 x 3x224x224 for "
                                          r"m.onnx; rerun with -v"):
        tb.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="images", chw=CHW, batch=BATCH,
                        precision="fp32")
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("precision,tf32", [("fp32", False), ("fp16", True), ("int8", True)])
def test_fp32_engines_are_built_without_tf32(precision, tf32, tmp_path, monkeypatch):
    """TF32 is TensorRT's default for fp32 layers and rounds matmul inputs to 10 bits: an fp32 engine clears it.

    Checks the contract with TensorRT's builder config (a fake), not the device."""
    fake = FakeTensorRT(parses=True)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tb, "_require_gpu", lambda: None)
    with pytest.raises(ExportError, match="rejected the optimisation profile"):
        tb.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", input_name="images", chw=CHW, batch=BATCH,
                        precision=precision)
    (config,) = fake.configs
    assert ("TF32" in config.flags) == tf32


def test_cli_verbose_flag_raises_tensorrt_log_to_info():
    """`leapkit -v ...` configures logging so that TensorRT's logger is created at INFO."""
    from typer.testing import CliRunner

    from leapkit.cli.main import app
    from leapkit.runtimes.tensorrt_runner import tensorrt_logger

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    fake = FakeTensorRT()
    try:
        assert CliRunner().invoke(app, ["-v", "profiles", "list"]).exit_code == 0
        assert tensorrt_logger(fake).severity == fake.Logger.INFO
        assert CliRunner().invoke(app, ["profiles", "list"]).exit_code == 0
        assert tensorrt_logger(fake).severity == fake.Logger.WARNING
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.trt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and a CUDA GPU")
def test_build_and_run_engine(tmp_path):
    """Build a strongly typed engine from a tiny exported student and compare it with ONNX Runtime."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from leapkit.deploy.onnx_graph import export_onnx
    from leapkit.deploy.parity import compare
    from leapkit.models import create_student
    from leapkit.runtimes.base import run_batched
    from leapkit.runtimes.ort_runner import OrtRunner

    model = create_student("leapkit_demo_student", 32).eval()
    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, onnx_path, 32)
    info = tb.build_engine(onnx_path, tmp_path / "model.engine", input_name="images", chw=(3, 32, 32),
                           batch=BatchRange(1, 2, 4), precision="fp32", workspace_mb=256,
                           timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "model.engine.json").is_file() and (tmp_path / "timing.cache").is_file()
    assert info.tf32 is False and json.loads((tmp_path / "model.engine.json").read_text())["tf32"] is False
    assert info.gpu and info.compute_capability and tb.timing_cache_name().startswith("timing-trt")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = TensorRTRunner(tmp_path / "model.engine")(x)
    ref = run_batched(OrtRunner(onnx_path), x)
    assert min(s["cosine_min"] for s in compare(ref, got).values()) > 0.999


def test_the_jetson_page_states_the_jetson_extras_pin_and_where_tensorrt_comes_from():
    """docs/jetson.md gives the cuda-python pin pyproject.toml has, and JetPack's apt package for TensorRT."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [r for r in extras["jetson"] if r.startswith("cuda-python")]
    page = (root / "docs" / "jetson.md").read_text()
    flat = " ".join(page.split())
    assert f"`{pin}`" in flat and "pip install 'leapkit[jetson]'" in flat
    assert "apt install python3-libnvinfer" in flat and "--system-site-packages" in flat
