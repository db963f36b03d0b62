"""The latency model against measurements: x86-cpu calibrated here from microbenchmarks only, then ViTs timed.

1. Export (before any timing): timm ViT-Ti/S/B at patch 16 (vit_tiny_patch16_224, vit_small_patch16_224,
   vit_base_patch16_224; 160 and 224 px) and patch 14 (vit_tiny_patch14_leapkit, vit_small_patch14_dinov2,
   vit_base_patch14_dinov2; 168 and 224 px), random weights, with leapkit's own export: the fp32 graph of
   ``leapkit.deploy.onnx_graph.export_onnx`` and the INT8 graph of ``leapkit.deploy.onnx_int8.quantize_int8`` in
   the ONNX Runtime layout (min-max ranges from 8 random images: the ranges do not change the speed).
2. Wait for a quiet machine (1-minute load average <= 0.5; up to --max-wait seconds), recording the load. Every
   timing below is also watched: the CPU time other processes take while it runs (/proc/stat less this
   process) must stay under 0.1 core, else it is repeated once they have stopped.
3. Calibrate x86-cpu with ``leapkit.planning.calibrate`` on its default grid of small ViTs (widths 64-1024
   without 192/384/768: none of the models above), unless --calibration names an existing file.
4. Time every model with ONNX Runtime as ``leapkit bench`` does (``leapkit.runtimes.OrtRunner``, the profile's
   2 threads, ``leapkit.latency.timing.time_runner``) and predict it with ``leapkit.planning.predict_onnx`` from
   the exported file. Report the p50 against the prediction: median and worst absolute error (targets: 15% and
   30%), and whether the measurement falls in the predicted range.

Usage:
    python benchmarks/latency_model.py                      # writes benchmarks/results/latency_model.{md,json}
    python benchmarks/latency_model.py --work /tmp/lm --calibration benchmarks/results/latency_model_calibration.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.deploy.onnx_int8 import quantize_int8
from leapkit.latency.machine import describe_host, environment
from leapkit.latency.timing import latency_stats, time_runner
from leapkit.planning import predict_onnx
from leapkit.planning.calibrate import CalibratePlan, calibrate
from leapkit.planning.calibration import Calibration
from leapkit.profiles import load_target
from leapkit.runtimes import OrtRunner
from leapkit.tables import Table

log = logging.getLogger("latency_model")
RESULTS = Path(__file__).parent / "results"
MODELS = {
    "vit_tiny_patch16_224": (160, 224), "vit_small_patch16_224": (160, 224), "vit_base_patch16_224": (160, 224),
    "vit_tiny_patch14_leapkit": (168, 224), "vit_small_patch14_dinov2": (168, 224),
    "vit_base_patch14_dinov2": (168, 224),
}
PRECISIONS = ("fp32", "int8")
TARGET_MEDIAN, TARGET_WORST = 15.0, 30.0
OTHERS_MAX = 0.1  # cores other processes may use during a timing


def export(name: str, size: int, work: Path) -> dict[str, Path]:
    """The fp32 and INT8 graphs of a random-weight timm model, exported once into ``work``."""
    import leapkit.models  # noqa: F401  (registers vit_tiny_patch14_leapkit)

    fp32, int8 = work / f"{name}_{size}.onnx", work / f"{name}_{size}_int8.onnx"
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), quiet_exporters():
        if not fp32.is_file():
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, num_classes=0, img_size=size).eval()
            export_onnx(model, fp32, size)
        if not int8.is_file():
            images = np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)
            quantize_int8(fp32, int8, images, method="minmax", runtime="onnxruntime")
    return {"fp32": fp32, "int8": int8}


def wait_for_quiet(threshold: float, max_wait: float, pause: float = 120.0) -> list[float]:
    """Sleep until the 1-minute load average is at most ``threshold``; the loads seen.

    Raises:
        SystemExit: still busier after ``max_wait`` seconds (a timing on a busy machine is no evidence).
    """
    seen = [os.getloadavg()[0]]
    start = time.monotonic()
    while seen[-1] > threshold:
        if time.monotonic() - start >= max_wait:
            raise SystemExit(f"load average still {seen[-1]:.2f} > {threshold} after {max_wait:.0f} s; run again "
                             f"on a quiet machine (--quiet-load raises the threshold)")
        log.info("load average %.2f > %.2f: waiting %.0f s", seen[-1], threshold, pause)
        time.sleep(pause)
        seen.append(os.getloadavg()[0])
    return seen


class Watch:
    """The CPU other processes use while a block runs, in cores (the machine's busy time less this process's)."""

    def __enter__(self) -> Watch:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        (busy0, mine0, wall0), (busy1, mine1, wall1) = self.start, self._now()
        self.others = max(0.0, (busy1 - busy0) - (mine1 - mine0)) / max(wall1 - wall0, 1e-9)

    @staticmethod
    def _now() -> tuple[float, float, float]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return busy, t.user + t.system, time.monotonic()


def others_now(window: float = 10.0) -> float:
    """The cores other processes use over ``window`` seconds while this one sleeps."""
    with Watch() as w:
        time.sleep(window)
    return w.others


def wait_for_others(max_wait: float, pause: float = 50.0) -> None:
    """Sleep until other processes use at most OTHERS_MAX cores.

    Raises:
        SystemExit: not within ``max_wait`` seconds.
    """
    start = time.monotonic()
    while (busy := others_now()) > OTHERS_MAX:
        if time.monotonic() - start >= max_wait:
            raise SystemExit(f"other processes still use {busy:.2f} cores after {max_wait:.0f} s; run again later")
        log.info("other processes use %.2f cores: waiting %.0f s", busy, pause)
        time.sleep(pause)


def watched(what: str, fn: Any, max_wait: float, tries: int = 5) -> tuple[Any, float]:
    """``fn()`` and the cores other processes used meanwhile; repeated (after they stop) while above OTHERS_MAX."""
    for attempt in range(tries):
        with Watch() as w:
            out = fn()
        if w.others <= OTHERS_MAX:
            return out, w.others
        log.info("%s: other processes used %.2f cores meanwhile; again (%d/%d)", what, w.others, attempt + 1, tries)
        wait_for_others(max_wait)
    raise SystemExit(f"{what}: the machine never stayed quiet for a whole timing; run again later")


def measure(path: Path, size: int, threads: int, warmup_s: float, duration_s: float) -> dict[str, float]:
    runner = OrtRunner(path, threads)
    try:
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        return latency_stats(time_runner(runner.timed(x), warmup_s, None, duration_s), 1)
    finally:
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/leapkit-latency-model"), help="exported graphs")
    parser.add_argument("--calibration", type=Path, help="an existing calibration (default: calibrate now)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency_model")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--quiet-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=1800.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile = load_target("x86-cpu")
    threads = profile.threads or 2
    args.work.mkdir(parents=True, exist_ok=True)

    graphs = {}
    for name, sizes in MODELS.items():
        for size in sizes:
            log.info("export %s at %d px", name, size)
            graphs[(name, size)] = export(name, size, args.work)

    loads = {"before_calibration": wait_for_quiet(args.quiet_load, args.max_wait)}
    cal_path = args.calibration
    others: dict[str, float] = {}
    if cal_path is None:
        cal_path = args.out.with_name(args.out.name + "_calibration.json")
        log.info("calibrating x86-cpu on its microbenchmarks -> %s", cal_path)
        _, others["calibration"] = watched("calibration", lambda: calibrate(CalibratePlan(profile, out=cal_path,
                                                                                            progress=False)),
                                           args.max_wait)
    cal = Calibration.read(cal_path)
    loads["before_models"] = [os.getloadavg()[0]]

    rows: list[dict[str, Any]] = []
    for (name, size), files in graphs.items():
        for precision in PRECISIONS:
            stats, busy = watched(f"{name} {size} {precision}", lambda f=files[precision], s=size: measure(
                f, s, threads, args.warmup, args.duration), args.max_wait)
            p = predict_onnx(files[precision], profile, calibration=cal_path)
            err = 100.0 * (p.ms - stats["p50_ms"]) / stats["p50_ms"]
            rows.append({"model": name, "img_size": size, "precision": precision, "p50_ms": stats["p50_ms"],
                         "cv": stats["cv"], "iterations": stats["iterations"], "predicted_ms": p.ms,
                         "predicted_range_ms": [p.low_ms, p.high_ms], "error_pct": err,
                         "in_range": p.low_ms <= stats["p50_ms"] <= p.high_ms, "parts_ms": p.parts_ms,
                         "load_avg_1m": os.getloadavg()[0], "other_cores": busy})
            log.info("%s %d %s: p50 %.2f ms, predicted %.2f ms (%+.1f%%)", name, size, precision, stats["p50_ms"],
                     p.ms, err)
    loads["after"] = [os.getloadavg()[0]]
    errors = [abs(r["error_pct"]) for r in rows]
    summary = {"median_abs_error_pct": statistics.median(errors), "worst_abs_error_pct": max(errors),
               "in_range": sum(r["in_range"] for r in rows), "count": len(rows),
               "median_met": statistics.median(errors) <= TARGET_MEDIAN, "worst_met": max(errors) <= TARGET_WORST}
    env = environment()
    command = "python benchmarks/latency_model.py" + (f" --calibration {args.calibration}" if args.calibration else "")
    record = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "environment": env,
              "load_avg_1m": loads, "other_cores": others, "calibration": str(cal_path),
              "calibration_created": cal.created,
              "threads": threads, "warmup_s": args.warmup, "duration_s": args.duration, "summary": summary,
              "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record, cal) + "\n")
    log.info("median |error| %.1f%%, worst %.1f%%", summary["median_abs_error_pct"], summary["worst_abs_error_pct"])


def markdown(record: dict[str, Any], cal: Calibration) -> str:
    env, s, loads = record["environment"], record["summary"], record["load_avg_1m"]
    table = Table.of("model", "px", "precision", "measured p50 ms", "cv", "predicted ms", "range ms", "error",
                     "in range", right=("px", "measured p50 ms", "cv", "predicted ms", "range ms", "error"))
    for r in record["rows"]:
        low, high = r["predicted_range_ms"]
        table.add(r["model"], str(r["img_size"]), r["precision"], f"{r['p50_ms']:.2f}", f"{r['cv']:.2f}",
                  f"{r['predicted_ms']:.2f}", f"{low:.2f}-{high:.2f}", f"{r['error_pct']:+.1f} %",
                  "yes" if r["in_range"] else "no")
    met = {True: "met", False: "**not met**"}
    worst_others = max([r["other_cores"] for r in record["rows"]] + list(record["other_cores"].values()))
    lines = [
        "# Latency model: predicted against measured on x86-cpu (calibrated here from microbenchmarks only)",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {describe_host(env)}, {env.get('cpu_cores')} cores, flags {', '.join(env.get('cpu_flags') or [])}; "
        f"torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, Python {env.get('python')}.  ",
        f"Date: {record['date']}. ONNX Runtime CPU, {record['threads']} threads, batch 1; p50 of "
        f"{record['duration_s']:g} s after a {record['warmup_s']:g} s warm-up per model.  ",
        f"Load average (1 min): before calibrating {', '.join(f'{x:.2f}' for x in loads['before_calibration'])}; "
        f"before the models {', '.join(f'{x:.2f}' for x in loads['before_models'])}; after "
        f"{loads['after'][0]:.2f} (this job included). Other processes used at most {worst_others:.2f} core during any "
        f"timing (each is repeated above {OTHERS_MAX} core).",
        "",
        f"Calibration: `{record['calibration']}` ({cal.created}), {len(cal.samples)} microbenchmark timings of small "
        f"ViTs (widths 64-1024 without 192/384/768, 5-785 tokens, 1-4 blocks): none of the models below. "
        f"{cal.method}.",
        "",
        table.to_markdown(),
        "",
        f"- median absolute error: **{s['median_abs_error_pct']:.1f}%** (target <= {TARGET_MEDIAN:g}%: "
        f"{met[s['median_met']]})",
        f"- worst absolute error: **{s['worst_abs_error_pct']:.1f}%** (target <= {TARGET_WORST:g}%: "
        f"{met[s['worst_met']]})",
        f"- measurements within the predicted range: {s['in_range']} of {s['count']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
