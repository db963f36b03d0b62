"""leapkit bench --host (leapkit.device): a bundle built, checked and timed on a "device" over a real sshd.

The device is this machine behind its own sshd (host and client keys in a temporary folder, loopback only). Only
trtexec and tegrastats are stand-ins there (tests/fixtures/trtexec, tests/fixtures/tegrastats), replaying real
published output from ../shared/trtexec-samples and ../shared/tegrastats-samples; ssh, scp, the bundle's scripts,
check_outputs.py and the parsing are the real ones. The tests check the contract with these tools, not a device.
"""

from __future__ import annotations

import getpass
import gzip
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from helpers import make_run

from leapkit.device.probe import check_versions, installed_tensorrt
from leapkit.device.round_trip import bench_on_host
from leapkit.device.ssh import Host, HostError, ssh_arguments
from leapkit.errors import CheckFailed, ConfigError
from leapkit.profiles import load_target

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
POWER_SAMPLES = SAMPLES.parent / "tegrastats-samples"
POWER_LOG = "orin-nano-super-jp6.2.2-hokwangchoi.txt"  # an Orin Nano Super from idle to full load
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STAND_IN = FIXTURES / "trtexec"
SSHD = Path("/usr/sbin/sshd")
LOG_10_3 = "trt10.3.0-rtxa5000-resnet50-fp16-full.log"
LOG_8_6 = "trt8.6.3-rtx3090-resnet-cifar10-int8-verbose-full.log.gz"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"trtexec samples not found at {SAMPLES}")
needs_power_samples = pytest.mark.skipif(not POWER_SAMPLES.is_dir(),
                                         reason=f"tegrastats samples not found at {POWER_SAMPLES}")


# --- units ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "host", "shown"), [
    ("jetson", Host("jetson"), "jetson"),
    ("nvidia@192.168.1.42", Host("192.168.1.42", "nvidia"), "nvidia@192.168.1.42"),
    ("root@127.0.0.1:2222", Host("127.0.0.1", "root", 2222), "root@127.0.0.1:2222"),
    ("[fe80::1]:22", Host("fe80::1", None, 22), "[fe80::1]:22"),
])
def test_host_parse(text, host, shown):
    assert Host.parse(text) == host
    assert str(host) == shown


@pytest.mark.parametrize("text", ["-oProxyCommand=touch /tmp/x", "a b", "user@", "host:0", "host:99999", "a@b@c", ""])
def test_host_parse_rejects(text):
    with pytest.raises(ConfigError, match=r"is not \[user@\]host\[:port\]"):
        Host.parse(text)


def test_host_scp_operand():
    assert Host("fe80::1", "me", 22).remote("/a/b/") == "me@[fe80::1]:/a/b/"
    assert Host("jetson").remote("/a") == "jetson:/a"


def test_ssh_arguments():
    got = ssh_arguments(["IdentityFile=/k", "-o", "BatchMode=no", "-i", "/key", "-4", "-oPort=2"])
    assert got == ("-o", "IdentityFile=/k", "-o", "BatchMode=no", "-i", "/key", "-4", "-oPort=2")
    with pytest.raises(ConfigError, match="give the port in --host"):
        ssh_arguments(["-p", "2222"])
    with pytest.raises(ConfigError, match="needs a value"):
        ssh_arguments(["-i"])
    with pytest.raises(ConfigError, match="is not an ssh_config setting"):
        ssh_arguments(["jetson"])


@needs_samples
def test_tensorrt_version_from_real_banners():
    banner_10 = (SAMPLES / LOG_10_3).read_text().splitlines()[0]
    banner_8 = gzip.decompress((SAMPLES / LOG_8_6).read_bytes()).decode().splitlines()[0]
    assert installed_tensorrt(banner_10) == "10.3.0"
    assert installed_tensorrt(banner_8) == "8.6.3"
    banner_85 = next(ln for ln in (SAMPLES / "trt8.2.5-a100class-mobilenetv2-qat-int8-full.log").read_text()
                     .splitlines() if ln.startswith("&&&& RUNNING"))
    assert installed_tensorrt(banner_85) == "8.2.5"


def test_tensorrt_version_from_the_package():
    assert installed_tensorrt("", "10.3.0.30-1+cuda12.5") == "10.3.0"
    assert installed_tensorrt("&&&& RUNNING TensorRT.trtexec # trtexec", "") is None  # 7.x banners have no version


def test_check_versions():
    profile, host = load_target("jetson-orin-nano"), Host("jetson")
    assert check_versions("10.3.0", profile, host) == []
    (minor,) = check_versions("10.7.0", profile, host)
    assert minor.startswith("jetson runs TensorRT 10.7.0, jetson-orin-nano expects 10.3 (JetPack 6.2)")
    (unknown,) = check_versions(None, profile, host)
    assert "could not tell the TensorRT version on jetson" in unknown
    with pytest.raises(HostError, match=r"^jetson runs TensorRT 8\.6\.2 but jetson-orin-nano expects 10\.3 "
                                        r"\(JetPack 6\.2\); install"):
        check_versions("8.6.2", profile, host)
    assert check_versions("10.9.1", replace(profile, tensorrt="10.x"), host) == []


def test_host_needs_a_tensorrt_target(tmp_path):
    with pytest.raises(ConfigError, match="target x86-cpu runs onnxruntime"):
        bench_on_host(tmp_path, "jetson", "fp16", tmp_path / "out", profile=load_target("x86-cpu"))


# --- the loopback device -------------------------------------------------------------------------------------------


@dataclass
class Loopback:
    """An sshd on 127.0.0.1 and what a client needs to use it without touching ~/.ssh."""

    port: int
    root: Path
    key: Path

    @property
    def host(self) -> str:
        return f"{getpass.getuser()}@127.0.0.1:{self.port}"

    def options(self, key: Path | None = None, **env: str) -> list[str]:
        """ssh_config settings: this sshd's known_hosts and ``key``; ``env`` reaches the remote commands (SetEnv)."""
        env = {"TRTEXEC": str(STAND_IN), "LEAPKIT_TRTEXEC_FIXTURES": str(SAMPLES),
               "XDG_CACHE_HOME": str(self.root / "device-cache"), **env}
        return [f"UserKnownHostsFile={self.root / 'known_hosts'}", "StrictHostKeyChecking=accept-new",
                f"IdentityFile={key or self.key}", "IdentitiesOnly=yes",
                "SetEnv=" + " ".join(f'{k}="{v}"' for k, v in env.items())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Loopback]:
    if not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.skip("needs OpenSSH (apt-get install openssh-server openssh-client): /usr/sbin/sshd, ssh or scp absent")
    if not SAMPLES.is_dir():
        pytest.skip(f"trtexec samples not found at {SAMPLES}")
    if subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode != 0:
        pytest.skip("the loopback device's python3 runs check_outputs.py, which needs numpy (JetPack's python3 has "
                    "it): apt-get install python3-numpy")
    privsep = Path("/run/sshd")  # sshd's privilege separation folder
    if not privsep.is_dir():
        if os.geteuid() != 0:
            pytest.skip("sshd needs /run/sshd, which only root can create")
        privsep.mkdir(mode=0o755, parents=True)
    root = tmp_path_factory.mktemp("sshd")
    host_key, key = _keygen(root / "host_key"), _keygen(root / "client_key")
    shutil.copyfile(root / "client_key.pub", root / "authorized_keys")
    port = _free_port()
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "StrictModes no", "UsePAM no",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "AcceptEnv TRTEXEC TEGRASTATS LEAPKIT_TRTEXEC_* LEAPKIT_TEGRASTATS_* XDG_CACHE_HOME",
        "Subsystem sftp internal-sftp", "",
    ]))
    with (root / "sshd.log").open("w") as err:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")], stderr=err)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield Loopback(port, root, key)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An fp16 deploy bundle for the Orin Nano (TensorRT 10.3, like the replayed log)."""
    import leapkit.deploy.export as ex

    run = make_run(tmp_path_factory.mktemp("remote") / "run")
    ex.export(run, target="jetson-orin-nano", precision="fp16", check=False, calib_images=32, parity_images=16,
              probe_images=200)
    return run / "export" / "jetson-orin-nano"


ORIN_NANO = load_target("jetson-orin-nano")


# --- the round trip ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_round_trip_reads_the_replayed_log_and_reuses_the_timing_cache(sshd, bundle, tmp_path):
    from leapkit.trtexec.read import read_trtexec

    options = sshd.options(XDG_CACHE_HOME=str(tmp_path / "device"))  # a device that has never seen this bundle
    first = bench_on_host(bundle, sshd.host, "fp16", tmp_path / "first", profile=ORIN_NANO, ssh_options=options)
    names = {f.name for f in first.files}
    assert names == {"trtexec.log", "times.json", "profile.json", "device.json"}
    assert first.check == tmp_path / "first" / "check.json" and json.loads(first.check.read_text())["passed"]
    assert all(f.parent == tmp_path / "first" for f in first.files)
    assert first.timing_cache_reused is False
    assert first.device["tensorrt"] == "10.3.0" and first.warnings == []
    assert first.remote_dir == str(tmp_path / "device" / "leapkit" / "bundles" / "run-jetson-orin-nano")
    assert (Path(first.remote_dir) / "timing.cache").is_file()
    assert {p.name for p in first.logs} >= {"build_engine.txt", "check_engine.txt", "bench_engine.txt"}

    imported = read_trtexec(first.files)
    (run,) = [r for r in imported.runs if Path(r.source).name == "trtexec.log"]
    assert run.tensorrt == "10.3.0" and run.device == "NVIDIA RTX A5000"
    assert run.throughput_qps == pytest.approx(191.317, rel=1e-6)
    assert run.latency_ms["p99"] == pytest.approx(6.44324, rel=1e-6)
    assert run.gpu_compute_ms["mean"] == pytest.approx(5.21617, rel=1e-6)
    assert imported.profile is not None

    second = bench_on_host(bundle, sshd.host, "fp16", tmp_path / "second", profile=ORIN_NANO, ssh_options=options)
    assert second.timing_cache_reused is True
    assert {f.name for f in second.files} == names


def _power_options(sshd: Loopback) -> list[str]:
    """The device with a tegrastats that replays real lines: a 2 s idle baseline and a 2 s timing run (at 100 ms a
    line, time enough for samples in each even on a loaded machine)."""
    return sshd.options(TEGRASTATS=str(FIXTURES / "tegrastats"), LEAPKIT_TEGRASTATS_FIXTURES=str(POWER_SAMPLES),
                        LEAPKIT_TEGRASTATS_LOG=POWER_LOG, LEAPKIT_TEGRASTATS_IDLE_S="2",
                        LEAPKIT_TRTEXEC_INFERENCE_S="2")


def _vdd_in_w(lines: list[str]) -> list[float]:
    """VDD_IN of each line, in W, read another way than leapkit.device.tegrastats reads it."""
    return [int(line.split(" VDD_IN ")[1].split("mW/")[0]) / 1000 for line in lines]


@pytest.mark.slow
@needs_power_samples
def test_power_comes_back_from_the_replayed_tegrastats_lines(sshd, bundle, tmp_path):
    run = bench_on_host(bundle, sshd.host, "fp16", tmp_path, profile=ORIN_NANO, ssh_options=_power_options(sshd))
    lines = (tmp_path / "tegrastats.txt").read_text().splitlines()
    real = (POWER_SAMPLES / POWER_LOG).read_text().splitlines()
    assert lines and all(line in real for line in lines)  # the stand-in's lines are the real ones, unedited
    marks = [line.split() for line in (tmp_path / "tegrastats_marks.txt").read_text().splitlines()]
    assert [m[0] for m in marks] == ["idle_end", "inference_start", "inference_end", "timing_end"]
    idle_end, start, end, _ = (int(m[1]) for m in marks)
    assert 0 < idle_end <= start < end <= len(lines)  # the baseline, then samples inside the timing run

    power = run.power
    assert power is not None and power.window == "timing run" and power.lines_skipped == 0
    assert (power.idle_samples, power.samples) == (idle_end, end - start)
    assert power.mean_w == pytest.approx(sum(_vdd_in_w(lines[start:end])) / (end - start), rel=1e-12)
    assert power.idle_w == pytest.approx(sum(_vdd_in_w(lines[:idle_end])) / idle_end, rel=1e-12)
    assert power.peak_w == max(_vdd_in_w(lines[start:end]))
    assert power.board_power_source == "VDD_IN" and set(power.rails_mean_w) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    on_device = Path(run.remote_dir) / "results" / "fp16" / "tegrastats.txt"
    size = on_device.stat().st_size
    time.sleep(0.3)
    assert on_device.stat().st_size == size  # stopped with the timing run


@pytest.mark.slow
def test_unreachable_host_is_one_line(bundle, tmp_path):
    port = _free_port()  # nothing listens there
    with pytest.raises(HostError) as exc:
        bench_on_host(bundle, f"root@127.0.0.1:{port}", "fp16", tmp_path, profile=ORIN_NANO,
                      ssh_options=["-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}"])
    assert str(exc.value).startswith(f"cannot reach root@127.0.0.1:{port} (ssh: connect to host 127.0.0.1 port "
                                     f"{port}: Connection refused); check the address and port")
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_refused_key_is_one_line(sshd, bundle, tmp_path):
    stranger = _keygen(tmp_path / "stranger")
    with pytest.raises(HostError) as exc:
        bench_on_host(bundle, sshd.host, "fp16", tmp_path, profile=ORIN_NANO, ssh_options=sshd.options(stranger))
    assert str(exc.value).startswith(f"{sshd.host} refused the SSH key (")
    assert "Permission denied (publickey)" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.slow
def test_missing_trtexec_is_one_line(sshd, bundle, tmp_path):
    assert shutil.which("trtexec") is None and not Path("/usr/src/tensorrt/bin/trtexec").exists()
    with pytest.raises(HostError, match=rf"^no trtexec on {sshd.host} \(not on PATH, not in "
                                        r"/usr/src/tensorrt/bin/trtexec\); install TensorRT there"):
        bench_on_host(bundle, sshd.host, "fp16", tmp_path, profile=ORIN_NANO,
                      ssh_options=sshd.options(TRTEXEC=str(tmp_path / "nowhere" / "trtexec")))
    assert not list(tmp_path.glob("*.txt"))  # stopped before anything ran


@pytest.mark.slow
def test_another_tensorrt_major_version_is_refused(sshd, bundle, tmp_path):
    with pytest.raises(HostError, match=rf"^{sshd.host} runs TensorRT 8\.6\.3 but jetson-orin-nano expects 10\.3"):
        bench_on_host(bundle, sshd.host, "fp16", tmp_path, profile=ORIN_NANO,
                      ssh_options=sshd.options(LEAPKIT_TRTEXEC_LOG=LOG_8_6))


@pytest.mark.slow
def test_parity_failure_on_the_device_exits_1(sshd, bundle, tmp_path):
    with pytest.raises(CheckFailed) as exc:
        bench_on_host(bundle, sshd.host, "fp16", tmp_path, profile=ORIN_NANO,
                      ssh_options=sshd.options(LEAPKIT_TRTEXEC_PARITY="fail"))
    assert exc.value.exit_code == 1
    assert str(exc.value).startswith(f"the fp16 engine built on {sshd.host} failed the parity check against "
                                     f"manifest.json (")
    checked = (tmp_path / "check_engine.txt").read_text()
    assert "worst cosine per image" in checked and checked.rstrip().endswith("FAIL")  # check_outputs.py's verdict
    assert not (tmp_path / "bench_engine.txt").exists()  # a wrong engine is not timed


def test_precision_not_in_the_bundle(bundle, tmp_path):
    with pytest.raises(ConfigError, match=r"holds no int8 model \(it has fp32, fp16\)"):
        bench_on_host(bundle, "jetson", "int8", tmp_path, profile=ORIN_NANO)


# --- the CLI -------------------------------------------------------------------------------------------------------


def _cli_has_host() -> bool:
    from leapkit.cli.bench import bench_cmd

    return "host" in bench_cmd.__code__.co_varnames


@pytest.mark.slow
@pytest.mark.skipif(not _cli_has_host(), reason="leapkit bench has no --host flag yet (cli/bench.py)")
def test_cli_bench_host_writes_a_measured_report(sshd, bundle, monkeypatch, capsys):
    from helpers import run_cli

    run = bundle.parents[1]
    args = ["bench", str(run), "--target", "jetson-orin-nano", "--host", sshd.host]
    for option in sshd.options():
        args += ["--ssh-option", shlex.quote(option)]  # the CLI splits each value as a shell would
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    report = json.loads((run / "bench" / "jetson-orin-nano.json").read_text())
    assert report["evidence"] == "measured" and report["verdict"] == "PASS"  # p99 6.44 ms against 33.3 ms
    assert sshd.host in json.dumps(report["environment"])
    (result,) = report["results"]
    assert result["runtime"] == "tensorrt" and result["precision"] == "fp16"
    assert result["p99_ms"] == pytest.approx(6.44324, rel=1e-6)
    assert (bundle / "results" / "fp16" / "trtexec.log").is_file()  # the device's results, kept beside the bundle



@pytest.mark.slow
@needs_power_samples
@pytest.mark.skipif(not _cli_has_host(), reason="leapkit bench has no --host flag yet (cli/bench.py)")
def test_cli_bench_host_reports_power_and_fails_an_energy_budget(sshd, bundle, tmp_path, monkeypatch, capsys):
    from helpers import run_cli

    args = ["bench", str(bundle.parents[1]), "--target", "jetson-orin-nano", "--host", sshd.host, "--out",
            str(tmp_path), "--budget-mj", "0.5"]  # the Orin Nano Super at ~10-21 W: far more than 0.5 mJ an image
    for option in _power_options(sshd):
        args += ["--ssh-option", shlex.quote(option)]
    code, err = run_cli(args, monkeypatch, capsys)
    report = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert report["verdict"] == "PASS" and report["energy_verdict"] == "FAIL" and code == 1, err
    (result,) = report["results"]
    power = result["power"]
    assert power["samples"] >= 1 and power["idle_samples"] >= 1 and power["board_power_source"] == "VDD_IN"
    assert 6.0 < power["idle_w"] <= power["peak_w"] <= 21.507  # within the replayed lines' VDD_IN
    assert result["energy_mj"] == pytest.approx(power["mean_w"] * result["mean_ms"] / result["batch"], rel=1e-9)
    assert result["energy_above_idle_mj"] == pytest.approx(
        (power["mean_w"] - power["idle_w"]) * result["mean_ms"] / result["batch"], rel=1e-9)
    assert report["energy_verdict_reason"].startswith(f"TensorRT engine fp16 {result['energy_mj']:.4g} mJ per "
                                                      f"inference > 0.5 mJ")
    md = (tmp_path / "bench" / "jetson-orin-nano.md").read_text()
    assert "## Power" in md and "**Energy: FAIL**" in md
