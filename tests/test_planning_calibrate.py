"""`leapkit calibrate`: microbenchmarks exported with leapkit's export pieces, timed on the target, fitted, written.

The CPU path runs for real (ONNX Runtime on this machine, the quick grid, short timings). The TensorRT path
runs its device script on this machine with trtexec replaced by tests/fixtures/trtexec, which replays a real
published TensorRT 10.3 log from ../shared/trtexec-samples: the script, its flags and the reading of the logs
are what is tested, not the numbers.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leapkit.errors import ConfigError
from leapkit.latency.machine import TargetMatch
from leapkit.planning import device_timing
from leapkit.planning import fit as fit_module
from leapkit.planning.fit import FitRequest, fit_latency_model
from leapkit.planning.fit_file import LatencyFit
from leapkit.planning.microbench import GRID, QUICK_GRID, Micro
from leapkit.planning.shape import of_timm
from leapkit.planning.target_model import model_for
from leapkit.profiles import load_target

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"trtexec samples not found at {SAMPLES}")


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_the_grid_never_holds_the_widths_it_is_judged_on():
    assert not {m.dim for m in GRID} & {192, 384, 768}
    assert len(QUICK_GRID) >= 8 and len(GRID) >= 2 * 8  # at least the 8 coefficients, twice over by default
    assert Micro(128, 2, 112, 16, True).name == "d128x2-p16-112px-ls"


@pytest.mark.slow
def test_calibrate_a_cpu_target_through_the_entry_point(tmp_path):
    # A process of its own: the microbenchmarks export and time fresh graphs, and sharing the test process
    # with hundreds of earlier ONNX Runtime sessions crashed it natively in the full suite.
    out = tmp_path / "x86.json"
    proc = subprocess.run(
        [sys.executable, "-m", "leapkit", "calibrate", "--target", "x86-cpu", "--quick", "--precision", "fp32",
         "--duration", "0.05", "--warmup", "0", "--rounds", "2", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cal = LatencyFit.read(out)
    assert cal.target == "x86-cpu" and cal.runtime == "onnxruntime" and cal.threads == 2
    assert "fastest of 2 interleaved rounds" in cal.method
    assert cal.environment["cpu"] and cal.environment["host"] and cal.created[:2] == "20"
    assert set(cal.efficiencies) == {"fp32"} and len(cal.samples) == len(QUICK_GRID)
    assert all(s.measured_ms > 0 and s.fitted_ms and s.loo_ms for s in cal.samples)
    model = model_for(load_target("x86-cpu"), out)
    p = model.predict(of_timm("vit_tiny_patch16_224", 224), "fp32")
    assert model.calibrated and p.calibrated and p.low_ms < p.ms < p.high_ms and "calibrated on" in p.source


def test_calibrating_elsewhere_than_on_the_target_is_refused(monkeypatch):
    monkeypatch.setattr("leapkit.latency.machine.target_match",
                        lambda profile, env: TargetMatch(False, "nothing on vm matches 'Jetson Orin Nano'", "vm"))
    plan = FitRequest(load_target("jetson-orin-nano"), grid=QUICK_GRID)
    with pytest.raises(ConfigError, match=r"this machine is not jetson-orin-nano \(nothing on vm matches 'Jetson Orin "
                                          r"Nano'\); calibrate on --host \[user@\]device to time them on the device"):
        fit_latency_model(plan)


def test_host_is_for_tensorrt_targets_and_precisions_must_be_the_targets():
    with pytest.raises(ConfigError, match="--host times TensorRT engines on a device, but x86-cpu runs onnxruntime"):
        fit_latency_model(FitRequest(load_target("x86-cpu"), host="pi@box"))
    with pytest.raises(ConfigError, match="target x86-cpu does not run fp16; its precisions are fp32, int8"):
        fit_latency_model(FitRequest(load_target("x86-cpu"), precisions=("fp16",)))


def test_the_device_script_uses_the_bundles_trtexec_flags():
    graphs = [device_timing.Graph("d64x1-p16-32px_fp16.onnx", "fp16", 32)]
    text = device_timing.script(graphs, "10.3", 1024)
    line = next(ln for ln in text.splitlines() if ln.startswith('"$TRTEXEC"'))
    args = shlex.split(line.split(">")[0])[1:]
    assert args == ["--onnx=d64x1-p16-32px_fp16.onnx", "--shapes=images:1x3x32x32", "--stronglyTyped",
                    "--useCudaGraph", "--useSpinWait", "--noDataTransfers", "--warmUp=200", "--duration=2",
                    "--percentile=90,95,99", "--memPoolSize=workspace:1024"]
    assert "logs/d64x1-p16-32px_fp16.log" in line
    assert "--fp16" in device_timing.script(graphs, "8.6", None)  # TensorRT 8.6 takes the precision from flags



@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is absent (apt-get install shellcheck)")
@pytest.mark.parametrize("version", ["8.6", "10.3"])
def test_the_device_script_passes_shellcheck(version, tmp_path):
    graphs = [device_timing.Graph("d64x1-p16-32px_fp16.onnx", "fp16", 32), device_timing.Graph("g.onnx", "fp32", 32)]
    (tmp_path / device_timing.SCRIPT).write_text(device_timing.script(graphs, version, 1024))
    proc = subprocess.run(["shellcheck", str(tmp_path / device_timing.SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout

@needs_samples
@pytest.mark.slow
def test_calibrate_a_tensorrt_target_on_the_device_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(fit_module, "_check_here", lambda profile: {"host": "orin", "device_model": "stand-in"})
    monkeypatch.setenv("TRTEXEC", str(FIXTURES / "trtexec"))
    monkeypatch.setenv("LEAPKIT_TRTEXEC_FIXTURES", str(SAMPLES))
    assert os.access(FIXTURES / "trtexec", os.X_OK)
    cal, path = fit_latency_model(FitRequest(load_target("jetson-orin-nano"), precisions=("fp16",), grid=QUICK_GRID,
                                        out=tmp_path / "orin.json", progress=False))
    assert path == tmp_path / "orin.json" and cal.runtime == "tensorrt" and cal.threads is None
    # the replayed RTX A5000 log times every graph alike: its median GPU compute time
    times = {s.measured_ms for s in cal.samples}
    assert len(times) == 1 and 0 < times.pop() < 10
    assert "trtexec on the device" in cal.method


def test_a_missing_or_empty_log_is_named(tmp_path):
    graphs = [device_timing.Graph("g.onnx", "fp16", 32)]
    with pytest.raises(Exception, match=r"no trtexec log for g.onnx"):
        device_timing.read_times(tmp_path, graphs)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "g.log").write_text("[I] nothing timed\n")
    with pytest.raises(Exception, match=r"trtexec printed no GPU compute time for g.onnx"):
        device_timing.read_times(tmp_path, graphs)
