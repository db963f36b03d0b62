"""Wall time of the default job (`leapkit distill` with no arguments) and its curriculum targets.

Targets (issue 2): at most 180 s wall on the 2-core reference machine, install excluded; at least
3 distinct teacher blocks visited; the early exit saves at least 20% of the teacher block
evaluations of the fixed-target baseline.

    python benchmarks/demo_wall_time.py [--repeats 1]

Writes benchmarks/results/demo_wall_time.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from leapkit.latency.machine import environment

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    rows = []
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            # the default job exactly as the README runs it, in a fresh working directory
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "leapkit", "distill", "--no-progress"], cwd=tmp,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"leapkit distill failed:\n{proc.stderr[-2000:]}")
            summary = json.loads((Path(tmp) / "runs" / "latest" / "summary.json").read_text())
        rows.append({
            "wall_s": round(wall, 1),
            "train_s": summary["train_seconds"],
            "images_per_s": summary["images_per_s"],
            "blocks_visited": summary["blocks_visited"],
            "distinct_blocks": len(set(summary["blocks_visited"])),
            "teacher_blocks_saved_pct": summary["teacher_blocks_saved_pct"],
            "linear_probe_top1": summary.get("eval", {}).get("linear_probe_top1"),
        })
        print(json.dumps(rows[-1]))

    machine = {
        "cpu": environment()["cpu"], "cores": os.cpu_count(), "python": platform.python_version(),
        "command": f"python benchmarks/demo_wall_time.py --repeats {args.repeats}",
        # other jobs on the machine inflate wall time: the 1-minute load average says how busy it was
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
    }
    worst = max(r["wall_s"] for r in rows)
    verdict = {
        "wall_at_most_180s": worst <= 180,
        "at_least_3_blocks": min(r["distinct_blocks"] for r in rows) >= 3,
        "saving_at_least_20pct": min(r["teacher_blocks_saved_pct"] for r in rows) >= 20,
    }
    RESULTS.mkdir(exist_ok=True)
    record = {"machine": machine, "runs": rows, "targets_met": verdict}
    (RESULTS / "demo_wall_time.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# `leapkit distill` (demo recipe) wall time", "",
        f"Command: `{machine['command']}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
        f"1-minute load average {machine['load_avg_before']} before, {machine['load_avg_after']} after", "",
        "| run | wall s | train s | images/s | blocks visited | distinct | teacher blocks saved | linear probe top-1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['wall_s']} | {r['train_s']} | {r['images_per_s']} | "
                     f"{' -> '.join(map(str, r['blocks_visited']))} | {r['distinct_blocks']} | "
                     f"{r['teacher_blocks_saved_pct']}% | {r['linear_probe_top1']}% |")
    lines += ["", "Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in verdict.items())]
    (RESULTS / "demo_wall_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
