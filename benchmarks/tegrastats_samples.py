"""leapkit.device.tegrastats on every real tegrastats sample in ../shared/tegrastats-samples, against expected.json.

    python benchmarks/tegrastats_samples.py

For each sample file: the lines read and skipped, the board power of its first and last line against the figures
typed by hand in expected.json, the power of the whole log as one run (mean, peak, GPU clock), and the energy per
inference at a reference latency (10 ms, batch 1) against the hand computation from expected.json's first and last
lines (their mean board power x 10 ms), the check tests/test_tegrastats.py makes on a log of those two lines. The
table goes to benchmarks/results/tegrastats_samples.md and .json, with the command and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from leapkit.device.tegrastats import read_tegrastats, summarize
from leapkit.tables import Table, fmt

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "tegrastats-samples"
RESULTS = ROOT / "benchmarks" / "results" / "tegrastats_samples"
LATENCY_MS = 10.0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> int:
    if not SAMPLES.is_dir():
        print(f"tegrastats samples not found at {SAMPLES}", file=sys.stderr)
        return 2
    expected = json.loads((SAMPLES / "expected.json").read_text())["files"]
    rows = []
    for name, want in expected.items():
        lines = (SAMPLES / name).read_text().splitlines()
        log = read_tegrastats("\n".join(lines))
        by_line = {s.line_no: s for s in log.samples}
        first, last = by_line[want["first"]["line_no"]], by_line[want["last"]["line_no"]]
        whole = summarize(log)
        pair = summarize(read_tegrastats("\n".join([lines[first.line_no - 1], lines[last.line_no - 1]])))
        hand = None
        if "total_power_mw" in want["first"]:
            hand = (want["first"]["total_power_mw"] + want["last"]["total_power_mw"]) / 2 / 1000 * LATENCY_MS
        energy = pair.energy(LATENCY_MS, 1)[0]
        rows.append({
            "file": name, "lines": want["line_count"], "read": len(log.samples), "skipped": log.skipped,
            "first_mw": first.total_power_mw, "first_mw_expected": want["first"].get("total_power_mw"),
            "last_mw": last.total_power_mw, "last_mw_expected": want["last"].get("total_power_mw"),
            "board_power_source": whole.board_power_source, "mean_w": whole.mean_w, "peak_w": whole.peak_w,
            "gpu_freq_mhz": whole.gpu_freq_mhz, "energy_mj": energy, "energy_mj_hand": hand,
            "energy_rel_error": abs(energy / hand - 1) if energy is not None and hand else None,
        })
    table = Table.of("file", "lines", "read", "skipped", "first mW (expected)", "last mW (expected)", "board power",
                     "whole log mean W", "peak W", "GPU MHz", f"energy mJ at {LATENCY_MS:g} ms (hand)", "rel. error",
                     right=("lines", "read", "skipped", "whole log mean W", "peak W", "GPU MHz", "rel. error"))
    for r in rows:
        table.add(r["file"], str(r["lines"]), str(r["read"]), str(r["skipped"]),
                  f"{fmt(r['first_mw'], 'd')} ({fmt(r['first_mw_expected'], 'd')})",
                  f"{fmt(r['last_mw'], 'd')} ({fmt(r['last_mw_expected'], 'd')})", r["board_power_source"] or "none",
                  fmt(r["mean_w"], ".3f"), fmt(r["peak_w"], ".3f"), fmt(r["gpu_freq_mhz"], ".0f"),
                  f"{fmt(r['energy_mj'], '.3f')} ({fmt(r['energy_mj_hand'], '.3f')})",
                  fmt(r["energy_rel_error"], ".1e"))
    worst = max((r["energy_rel_error"] for r in rows if r["energy_rel_error"] is not None), default=None)
    machine = f"{cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    md = "\n".join([
        "# tegrastats samples read by leapkit.device.tegrastats", "",
        "Command: `python benchmarks/tegrastats_samples.py`", f"Machine: {machine}", "",
        f"Every real line of {len(rows)} logs ({sum(r['lines'] for r in rows)} lines, "
        f"{sum(r['skipped'] for r in rows)} skipped) from ../shared/tegrastats-samples (sources in its SOURCES.md). "
        "First/last mW: the board power of the file's first and last line, with expected.json's hand-typed figure in "
        "brackets. Energy: the first and last lines summarised as one run at "
        f"{LATENCY_MS:g} ms per inference, batch 1, with the hand computation from expected.json in brackets; "
        f"worst relative error {fmt(worst, '.1e')}.", "",
        table.to_markdown(), "",
    ])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".md").write_text(md)
    RESULTS.with_suffix(".json").write_text(json.dumps({"command": "python benchmarks/tegrastats_samples.py",
                                                        "machine": machine, "latency_ms": LATENCY_MS,
                                                        "rows": rows}, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
