"""leapkit.device.tegrastats on real tegrastats lines (../shared/tegrastats-samples), the power in bench reports, the
energy budget, and device_info's clocks.

The samples' expected.json holds figures typed by hand from the first and last line of each file; the energy checks
compare with a hand computation from those figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leapkit.deploy import device_info
from leapkit.device.tegrastats import (
    LOG,
    MARKS,
    PowerSummary,
    energy_mj,
    parse_line,
    read_marks,
    read_power,
    read_tegrastats,
    summarize,
)
from leapkit.latency.records import BenchResult
from leapkit.latency.verdict import decide_energy

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "tegrastats-samples"
TRTEXEC_LOG = SHARED / "trtexec-samples" / "trt10.3.0-rtxa5000-resnet50-fp16-full.log"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text())["files"] if SAMPLES.is_dir() else {}
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"tegrastats samples not found at {SAMPLES}")
FILES = sorted(EXPECTED) or ["(samples absent)"]
WITH_RAILS = [f for f in FILES if EXPECTED.get(f, {}).get("first", {}).get("rails")] or ["(samples absent)"]


def _lines(name: str) -> list[str]:
    return (SAMPLES / name).read_text().splitlines()


def _as_expected(s) -> dict:
    """A sample in expected.json's form: fields the line does not print left out."""
    out = {"line_no": s.line_no, "ram_used_mb": s.ram_used_mb, "ram_total_mb": s.ram_total_mb,
           "rails": [{"name": r.name, "cur_mw": r.cur_mw, "avg_mw": r.avg_mw} for r in s.rails]}
    optional = {"timestamp": s.timestamp, "gr3d_util_pct": s.gr3d_util_pct, "gr3d2_util_pct": s.gr3d2_util_pct,
                "emc_util_pct": s.emc_util_pct, "emc_freq_mhz": s.emc_freq_mhz,
                "gr3d_freq_mhz": list(s.gr3d_freq_mhz) or None, "gr3d2_freq_mhz": list(s.gr3d2_freq_mhz) or None,
                "total_power_mw": s.total_power_mw, "total_power_source": s.total_power_source}
    return {**out, **{k: v for k, v in optional.items() if v is not None}}


# --- every real line ------------------------------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("name", FILES)
def test_first_and_last_lines_match_the_hand_typed_figures(name):
    expected = EXPECTED[name]
    log = read_tegrastats((SAMPLES / name).read_text())
    assert log.skipped == 0 and len(log.samples) == expected["line_count"]  # every real line is read
    for which in ("first", "last"):
        want = dict(expected[which])
        for key in ("gr3d_freq_mhz", "gr3d2_freq_mhz"):  # "@921" is one clock, as "@[921]" is
            if isinstance(want.get(key), int):
                want[key] = [want[key]]
        (sample,) = [s for s in log.samples if s.line_no == want["line_no"]]
        assert _as_expected(sample) == want


@needs_samples
@pytest.mark.parametrize("name", WITH_RAILS)
def test_energy_matches_a_hand_computation_from_the_first_and_last_lines(name):
    first, last = EXPECTED[name]["first"], EXPECTED[name]["last"]
    lines = _lines(name)
    log = read_tegrastats("\n".join([lines[first["line_no"] - 1], lines[last["line_no"] - 1]]) + "\n")
    latency_ms, batch = 7.25, 4
    # the whole two-line log as the run: mean board power of the two lines
    power = summarize(log)
    hand_w = (first["total_power_mw"] + last["total_power_mw"]) / 2 / 1000
    assert power.mean_w == pytest.approx(hand_w, rel=1e-12)
    assert power.peak_w == max(first["total_power_mw"], last["total_power_mw"]) / 1000
    total, above = power.energy(latency_ms, batch)
    assert total == pytest.approx(hand_w * latency_ms / batch, rel=0.01)
    assert above is None and power.idle_w is None  # no marks: no baseline
    # marked: the first line idle, the last the timing run
    marked = summarize(log, {"idle_end": 1, "inference_start": 1, "inference_end": 2})
    assert (marked.idle_samples, marked.samples) == (1, 1)
    total, above = marked.energy(latency_ms, batch)
    assert total == pytest.approx(last["total_power_mw"] / 1000 * latency_ms / batch, rel=0.01)
    assert above == pytest.approx((last["total_power_mw"] - first["total_power_mw"]) / 1000 * latency_ms / batch,
                                  rel=0.01)
    assert marked.board_power_source == first["total_power_source"]


@needs_samples
def test_a_whole_log_summarised_against_the_lines():
    name = "orin-nano-super-jp6.2.2-hokwangchoi.txt"  # idle to full load, VDD_IN with mW, GR3D @[1017]
    lines = _lines(name)
    power = summarize(read_tegrastats("\n".join(lines)), {"idle_end": 10, "inference_start": 12,
                                                            "inference_end": 40})
    vdd_in = [int(line.split("VDD_IN ")[1].split("mW")[0]) for line in lines]  # the figure, read another way
    assert power.samples == 28 and power.idle_samples == 10
    assert power.mean_w == pytest.approx(sum(vdd_in[12:40]) / 28 / 1000, rel=1e-12)
    assert power.idle_w == pytest.approx(sum(vdd_in[:10]) / 10 / 1000, rel=1e-12)
    assert power.peak_w == max(vdd_in[12:40]) / 1000 == 21.507  # the last line, as expected.json says
    assert set(power.rails_mean_w) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert power.gpu_freq_mhz is not None and 900 < power.gpu_freq_mhz < 1100
    assert power.emc_freq_mhz == 3199 and 0 <= power.gpu_util_pct <= 99


@needs_samples
def test_rails_named_twice_and_boards_without_rails():
    (line,) = _lines("agx-orin-64gb-jp5-gdwr-issue14.txt")
    power = summarize(read_tegrastats(line))
    assert power.rails_mean_w["NC"] == power.rails_mean_w["NC#2"] == 0.0  # NC printed twice, neither lost
    assert power.mean_w == pytest.approx(7.056) and power.board_power_source == "sum_of_printed_rails"
    no_rails = summarize(read_tegrastats((SAMPLES / "orin-nx-16gb-jp5-yuehchuan-g1.txt").read_text()))
    assert no_rails.mean_w is None and no_rails.energy(5.0, 1) == (None, None)
    assert "no board power" in no_rails.describe() and no_rails.samples == 40


# --- bad input --------------------------------------------------------------------------------------------------------


@needs_samples
def test_unknown_lines_are_skipped_and_counted():
    real = _lines("orin-nano-super-jp6.2.2-hokwangchoi.txt")
    text = "\n".join([
        "pon, 6 maj 2024, 18:27:46 UTC",  # a `date` header
        real[0],
        "",  # blank: not a line of any format, not counted
        real[1][:real[1].index("VDD_SOC") + 10],  # cut inside its last rail
        real[2][:real[2].index("VDD_CPU_GPU_CV")].rstrip(),  # cut before its last rails
        real[3].replace("VDD_SOC 2", "VDD_SOC 2mW/3mW/4mW/5"),  # a power layout this reader does not know
        "\x00\xff garbage RAM",
        real[4],
    ])
    log = read_tegrastats(text)
    assert [s.line_no for s in log.samples] == [2, 8]
    assert log.skipped == 5 and log.skipped_line_nos == [1, 4, 5, 6, 7] and log.lines == 8
    power = summarize(log)
    assert power.lines_skipped == 5 and "5 lines in an unknown format skipped" in power.describe()
    assert parse_line("") is None and parse_line("RAM x/yMB") is None


def test_marks_and_folders(tmp_path):
    assert read_marks("idle_end 3 1.5\ninference_start  5 2.0\nbroken line\ninference_end x 3\n") == \
        {"idle_end": 3, "inference_start": 5}
    assert read_power(tmp_path) is None  # no tegrastats ran
    (tmp_path / LOG).write_text("tegrastats: permission denied\n")
    power = read_power(tmp_path)
    assert power is not None and power.samples == 0 and power.lines_skipped == 1 and power.mean_w is None


def test_energy_formula():
    assert energy_mj(10.0, 5.0) == 50.0  # 10 W for 5 ms is 50 mJ
    assert energy_mj(10.0, 5.0, batch=4) == 12.5


# --- in the bench report ----------------------------------------------------------------------------------------------


def _power(mean_w: float, idle_w: float | None = 4.0) -> PowerSummary:
    return PowerSummary(source=LOG, window="timing run", samples=20, idle_samples=10, lines_read=30,
                        lines_skipped=0, board_power_source="VDD_IN", mean_w=mean_w, peak_w=mean_w + 1, idle_w=idle_w,
                        rails_mean_w={"VDD_IN": mean_w})


def test_a_result_keeps_its_power_through_json():
    r = BenchResult(runtime="tensorrt", format="engine", precision="fp16", batch=2, mean_ms=8.0, p99_ms=9.0)
    r.add_power(_power(12.0))
    assert (r.energy_mj, r.energy_above_idle_mj) == (48.0, 32.0)  # 12 W x 8 ms / 2, (12 - 4) W x 8 ms / 2
    data = json.loads(json.dumps(r.to_dict()))
    assert data["power"]["mean_w"] == 12.0 and data["energy_mj"] == 48.0
    back = BenchResult.from_dict(data)
    assert isinstance(back.power, PowerSummary) and back.power == r.power
    bare = BenchResult(runtime="tensorrt", format="engine", precision="fp16", batch=1, mean_ms=8.0).to_dict()
    assert "power" not in bare and "energy_mj" not in bare  # written only where tegrastats ran


def test_energy_verdict():
    r = BenchResult(runtime="tensorrt", format="engine", precision="fp16", batch=1, mean_ms=5.0)
    assert decide_energy(r, 40.0, "measured")[0] == "UNCONFIRMED"  # no power sampled
    r.add_power(_power(10.0))
    verdict, reason = decide_energy(r, 60.0, "imported")
    assert verdict == "PASS" and reason.startswith("TensorRT engine fp16 50 mJ per inference <= 60 mJ")
    assert decide_energy(r, 40.0, "measured")[0] == "FAIL"
    assert decide_energy(r, 40.0, "estimated")[0] == "UNCONFIRMED"  # never on another machine's timings
    assert decide_energy(None, 40.0, "measured")[0] == "UNCONFIRMED"


@needs_samples
@pytest.mark.skipif(not TRTEXEC_LOG.is_file(), reason=f"trtexec sample not found at {TRTEXEC_LOG}")
def test_bench_from_a_results_folder_reports_power_and_judges_energy(tmp_path, monkeypatch, capsys):
    from helpers import run_cli

    results = tmp_path / "results" / "fp16"
    results.mkdir(parents=True)
    shutil.copyfile(TRTEXEC_LOG, results / "trtexec.log")
    lines = _lines("orin-nano-super-jp6.2.2-hokwangchoi.txt")
    (results / LOG).write_text("\n".join(lines) + "\n")
    (results / MARKS).write_text("idle_end 10 1.0\ninference_start 12 2.0\ninference_end 40 3.0\ntiming_end 40 3.1\n")
    args = ["bench", "--from-trtexec", str(results), "--target", "jetson-orin-nano", "--allow-other-device",
            "--out", str(tmp_path), "--budget-mj", "50"]
    code, err = run_cli(args, monkeypatch, capsys)
    report = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    (result,) = report["results"]
    vdd_in = [int(line.split("VDD_IN ")[1].split("mW")[0]) for line in lines[12:40]]
    mean_w = sum(vdd_in) / len(vdd_in) / 1000
    assert result["power"]["mean_w"] == pytest.approx(mean_w, rel=1e-12)
    assert result["energy_mj"] == pytest.approx(mean_w * result["mean_ms"] / result["batch"], rel=0.01)
    assert report["energy_budget_mj"] == 50 and report["energy_budget_source"] == "--budget-mj"
    assert report["energy_verdict"] == ("PASS" if result["energy_mj"] <= 50 else "FAIL")
    assert code == (0 if report["energy_verdict"] == "PASS" and report["verdict"] == "PASS" else 1), err
    md = (tmp_path / "bench" / "jetson-orin-nano.md").read_text()
    assert "## Power" in md and f"**Energy: {report['energy_verdict']}**" in md
    # the files named one by one, tegrastats' among them: read beside the log, not as trtexec output
    args[2:3] = [str(results / "trtexec.log"), "--from-trtexec", str(results / LOG)]
    assert run_cli(args, monkeypatch, capsys)[0] == code
    again = json.loads((tmp_path / "bench" / "jetson-orin-nano.json").read_text())
    assert again["results"][0]["power"] == result["power"]

    from leapkit.report import _bench_section

    section = "\n".join(_bench_section(tmp_path, "RUN").lines)  # leapkit report's latency section
    assert "Power during the timing run (tegrastats):" in section and f"| {result['power']['samples']} |" in section
    assert f"**Energy: {report['energy_verdict']}**" in section


# --- device_info's clocks -----------------------------------------------------------------------------------------


def _sysfs(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text + "\n")
    return root


def test_clocks_locked_by_jetson_clocks(tmp_path):
    gpu, cpu = "sys/class/devfreq/17000000.gpu", "sys/devices/system/cpu/cpu0/cpufreq"
    locked = _sysfs(tmp_path / "a", {f"{gpu}/cur_freq": "1020000000", f"{gpu}/min_freq": "1020000000",
                                     f"{gpu}/max_freq": "1020000000", f"{cpu}/scaling_cur_freq": "1728000",
                                     f"{cpu}/scaling_min_freq": "1728000", f"{cpu}/cpuinfo_max_freq": "1728000",
                                     "sys/class/devfreq/15340000.vic/cur_freq": "1"})
    found = device_info.clocks(str(locked))
    assert (found["gpu_mhz"], found["gpu_max_mhz"], found["cpu_max_mhz"]) == (1020.0, 1020.0, 1728.0)
    assert found["clocks_locked"] is True and found["emc_mhz"] is None  # the EMC's debugfs is root's
    free = _sysfs(tmp_path / "b", {"sys/class/devfreq/57000000.gpu/cur_freq": "76800000",
                                   "sys/class/devfreq/57000000.gpu/min_freq": "76800000",
                                   "sys/class/devfreq/57000000.gpu/max_freq": "921600000",
                                   "sys/kernel/debug/clk/emc/clk_rate": "1600000000"})
    found = device_info.clocks(str(free))
    assert found["gpu_locked"] is False and found["clocks_locked"] is False and found["emc_mhz"] == 1600.0
    assert device_info.clocks(str(tmp_path / "none"))["clocks_locked"] is None


def test_an_energy_budget_without_power_is_unconfirmed(tmp_path):
    from dataclasses import replace

    from leapkit.errors import CheckFailed
    from leapkit.latency.records import BenchReport, Budget, Decision, Provenance
    from leapkit.profiles import load_target

    profile = replace(load_target("jetson-orin-nano"), energy_budget_mj=40.0)
    budget = Budget.of(profile)
    assert (budget.mj, budget.mj_source) == (40.0, "profile jetson-orin-nano")
    assert Budget.of(profile, budget_mj=5).mj_source == "--budget-mj"
    r = BenchResult(runtime="tensorrt", format="engine", precision="fp16", batch=1, mean_ms=5.0, p99_ms=6.0)
    provenance = Provenance("measured", "on the device", "orin", {})
    report = BenchReport.of(profile, [r], budget, provenance, Decision("PASS", "p99 6 ms <= 33.3 ms", r), model="m",
                            warnings=[])
    assert report.energy_verdict == "UNCONFIRMED" and "no power was sampled" in report.energy_verdict_reason
    report.check()  # UNCONFIRMED energy alone passes ...
    with pytest.raises(CheckFailed, match="energy verdict UNCONFIRMED on jetson-orin-nano and --require-measured"):
        report.check(require_measured=True)  # ... unless a device figure is required
    failed = BenchReport.of(profile, [r], budget, provenance, Decision("PASS", "ok", r, ("FAIL", "50 mJ > 40 mJ")),
                            model="m", warnings=[])
    with pytest.raises(CheckFailed, match=r"energy verdict FAIL on jetson-orin-nano: 50 mJ > 40 mJ"):
        failed.check()
    plain = BenchReport.of(load_target("jetson-orin-nano"), [r], Budget.of(load_target("jetson-orin-nano")),
                           provenance, Decision("PASS", "ok", r), model="m", warnings=[]).to_dict()
    assert not any(k.startswith("energy") for k in plain)  # no energy budget, no energy keys


def test_bad_energy_budgets_are_refused(tmp_path, monkeypatch, capsys):
    from helpers import run_cli

    from leapkit.profiles import target_path, validate_target

    code, err = run_cli(["bench", "--from-trtexec", str(tmp_path), "--target", "jetson-orin-nano", "--budget-mj", "0"],
                        monkeypatch, capsys)
    assert code == 2 and "--budget-mj must be > 0" in err and len(err.strip().splitlines()) == 1
    text = target_path("jetson-orin-nano").read_text() + "\nenergy_budget_mj: -3\n"
    (tmp_path / "orin.yaml").write_text(text)
    assert validate_target(tmp_path / "orin.yaml") == [
        "energy_budget_mj must be a number > 0 (mJ per inference) or null, got -3.0"]
