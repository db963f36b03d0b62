"""How long the test suite takes: the fast default set and the slow set, each with its 25 slowest tests.

    python benchmarks/test_durations.py

Runs `python -m pytest -q --durations=25` and `python -m pytest -q -m slow --durations=25` one after the other from
the repository root and writes benchmarks/results/test_durations.md: each run's wall time, its closing line and
its slowest tests, with the machine and its load. The fast set's budget is 3 minutes on a quiet 2-core machine;
the slow set runs in CI after it. Timings on a shared machine move by 1.6x from minute to minute: the load
averages before and after each run are recorded so that a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "test_durations.md"
RUNS = (("fast (the default, the README's command)", []), ("slow (`-m slow`)", ["-m", "slow"]))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: list[str]) -> tuple[float, str, list[str], str, str]:
    before = load()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=25", *args],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    lines = proc.stdout.splitlines()
    closing = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "(no closing line)")
    slowest = [line for line in lines if re.match(r"^\d+\.\d+s (call|setup|teardown) ", line)]
    return wall, closing.strip("= "), slowest, before, load()


def main() -> None:
    sections = []
    for title, args in RUNS:
        wall, closing, slowest, before, after = run(args)
        print(f"{title}: {wall:.0f} s, {closing}")
        sections += [f"## {title}", "", f"`python -m pytest -q --durations=25 {' '.join(args)}`".replace("  ", " "),
                     "", f"Wall time {wall:.0f} s ({wall / 60:.1f} min); {closing}. Load average (1, 5, 15 min) "
                     f"before {before}, after {after}.", "", "```", *slowest, "```", ""]
    head = ["# Test suite durations", "",
            f"Command: `python benchmarks/test_durations.py`. Machine: {cpu_name()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    RESULTS.write_text("\n".join(head + sections))


if __name__ == "__main__":
    main()
