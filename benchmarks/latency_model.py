"""The latency model against measurements: x86-cpu calibrated here from microbenchmarks only, then ViTs timed.

1. Export (before any timing): timm ViT-Ti/S/B at patch 16 (vit_tiny_patch16_224, vit_small_patch16_224,
   vit_base_patch16_224; 160 and 224 px) and patch 14 (vit_tiny_patch14_leapkit, vit_small_patch14_dinov2,
   vit_base_patch14_dinov2; 168 and 224 px), random weights, with leapkit's own export: the fp32 graph of
   ``leapkit.deploy.onnx_graph.export_onnx`` and the INT8 graph of ``leapkit.deploy.onnx_int8.quantize_int8`` in
   the ONNX Runtime layout (min-max ranges from 8 random images: the ranges do not change the speed). The
   calibration's microbenchmarks are exported as ``leapkit calibrate`` exports them
   (``leapkit.planning.microbench``: its default grid of small ViTs, widths 64-1024 without 192/384/768, so
   none of the models above).
2. Wait for a quiet machine (1-minute load average <= 0.5; up to --max-wait seconds), recording the load.
3. Time, in --rounds interleaved rounds (each round every microbenchmark and every model once, in a shuffled
   order), with ONNX Runtime as ``leapkit calibrate`` and ``leapkit bench`` do
   (``leapkit.runtimes.ort_runner.OrtRunner``, the profile's 2 threads, ``leapkit.latency.timing.time_runner``).
   Each timing is watched: the CPU other processes take meanwhile (/proc/stat less this process) must stay
   under 0.1 core, else it is repeated once they stop. A graph's latency is, once, the median over the rounds
   of its p50 and, once, its fastest round's
   p50 (what ``leapkit calibrate`` keeps). Why rounds: on this 2-vCPU VM a two-thread latency moves between two
   levels up to ~1.6x apart from minute to minute with nothing else running here (the host's placement of the
   two vCPUs, or its other tenants); interleaving exposes the microbenchmarks and the models to the same
   conditions, and enough rounds let every graph meet the fast level at least once.
4. Fit x86-cpu's latency model to the microbenchmarks alone (``leapkit.planning.fit_file.fit``, the fit
   ``leapkit calibrate`` runs), once per statistic, and write the calibrations; predict each model with
   ``leapkit.planning.predict_onnx`` from its exported file. Report the median and worst absolute error
   (targets: 15% and 30%) and whether each measurement falls in the predicted range.

With ``--runtime openvino`` the same check runs for OpenVINO, as ``leapkit calibrate --runtime openvino``
and ``leapkit bench`` run it: every graph above (microbenchmarks and models) converted to the IRs the
export writes (``leapkit.planning.microbench.openvino_irs``: fp32, and int8 from the INT8 graph in
OpenVINO's layout), bf16 the fp32 IR with the bf16 hint (only on a CPU with bf16 arithmetic), timed with
``leapkit.runtimes.openvino_runner.OpenVINORunner`` and each precision's hint; each model is predicted from the
ONNX graph its IR was converted from. ``--quick`` checks the script in seconds (the quick grid, one small model,
short timings, no waiting for a quiet machine; results under --work, never evidence).

Usage:
    python benchmarks/latency_model.py   # writes benchmarks/results/latency_model{.md,.json,_calibration*.json}
    python benchmarks/latency_model.py --runtime openvino   # latency_model_openvino.{md,json},
                                                            # latency_model_calibration_openvino*.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.deploy.onnx_int8 import quantize_int8
from leapkit.deploy.openvino_ir import OPENVINO_FILES
from leapkit.host import cpu_bf16
from leapkit.latency.machine import describe_host, environment
from leapkit.latency.timing import latency_stats, time_runner
from leapkit.planning import predict_onnx
from leapkit.planning.fit_file import LatencyFit, Sample, fit, now
from leapkit.planning.microbench import GRID, QUICK_GRID, Micro, export_graphs, open_runner, openvino_irs
from leapkit.profiles import load_target
from leapkit.runtimes.openvino_runner import openvino_version
from leapkit.tables import Table
from leapkit.types import Precision, TargetRuntime

log = logging.getLogger("latency_model")
RESULTS = Path(__file__).parent / "results"
MODELS = {
    "vit_tiny_patch16_224": (160, 224), "vit_small_patch16_224": (160, 224), "vit_base_patch16_224": (160, 224),
    "vit_tiny_patch14_leapkit": (168, 224), "vit_small_patch14_dinov2": (168, 224),
    "vit_base_patch14_dinov2": (168, 224),
}
QUICK_MODELS = {"vit_tiny_patch16_224": (64,)}
TARGET_MEDIAN, TARGET_WORST = 15.0, 30.0
OTHERS_MAX = 0.1  # cores other processes may use during a timing
MICRO_TIMING = (0.2, 1.0)  # warm-up and timed seconds per microbenchmark
QUICK_TIMING = (0.0, 0.05)  # --quick: per microbenchmark and model
STATS = ("median", "fastest")  # of a graph's p50 over the rounds
DEFAULT_OUT = RESULTS / "latency_model"


def precisions_of(runtime: TargetRuntime) -> tuple[Precision, ...]:
    """fp32 and INT8; with OpenVINO also bf16 where the CPU has bf16 arithmetic (elsewhere it would run fp32)."""
    return ("fp32", "bf16", "int8") if runtime == "openvino" and cpu_bf16() else ("fp32", "int8")


def export_model(name: str, size: int, work: Path, runtime: TargetRuntime) -> dict[Precision, Path]:
    """The graph timed at each precision of a random-weight timm model, exported once into ``work``: the fp32 and
    INT8 ONNX graphs, or for OpenVINO the IRs converted from them (bf16: the fp32 IR)."""
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
            quantize_int8(fp32, int8, images, method="minmax", runtime=runtime)
        graphs: dict[Precision, Path] = {p: int8 if p == "int8" else fp32 for p in precisions_of(runtime)}
        return openvino_irs(f"{name}_{size}", graphs, work) if runtime == "openvino" else graphs


def export_micro(micro: Micro, work: Path, runtime: TargetRuntime) -> dict[Precision, Path]:
    """A microbenchmark's graph timed at each precision, as ``leapkit calibrate`` exports them, once into ``work``."""
    precisions = precisions_of(runtime)
    if runtime == "openvino":
        files = {p: work / OPENVINO_FILES[p].replace("model", micro.name, 1) for p in precisions}
    else:
        files = {p: work / f"{micro.name}{'_int8' if p == 'int8' else ''}.onnx" for p in precisions}
    if not all(f.is_file() for f in files.values()):
        export_graphs(micro, precisions, work, runtime)
    return files


def graph_of(path: Path) -> Path:
    """The ONNX graph a timed file was converted from (itself for an ONNX file): the latency model reads it."""
    return path.with_name(path.name.replace("_openvino_fp32.xml", ".onnx").replace("_openvino_int8.xml", "_int8.onnx"))


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
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # steal time counts as busy
        t = os.times()
        return busy, t.user + t.system, time.monotonic()


def wait_for_others(max_wait: float, pause: float = 50.0) -> None:
    """Sleep until other processes use at most OTHERS_MAX cores over a 10 s look.

    Raises:
        SystemExit: not within ``max_wait`` seconds.
    """
    start = time.monotonic()
    while True:
        with Watch() as w:
            time.sleep(10.0)
        if w.others <= OTHERS_MAX:
            return
        if time.monotonic() - start >= max_wait:
            raise SystemExit(f"other processes still use {w.others:.2f} cores after {max_wait:.0f} s; run again later")
        log.info("other processes use %.2f cores: waiting %.0f s", w.others, pause)
        time.sleep(pause)


def watched(what: str, fn: Callable[[], Any], max_wait: float, tries: int = 5) -> tuple[Any, float]:
    """``fn()`` and the cores other processes used meanwhile; repeated (after they stop) while above OTHERS_MAX."""
    for attempt in range(tries):
        with Watch() as w:
            out = fn()
        if w.others <= OTHERS_MAX:
            return out, w.others
        log.info("%s: other processes used %.2f cores meanwhile; again (%d/%d)", what, w.others, attempt + 1, tries)
        wait_for_others(max_wait)
    raise SystemExit(f"{what}: the machine never stayed quiet for a whole timing; run again later")


def measure(path: Path, size: int, threads: int, warmup_s: float, duration_s: float, runtime: TargetRuntime,
            precision: Precision) -> dict[str, float]:
    runner = open_runner(path, runtime, precision, threads)
    try:
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        return latency_stats(time_runner(runner.timed(x), warmup_s, None, duration_s), 1)
    finally:
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime")
    parser.add_argument("--work", type=Path, default=Path("/tmp/leapkit-latency-model"), help="exported graphs")
    parser.add_argument("--out", type=Path, help=f"results stem (default {DEFAULT_OUT}, _openvino for OpenVINO)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, help="runtime threads (default: the x86-cpu profile's, 2)")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per model")
    parser.add_argument("--duration", type=float, default=1.5, help="timed seconds per model")
    parser.add_argument("--quiet-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=1800.0)
    parser.add_argument("--quick", action="store_true", help="check the script in seconds; never evidence")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runtime: TargetRuntime = args.runtime
    suffix = "" if runtime == "onnxruntime" else f"_{runtime}"
    if args.quick:
        args.rounds, (args.warmup, args.duration) = min(args.rounds, 2), QUICK_TIMING
    args.out = args.out or (args.work / "quick" if args.quick else RESULTS) / f"{DEFAULT_OUT.name}{suffix}"
    profile = load_target("x86-cpu")
    threads = args.threads or profile.threads or 2
    (args.work / "microbench").mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    grid, models, args.micro_timing = (QUICK_GRID, QUICK_MODELS, QUICK_TIMING) if args.quick else (GRID, MODELS,
                                                                                                    MICRO_TIMING)
    micro_files = {m: export_micro(m, args.work / "microbench", runtime) for m in grid}
    model_files = {(n, s): export_model(n, s, args.work, runtime) for n, sizes in models.items() for s in sizes}
    items: list[tuple[Precision, Path, int, tuple[float, float]]] = [
        (p, f, m.img_size, args.micro_timing) for m, files in micro_files.items() for p, f in files.items()
    ] + [(p, f, key[1], (args.warmup, args.duration)) for key, files in model_files.items() for p, f in files.items()]

    loads = {"start": [os.getloadavg()[0]] if args.quick else wait_for_quiet(args.quiet_load, args.max_wait)}
    p50s: dict[tuple[str, str], list[float]] = {}
    stats: dict[tuple[str, str], list[dict[str, float]]] = {}
    worst_others = 0.0
    for r in range(args.rounds):
        random.Random(r).shuffle(items)
        log.info("round %d of %d: %d timings", r + 1, args.rounds, len(items))
        for precision, path, size, (warmup, duration) in items:
            def timing(f: Path = path, z: int = size, w: float = warmup, d: float = duration,
                       p: Precision = precision) -> dict[str, float]:
                return measure(f, z, threads, w, d, runtime, p)

            s, busy = (timing(), 0.0) if args.quick else watched(f"{path.name} {precision}", timing, args.max_wait)
            p50s.setdefault((path.name, precision), []).append(s["p50_ms"])
            stats.setdefault((path.name, precision), []).append(s)
            worst_others = max(worst_others, busy)
        loads[f"after round {r + 1}"] = [os.getloadavg()[0]]

    env = environment()
    results = {stat: evaluate(stat, p50s, micro_files, model_files, profile, threads, env, args) for stat in STATS}
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    flags = [f"--runtime {runtime}" if runtime != "onnxruntime" else "", "--quick" if args.quick else "",
             f"--threads {args.threads}" if args.threads else "", f"--rounds {args.rounds}" if args.rounds != 9 else "",
             f"--out {args.out}" if args.out != RESULTS / f"{DEFAULT_OUT.name}{suffix}" else ""]
    command = " ".join(["python benchmarks/latency_model.py", *(f for f in flags if f)])
    record = {"command": command, "date": date, "runtime": runtime, "runtime_label": runtime_label(runtime),
              "precisions": list(precisions_of(runtime)), "micro_count": len(grid), "micro_timing": args.micro_timing,
              "environment": env, "load_avg_1m": loads, "worst_other_cores": worst_others, "rounds": args.rounds,
              "threads": threads, "warmup_s": args.warmup, "duration_s": args.duration, "results": results,
              "cv": {f"{k[0]} {k[1]}": statistics.median(x["cv"] for x in v) for k, v in stats.items()}}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record) + "\n")
    for stat, res in results.items():
        log.info("%s: median |error| %.1f%%, worst %.1f%%", stat, res["summary"]["median_abs_error_pct"],
                 res["summary"]["worst_abs_error_pct"])
    log.info("wrote %s and %s", args.out.with_suffix(".md"), args.out.with_suffix(".json"))


def runtime_label(runtime: TargetRuntime) -> str:
    """How the results name the runtime (OpenVINO with its release)."""
    return f"OpenVINO {openvino_version()}" if runtime == "openvino" else "ONNX Runtime"


def evaluate(stat: str, p50s: dict[tuple[str, str], list[float]], micro_files: dict[Micro, dict[Precision, Path]],
             model_files: dict[tuple[str, int], dict[Precision, Path]], profile: Any, threads: int,
             env: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Fit to the microbenchmarks' ``stat`` over the rounds, predict the models, compare with theirs."""
    pick = statistics.median if stat == "median" else min

    def latency(path: Path, precision: str) -> float:
        return pick(p50s[(path.name, precision)])

    runtime: TargetRuntime = args.runtime
    precisions = precisions_of(runtime)
    samples = [Sample(m.name, {k: v for k, v in asdict(m.shape).items() if v is not None}, p, latency(f, p))
               for m, files in micro_files.items() for p, f in files.items()]
    efficiencies, ranges = {}, {}
    for precision in precisions:
        efficiencies[precision], ranges[precision] = fit([s for s in samples if s.precision == precision], precision)
    other = "" if runtime == "onnxruntime" else f"_{runtime}"  # latency_model_calibration_openvino_fastest.json
    cal_path = args.out.with_name(
        f"{args.out.name.removesuffix(other)}_calibration{other}{'' if stat == 'median' else f'_{stat}'}.json")
    what = "median over" if stat == "median" else "fastest of"
    warmup, duration = args.micro_timing
    cal = LatencyFit(
        target=profile.name, created=now(), environment=env, runtime=runtime, threads=threads,
        efficiencies=efficiencies, ranges=ranges, samples=samples,
        method=(f"{runtime_label(runtime)} CPU, {threads} threads, batch 1; each graph's {what} {args.rounds} "
                f"interleaved rounds of the p50 of {duration:g} s after {warmup:g} s warm-up "
                f"(benchmarks/latency_model.py)"),
    )
    cal.save(cal_path)
    rows: list[dict[str, Any]] = []
    for (name, size), files in model_files.items():
        for precision, path in files.items():
            measured = latency(path, precision)
            p = predict_onnx(graph_of(path), profile, precision, calibration=cal_path, runtime=runtime)
            err = 100.0 * (p.ms - measured) / measured
            rows.append({"model": name, "img_size": size, "precision": precision, "measured_ms": measured,
                         "round_p50s_ms": p50s[(path.name, precision)], "predicted_ms": p.ms,
                         "predicted_range_ms": [p.low_ms, p.high_ms], "error_pct": err,
                         "in_range": p.low_ms <= measured <= p.high_ms, "parts_ms": p.parts_ms})
    errors = [abs(r["error_pct"]) for r in rows]
    loo = {pr: [abs(x.loo_ms / x.measured_ms - 1) * 100 for x in samples if x.precision == pr] for pr in precisions}
    summary = {"median_abs_error_pct": statistics.median(errors), "worst_abs_error_pct": max(errors),
               "in_range": sum(r["in_range"] for r in rows), "count": len(rows),
               "median_met": statistics.median(errors) <= TARGET_MEDIAN, "worst_met": max(errors) <= TARGET_WORST,
               "calibration_loo_error_pct": {pr: [statistics.median(v), max(v)] for pr, v in loo.items()},
               "calibration_range": ranges}
    shown = cal_path.relative_to(Path.cwd()) if cal_path.is_relative_to(Path.cwd()) else cal_path
    return {"calibration": str(shown), "summary": summary, "rows": rows}


def markdown(record: dict[str, Any]) -> str:
    env, loads = record["environment"], record["load_avg_1m"]
    med, fast = record["results"]["median"], record["results"]["fastest"]
    table = Table.of("model", "px", "precision", "p50 per round, ms", "median ms", "predicted", "error",
                     "in range", "fastest ms", "predicted", "error",
                     right=("px", "median ms", "predicted", "error", "fastest ms"))
    for a, b in zip(med["rows"], fast["rows"], strict=True):
        table.add(a["model"], str(a["img_size"]), a["precision"], ", ".join(f"{x:.1f}" for x in a["round_p50s_ms"]),
                  f"{a['measured_ms']:.2f}", f"{a['predicted_ms']:.2f}", f"{a['error_pct']:+.1f} %",
                  "yes" if a["in_range"] else "no", f"{b['measured_ms']:.2f}", f"{b['predicted_ms']:.2f}",
                  f"{b['error_pct']:+.1f} %")
    precisions = record["precisions"]
    micro_warmup, micro_duration = record["micro_timing"]
    summary = Table.of("statistic over the rounds", "calibration",
                       f"leave-one-out error {' / '.join(precisions)} (median, max)", "median abs. error",
                       "worst abs. error", "in range")
    met = {True: "met", False: "**not met**"}
    for stat, res in record["results"].items():
        s = res["summary"]
        loo = " / ".join(f"{a:.0f}%, {b:.0f}%" for a, b in s["calibration_loo_error_pct"].values())
        summary.add(stat, f"`{res['calibration']}`", loo,
                    f"{s['median_abs_error_pct']:.1f}% ({met[s['median_met']]} <= {TARGET_MEDIAN:g}%)",
                    f"{s['worst_abs_error_pct']:.1f}% ({met[s['worst_met']]} <= {TARGET_WORST:g}%)",
                    f"{s['in_range']} of {s['count']}")
    load_text = "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in loads.items())
    lines = [
        f"# Latency model: predicted against measured on x86-cpu, {record['runtime_label']}, {record['threads']} "
        f"thread(s), calibrated here from microbenchmarks only",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {describe_host(env)}, {env.get('cpu_cores')} cores, flags {', '.join(env.get('cpu_flags') or [])}; "
        f"torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, openvino {env.get('openvino')}, Python "
        f"{env.get('python')}.  ",
        f"Date: {record['date']}. {record['runtime_label']} CPU, {record['threads']} thread(s), batch 1; "
        f"{record['rounds']} interleaved rounds, each timing every microbenchmark ({micro_duration:g} s after "
        f"{micro_warmup:g} s) "
        f"and every model ({record['duration_s']:g} s after {record['warmup_s']:g} s) once, in a shuffled order.  ",
        f"Load average (1 min; this job's own load included after the start): {load_text}. Other processes used at "
        f"most {record['worst_other_cores']:.2f} core during any kept timing (a timing is repeated above "
        f"{OTHERS_MAX}).",
        "",
        *(["OpenVINO runs the IRs `leapkit export` writes, each precision with its inference precision hint (fp32: "
           "f32; bf16: the fp32 IR with bf16; int8: the INT8 IR, the rest in bf16 where the CPU has it); each model "
           "is predicted from the ONNX graph its IR was converted from.", ""] if record["runtime"] == "openvino"
          else []),
        f"The calibrations are fitted to {record['micro_count'] * len(precisions)} microbenchmark graphs (small ViTs "
        f"of widths "
        f"64-1024 without 192/384/768, 5-785 tokens, 1-4 blocks), none of the models below, once to each graph's "
        f"median p50 over the rounds and once to its fastest round's p50 (what `leapkit calibrate` keeps); each "
        f"prediction is compared with the same statistic of the model. The fastest round is the machine's own "
        f"speed: on this VM a graph's p50 moves between two levels up to ~1.6x apart from minute to minute with "
        f"nothing else running here (the host's other tenants), which a median over rounds does not filter.",
        "",
        summary.to_markdown(),
        "",
        table.to_markdown(),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
