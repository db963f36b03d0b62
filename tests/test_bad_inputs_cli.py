"""Bad inputs to bench, plan, calibrate and the entry point itself (issue 19): one line on stderr, the right exit code.

Usage errors are click's and used to print a boxed usage text; ``nan``/``inf`` budgets passed into plan's JSON;
``--threads 999`` ran for minutes; bench wrote its report only after the timing; calibrate --host exported every
microbenchmark before it tried the host; a cut trtexec log or another GPU's log could confirm a budget.
The trtexec tests read ../shared/trtexec-samples (skipped when absent) and cut copies into tmp_path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from leapkit.cli.options import POSITIVE_MS, FiniteFloat
from leapkit.device.ssh import Connection, Host
from leapkit.errors import ConfigError
from leapkit.latency import timing
from leapkit.trtexec.read import read_trtexec

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "trtexec-samples"
ORIN_LOG = SAMPLES / "trt8.5.2-orin-nano-yolox-fp16-summary.log"  # names no device; p99 10.9744 ms
A5000_LOG = SAMPLES / "trt10.3.0-rtxa5000-resnet50-fp16-full.log"  # an RTX A5000's log; p99 6.44324 ms
needs_samples = pytest.mark.skipif(not ORIN_LOG.is_file(), reason="../shared/trtexec-samples is absent")
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
          "--inh-caps", "-dac_override,-dac_read_search,-fowner"]


def leapkit_cli(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) \
        -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh process (``python -m leapkit``)."""
    return subprocess.run([*prefix, sys.executable, "-m", "leapkit", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- item 13: every usage error is one line -------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["export", "--batch", "0"], "Invalid value for '--batch'"),
    (["plan", "--target", "x86-cpu", "--img-size", "0"], "Invalid value for '--img-size'"),
    (["plan", "--target", "x86-cpu", "--bogus"], "No such option: --bogus"),
    (["plan"], "Missing option '--target'"),
    (["profiles", "show"], "Missing argument"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_usage_errors_are_one_line_exit_2(args, message):
    r = leapkit_cli(*args)
    line = one_line(r.stderr)
    command = " ".join(["leapkit", *(a for a in args[:2] if a in ("export", "plan", "profiles", "show"))])
    assert r.returncode == 2 and line.startswith("error: ") and message in line, r.stderr
    assert line.endswith(f"(see {command} --help)"), line
    assert "╭" not in r.stderr and "Usage:" not in r.stderr


def test_help_version_and_no_arguments_still_work():
    assert leapkit_cli("--version").stdout.startswith("leapkit ")
    r = leapkit_cli("plan", "--help")
    assert r.returncode == 0 and "--budget-ms" in r.stdout
    r = leapkit_cli()
    assert r.returncode == 2 and "Usage:" in r.stdout + r.stderr and "error:" not in r.stderr


def test_ctrl_c_is_one_line_exit_130(monkeypatch, capsys):
    import leapkit.planning.plan

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(leapkit.planning.plan, "plan", interrupted)
    code, err = run_cli(["plan", "--target", "x86-cpu"], monkeypatch, capsys)
    assert (code, one_line(err)) == (130, "error: interrupted (Ctrl-C); rerun the command to do it again")


# --- item 7: LEAPKIT_DEBUG adds the traceback, never changes the exit code ------------------------------------------


def test_leapkit_debug_keeps_the_exit_code_and_adds_the_traceback():
    quiet = leapkit_cli("plan", "--target", "no-such-target", env={"LEAPKIT_DEBUG": "0"})
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert one_line(quiet.stderr).startswith("error: unknown target 'no-such-target'")
    debug = leapkit_cli("plan", "--target", "no-such-target", env={"LEAPKIT_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == one_line(quiet.stderr)


# --- item 11: nan and inf are refused everywhere; plan's JSON is strict ---------------------------------------------


@pytest.mark.parametrize("args", [
    ["plan", "--target", "x86-cpu", "--format", "json", "--budget-ms", "nan"],
    ["plan", "--target", "x86-cpu", "--format", "json", "--budget-ms", "inf"],
    ["distill", "--student", "auto", "--target", "x86-cpu", "--budget-ms", "nan"],
    ["bench", "--target", "x86-cpu", "--budget-ms", "inf"],
])
def test_non_finite_budgets_are_usage_errors(args, monkeypatch, capsys):
    code, err = run_cli(args, monkeypatch, capsys)
    value = args[-1]
    assert code == 2 and one_line(err) == (f"error: --budget-ms must be > 0, got {value}: pass a finite number of ms "
                                           f"(see leapkit {args[0]} --help)")


@pytest.mark.parametrize("args, message", [
    (["plan", "--target", "x86-cpu", "--utilisation", "nan"], "--utilisation must be in (0, 1], got nan"),
    (["bench", "--duration", "nan"], "--duration must be > 0, got nan"),
    (["bench", "--baseline", "b.json", "--max-regression", "inf"], "--max-regression must be >= 0, got inf"),
    (["calibrate", "--target", "x86-cpu", "--warmup", "nan"], "--warmup must be >= 0, got nan"),
    (["calibrate", "--target", "x86-cpu", "--duration", "inf"], "--duration must be >= 0.01, got inf"),
])
def test_non_finite_seconds_and_thresholds_are_usage_errors(args, message, monkeypatch, capsys):
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and message in one_line(err)


def test_finite_float_parser():
    assert POSITIVE_MS("12.5") == 12.5
    for bad in ("nan", "inf", "-inf", "0", "-1", "abc", ""):
        with pytest.raises(ValueError, match="must be > 0"):
            POSITIVE_MS(bad)
    fraction = FiniteFloat(high=1.0)
    assert fraction("1") == 1.0
    with pytest.raises(ValueError, match=r"must be in \(0, 1\], got 1.5"):
        fraction("1.5")


def test_plan_library_refuses_a_nan_budget():
    from leapkit.planning.plan import PlanRequest, plan
    from leapkit.profiles import load_target

    with pytest.raises(ConfigError, match="--budget-ms must be a finite number of ms > 0, got nan"):
        plan(PlanRequest(profile=load_target("x86-cpu"), budget_ms=math.nan))


def test_plan_json_is_strict_json():
    r = leapkit_cli("plan", "--target", "x86-cpu", "--format", "json", "--budget-ms", "5", "--student",
                    "vit_tiny_patch16_224")

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in plan's JSON")

    rows = json.loads(r.stdout, parse_constant=refuse)
    assert r.returncode == 0 and rows and all(row["budget_ms"] == 5 for row in rows)


# --- item 9: --threads against the usable cores --------------------------------------------------------------------


def test_absurd_thread_counts_are_refused_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(timing, "usable_cores", lambda: 2)
    code, err = run_cli(["bench", str(tmp_path / "no-such-run"), "--target", "x86-cpu", "--threads", "999"],
                        monkeypatch, capsys)
    assert (code, one_line(err)) == (2, "error: --threads 999 is not a usable thread count here: this process may "
                                        "use 2 cores; pass --threads 2 or fewer (or auto)")
    code, err = run_cli(["calibrate", "--target", "x86-cpu", "--threads", "9"], monkeypatch, capsys)
    assert code == 2 and "--threads 9 is not a usable thread count here" in one_line(err)


def test_more_threads_than_cores_is_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(timing, "usable_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="leapkit.latency.timing"):
        assert timing.parse_threads("3") == 3
        assert timing.parse_threads("2") == 2
    (record,) = caplog.records
    assert record.getMessage().startswith("--threads 3 is more than the 2 cores this process may use")
    monkeypatch.setattr(timing, "usable_cores", lambda: 512)
    with pytest.raises(ConfigError, match="--threads 1025 is not a usable thread count"):
        timing.parse_threads(1025)


# --- item 5: bench's outputs are checked before the timing ----------------------------------------------------------


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A folder this test's commands cannot write to (they run without the file-permission capabilities)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed: no way to drop root's file-permission capabilities")
    probe = subprocess.run([*NO_DAC, "sh", "-c", f"touch {folder}/probe"], capture_output=True, text=True)
    if probe.returncode == 0 or (folder / "probe").exists():
        pytest.skip(f"setpriv could not drop the file-permission capabilities ({probe.stderr.strip()})")
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("flag, what", [("--out", "the bench report"), ("--junit", "--junit")])
def test_bench_outputs_in_a_read_only_folder_exit_2_before_any_work(flag, what, read_only, tmp_path):
    target = read_only / "out" if flag == "--out" else read_only / "latency.xml"
    r = leapkit_cli("bench", str(tmp_path / "no-such-run"), "--target", "x86-cpu", flag, str(target), prefix=NO_DAC)
    line = one_line(r.stderr)
    assert r.returncode == 2 and line.startswith(f"error: cannot write {what} ") and str(read_only) in line, line
    assert "is not writable (permission denied)" in line and "no-such-run" not in line  # the model was not looked at


@needs_samples
def test_bench_from_trtexec_into_a_read_only_folder_exit_2(read_only):
    r = leapkit_cli("bench", "--from-trtexec", str(ORIN_LOG), "--target", "jetson-orin-nano", "--out",
                    str(read_only), prefix=NO_DAC)
    assert r.returncode == 2 and "cannot write the bench report into" in one_line(r.stderr)


# --- item 10: calibrate --host reaches the host first; the hint keeps the port and key ------------------------------


def test_the_ssh_hint_keeps_the_port_and_the_key():
    conn = Connection(Host.parse("nvidia@jetson:2222"), ("-i", "/keys/jetson"))
    error = conn.transport_error("ssh: connect to host jetson port 2222: Connection timed out")
    assert str(error).endswith("(try: ssh -p 2222 -i /keys/jetson nvidia@jetson)")


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_calibrate_an_unreachable_host_fails_before_exporting(monkeypatch, capsys):
    import leapkit.planning.fit as calibrate_module

    def exported(*args, **kwargs):
        raise AssertionError("a microbenchmark was exported before the host was reached")

    monkeypatch.setattr(calibrate_module, "export_graphs", exported)
    # port 1 on the loopback: nothing listens there, so ssh is refused at once
    code, err = run_cli(["calibrate", "--target", "jetson-orin-nano", "--host", "nvidia@127.0.0.1:1", "--ssh-option",
                         "-i /keys/jetson", "--no-progress"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and line.startswith("error: cannot reach nvidia@127.0.0.1:1 (")
    assert line.endswith("(try: ssh -p 1 -i /keys/jetson nvidia@127.0.0.1)")


# --- item 12: a cut log and another device's log never confirm a budget ---------------------------------------------


def cut_log(source: Path, dest: Path, after: str) -> Path:
    """``source`` cut just after the first ``after`` (as a copy that stopped mid-transfer)."""
    text = source.read_text()
    dest.write_text(text[: text.index(after) + len(after)])
    return dest


@needs_samples
def test_a_log_cut_before_the_judged_statistic_says_so(tmp_path, monkeypatch, capsys):
    cut = cut_log(ORIN_LOG, tmp_path / "cut.log", "percentile(95%) = 10.949 ms, ")
    code, err = run_cli(["bench", "--from-trtexec", str(cut), "--target", "jetson-orin-nano", "--out",
                         str(tmp_path)], monkeypatch, capsys)
    assert (code, one_line(err)) == (2, f"error: {cut}: the log ends inside its performance summary (truncated?), "
                                        "so it has no p99 latency; pass the whole log (copy it again from the device, "
                                        "or rerun bench_engine.sh there)")
    assert not (tmp_path / "bench").exists()


@needs_samples
def test_a_log_cut_after_the_judged_statistic_is_a_warning(tmp_path, monkeypatch, capsys):
    cut = cut_log(ORIN_LOG, tmp_path / "cut.log", "percentile(95%) = 10.949 ms, ")
    code, err = run_cli(["bench", "--from-trtexec", str(cut), "--target", "jetson-orin-nano", "--stat", "p50",
                         "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert report["verdict"] == "PASS" and report["results"][0]["p99_ms"] is None
    assert (f"{cut}: the log ends inside its performance summary (truncated?); the figures after the cut are "
            "missing") in report["warnings"]


@needs_samples
def test_whole_published_logs_are_not_taken_for_cut_ones():
    logs = sorted(p for pattern in ("*.log", "*.log.gz", "more/*.log", "more/*.log.gz") for p in SAMPLES.glob(pattern))
    runs = []
    for log_file in logs:
        try:
            runs += read_trtexec([log_file]).runs
        except Exception:  # a log with no summary (a --dumpProfile run) has nothing to judge
            continue
    assert len(runs) > 10 and [r.source for r in runs if r.truncated] == []


@needs_samples
def test_another_devices_log_leaves_the_budget_unconfirmed(tmp_path, monkeypatch, capsys):
    args = ["bench", "--from-trtexec", str(A5000_LOG), "--target", "jetson-orin-nano", "--out", str(tmp_path)]
    code, err = run_cli(args, monkeypatch, capsys)
    report = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert code == 0 and (report["evidence"], report["verdict"]) == ("imported", "UNCONFIRMED")
    assert report["verdict_reason"].startswith("the trtexec figures come from 'NVIDIA RTX A5000', not "
                                               "jetson-orin-nano: another device's figures do not judge its budget")
    assert report["results"][0]["budget_ok"] is None
    code, err = run_cli([*args, "--require-measured"], monkeypatch, capsys)
    assert code == 1 and "UNCONFIRMED" in one_line(err)
    code, err = run_cli([*args, "--allow-other-device"], monkeypatch, capsys)
    report = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert code == 0 and report["verdict"] == "PASS"
    assert any("which does not match jetson-orin-nano" in w for w in report["warnings"])


def test_allow_other_device_needs_from_trtexec(monkeypatch, capsys, tmp_path):
    code, err = run_cli(["bench", str(tmp_path), "--target", "x86-cpu", "--allow-other-device"], monkeypatch, capsys)
    assert (code, one_line(err)) == (2, "error: --allow-other-device applies to --from-trtexec (another device's "
                                        "trtexec output)")


# --- files given under the wrong name or kind -----------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["distill", "--recipe", "{file}"], "recipe file {file} is not named .yaml or .yml; rename it (e.g. r.yaml)"),
    (["export", "runs/none", "--target", "{file}"],
     "target profile file {file} is not named .yaml or .yml; rename it (e.g. r.yaml)"),
    (["distill", "--out", "{file}"], "--out {file} is a file, not a folder; pass --out NEW_DIR"),
    (["distill", "--out", "{file}", "--overwrite"], "--out {file} is a file, not a folder; pass --out NEW_DIR"),
])
def test_an_existing_file_of_the_wrong_kind_is_named_as_such(args, message, tmp_path, monkeypatch, capsys):
    file = tmp_path / "r.txt"
    file.write_text("model: {}\n")
    code, err = run_cli([a.format(file=file) for a in args], monkeypatch, capsys)
    assert code == 2 and one_line(err) == "error: " + message.format(file=file), err
    assert file.read_text() == "model: {}\n"


def test_plan_names_the_teacher_it_cannot_find(monkeypatch, capsys):
    code, err = run_cli(["plan", "--target", "x86-cpu", "--teacher", "vit_nope"], monkeypatch, capsys)
    assert code == 2 and "unknown timm model 'vit_nope' for the teacher" in one_line(err), err


def test_a_read_only_folder_is_named_with_the_file_asked_for_not_a_temporary_one(read_only):
    code = ("import sys; from pathlib import Path; from leapkit.records import atomic_write_bytes\n"
            "try:\n    atomic_write_bytes(Path(sys.argv[1]), b'png')\n"
            "except PermissionError as e:\n    print(e.filename)")
    r = subprocess.run([*NO_DAC, sys.executable, "-c", code, str(read_only / "plan.png")], capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.strip() == str(read_only / "plan.png"), r.stdout + r.stderr
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999"])
def test_a_seed_out_of_range_is_one_line(seed, tmp_path, monkeypatch, capsys):
    code, err = run_cli(["distill", "--seed", seed, "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and one_line(err) == f"error: train.seed must be in [0, 2**32), got {seed} (--seed)", err
    assert not (tmp_path / "run").exists()

