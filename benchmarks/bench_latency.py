"""CPU latency of a ViT student: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8.

Measures, on this machine at batch 1, the demo student (a distilled run given with ``--demo-run``,
at that run's resolution, 16 px for the demo recipe) and a ViT-S/14 (vit_small_patch14_dinov2,
224 px, random weights) in:

- PyTorch eager (``forward_features`` under inference_mode);
- ONNX Runtime fp32 on the graph ``leapkit export`` writes (``leapkit.deploy.onnx_graph.export_onnx``),
  with all graph optimisations and with "basic" ones, to see what fusion buys;
- ONNX Runtime INT8 in four layouts, calibrated on real images (the embedded digits): the two that
  ``leapkit export`` writes (``leapkit.deploy.onnx_int8.quantize_int8``: for ONNX Runtime targets QDQ
  with uint8 activations and int8 per-channel weights into the ops with a weight, their outputs left
  float; for TensorRT symmetric int8 QDQ into every MatMul with an FP16 body, which ONNX Runtime's CPU
  provider runs slowly and is timed only for reference), and two alternatives from ``quantize_static`` for
  comparison: QDQ u8/s8 on every MatMul and the QOperator format.

Formats are timed in interleaved rounds (every format once per round) so that load from other
processes spreads over all of them instead of biasing one. For each it reports p50/p90/p99, the
coefficient of variation, and the achieved FLOP/s over this CPU's peak (cores x clock x FLOPs per
cycle, derived from lscpu). For the demo student it also compares the linear-probe top-1 of the
PyTorch, fp32 and INT8 features on the digits split. Without ``--demo-run`` the demo student is
trained supervised on the digits for a few epochs instead (``--demo-train-epochs``), so that its
features carry signal a quantizer can destroy (random weights give a meaningless probe).

Usage:
    leapkit distill --out /tmp/demo --no-progress
    python benchmarks/bench_latency.py --demo-run /tmp/demo   # writes benchmarks/results/bench_latency.{md,json}
    python benchmarks/bench_latency.py --demo-run /tmp/demo --threads 1 2 --rounds 5

A hand-written "## Analysis" section in an existing results file is kept when the file is rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from leapkit.data import DigitsDataset
from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.deploy.onnx_int8 import quantize_int8
from leapkit.eval.metrics import linear_probe
from leapkit.latency.cost import torch_cost
from leapkit.latency.timing import latency_stats, time_runner
from leapkit.models import create_student, normalization
from leapkit.runtimes.base import INPUT_NAME
from leapkit.threads import torch_threads

log = logging.getLogger("bench_latency")
RESULTS = Path(__file__).parent / "results"
# Default sizes; the demo student runs at its run's img_size when --demo-run is given.
MODELS = {"demo": ("leapkit_demo_student", 16), "vits14": ("vit_small_patch14_dinov2", 224)}
INPUT = INPUT_NAME


# ---------------------------------------------------------------- this CPU


def lscpu() -> dict[str, str]:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def cpu_peak() -> dict[str, Any]:
    """Peak dense FP32 FLOP/s and INT8 op/s of the CPUs this process may use: cores x clock x ops/cycle.

    FP32 FLOPs per cycle per core: 2 FMA pipes x SIMD lanes x 2. AMD Zen 3/4 (family 25) run two
    256-bit FMA pipes (Zen 4 splits AVX-512 into two halves): 32. Intel cores with AVX-512: 64
    (two 512-bit FMA units on server parts; fewer on some client parts). AVX2+FMA: 32. INT8 with
    VNNI: vpdpbusd does 4 multiply-adds per 32-bit lane, 4x the FP32 rate; without VNNI, 2x.
    """
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    cores = len(os.sched_getaffinity(0))
    mhz = float(
        info.get("CPU max MHz")
        or info.get("CPU MHz")
        or re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text()).group(1)
    )
    amd = info.get("Vendor ID") == "AuthenticAMD"
    if amd and info.get("CPU family") == "25":
        per_cycle, why = 32, "AMD family 25 (Zen 3/4): two 256-bit FMA pipes"
    elif "avx512f" in flags:
        per_cycle, why = 64, "AVX-512: two 512-bit FMA units assumed"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, why = 32, "AVX2 + FMA: two 256-bit FMA pipes"
    else:
        per_cycle, why = 16, "SSE/NEON-class: 128-bit"
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    fp32 = cores * mhz * 1e6 * per_cycle
    return {
        "model": info.get("Model name"), "vendor": info.get("Vendor ID"), "family": info.get("CPU family"),
        "cores": cores, "mhz": mhz, "fp32_flops_per_cycle": per_cycle, "why": why, "vnni": vnni,
        "amx": "amx_int8" in flags, "fp32_peak_gflops": fp32 / 1e9, "int8_peak_gops": fp32 * (4 if vnni else 2) / 1e9,
        "flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                                 "amx_bf16"}),
    }


# ---------------------------------------------------------------- models


def export_fp32(model: torch.nn.Module, img_size: int, path: Path) -> str:
    """The graph ``leapkit export`` writes: outputs tokens, cls, patch_tokens; returns the exporter used."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()), quiet_exporters():
        return export_onnx(model, path, img_size)


def digits(
    split: str, img_size: int, stats: tuple[tuple[float, ...], tuple[float, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    ds = DigitsDataset(split, img_size, *stats)
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs).numpy(), np.asarray(ys)


# The layouts `leapkit export` writes (leapkit.deploy.onnx_int8.quantize_int8, percentile calibration), by runtime.
LEAPKIT_LAYOUTS = {
    "int8 leapkit onnxruntime layout (QDQ u8/s8 into weight ops, float out)": "onnxruntime",
    "int8 leapkit tensorrt layout (QDQ s8/s8 into every MatMul, FP16 body)": "tensorrt",
}
# Alternatives straight from quantize_static (min-max calibration), for comparison.
INT8_LAYOUTS = {
    # name: (format, activation type, weight type, per-channel, extra options)
    "int8 QDQ u8/s8 per-channel, all MatMuls": ("QDQ", "QUInt8", "QInt8", True, {}),
    "int8 QOperator u8/s8 per-channel, all MatMuls": ("QOperator", "QUInt8", "QInt8", True, {}),
}
LAYOUT_NAMES = [*LEAPKIT_LAYOUTS, *INT8_LAYOUTS]


def quantize(src: Path, dst: Path, calib: np.ndarray, layout: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if layout in LEAPKIT_LAYOUTS:
        with contextlib.redirect_stdout(io.StringIO()), quiet_exporters():
            quantize_int8(src, dst, calib.astype(np.float32), runtime=LEAPKIT_LAYOUTS[layout])
        return
    fmt, act, wt, per_channel, extra = INT8_LAYOUTS[layout]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calib, max(len(calib) // 8, 1)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {INPUT: x.astype(np.float32)}

    pre = src.with_suffix(".pre.onnx")
    if not pre.exists():
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(pre), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt),
            activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, wt), per_channel=per_channel,
            op_types_to_quantize=["MatMul", "Conv", "Gemm"], extra_options=dict(extra),
        )


def train_supervised(model: torch.nn.Module, img_size: int, epochs: int, stats: tuple, seed: int = 0) -> None:
    """Give the demo student meaningful features: CLS token + linear head, cross-entropy on digits."""
    x, y = (torch.from_numpy(a) for a in digits("train", img_size, stats))
    head = torch.nn.Linear(model.embed_dim, int(y.max()) + 1)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=2e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch_threads(1):
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                loss = torch.nn.functional.cross_entropy(head(model.forward_features(x[idx])[:, 0]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()


def ort_session(path: Path, threads: int, level: str = "all") -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads.

    Its worker threads do not spin after a run: formats are timed in interleaved rounds, and a
    spinning ORT pool would take cores from PyTorch's OpenMP threads (and from the other sessions)
    in the next format's first iterations. Spinning saves ORT a wake-up per parallel op, so turning
    it off makes ORT's numbers, if anything, slower than in a process that runs only ORT.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_features(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(["cls"], {INPUT: b})[0] for b in np.array_split(x, max(len(x) // 64, 1))])


def torch_features(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([
            model.forward_features(torch.from_numpy(b))[:, 0].numpy() for b in np.array_split(x, max(len(x) // 64, 1))
        ])


def op_profile(path: Path, x: np.ndarray, runs: int = 5) -> dict[str, float]:
    """ONNX Runtime's profiler, 1 thread: ms per inference spent in each op type, largest first.

    The first (cold) run is left out.
    """
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            sess.run(None, {INPUT: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm_from = first["ts"] + first["dur"]
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= warm_from:
            op = e["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + e["dur"] / 1e3 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- timing


def interleaved(fns: dict[str, Any], rounds: int, iters: int, warmup_s: float) -> dict[str, list[float]]:
    """Every format ``iters`` times per round, ``rounds`` rounds, after one warm-up each."""
    for fn in fns.values():
        time_runner(fn, warmup_s=warmup_s, iterations=1)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name] += time_runner(fn, warmup_s=0.0, iterations=iters)
    return samples


def bench_model(key: str, args: argparse.Namespace, peak: dict[str, Any], work: Path) -> dict[str, Any]:
    name, img_size = MODELS[key]
    torch.manual_seed(0)
    weights = "random"
    if key == "demo" and args.demo_run:
        from leapkit.run import load_student, read_run_config

        cfg = read_run_config(Path(args.demo_run))
        name, img_size, stats = cfg.model.student, cfg.model.img_size, normalization(cfg.model.teacher)
        model = load_student(args.demo_run)
        summary = Path(args.demo_run) / "summary.json"
        probe = json.loads(summary.read_text()).get("eval", {}).get("linear_probe_top1") if summary.is_file() else None
        weights = (f"distilled by `leapkit distill` ({cfg.curriculum.mode}, teacher {cfg.model.teacher}), "
                   f"student.safetensors of run {args.demo_run}"
                   + (f" (its own eval: linear probe {probe:.2f}%)" if probe is not None else ""))
    else:
        model = create_student(name, img_size).eval()
        stats = normalization(name)
        if key == "demo" and args.demo_train_epochs > 0:
            train_supervised(model, img_size, args.demo_train_epochs, stats)
            weights = (f"supervised on the digits train split for {args.demo_train_epochs} epochs "
                       "(a stand-in for a distilled student)")
    fp32 = work / f"{key}.onnx"
    exporter = export_fp32(model, img_size, fp32)
    calib_x, _ = digits("train", img_size, stats)
    calib = calib_x[np.linspace(0, len(calib_x) - 1, args.calib).astype(int)]
    t0 = time.perf_counter()
    int8 = {}
    for layout in LAYOUT_NAMES:
        int8[layout] = work / f"{key}.{re.sub(r'[^a-z0-9]+', '_', layout)}.onnx"
        quantize(fp32, int8[layout], calib, layout)
    log.info("%s: exported and quantized in %.0f s", key, time.perf_counter() - t0)

    cost = torch_cost(model, img_size, 1)
    x_torch = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    x_np = x_torch.numpy()
    out: dict[str, Any] = {
        "model": name, "img_size": img_size, "weights": weights, "exporter": exporter,
        "params": int(sum(p.numel() for p in model.parameters())),
        "flops": cost.flops, "flops_source": cost.source, "calibration_images": int(len(calib)),
        "sizes_mb": {"fp32": fp32.stat().st_size / 1e6, **{k: p.stat().st_size / 1e6 for k, p in int8.items()}},
        "threads": {},
    }
    for threads in args.threads:
        sessions = {
            "ONNX Runtime fp32": ort_session(fp32, threads),
            "ONNX Runtime fp32 (basic opt.)": ort_session(fp32, threads, "basic"),
        }
        sessions.update({f"ONNX Runtime {k}": ort_session(p, threads) for k, p in int8.items()})

        def eager() -> None:
            with torch.inference_mode():
                model.forward_features(x_torch)

        fns: dict[str, Any] = {"PyTorch eager": eager}
        fns.update({k: (lambda s=s: s.run(None, {INPUT: x_np})) for k, s in sessions.items()})
        load_before = os.getloadavg()[0]
        with torch_threads(threads):
            samples = interleaved(fns, args.rounds, args.iters[key], args.warmup)
        rows = {}
        for fmt, s in samples.items():
            st = latency_stats(s, 1)
            is_int8 = "int8" in fmt
            peak_ops = (peak["int8_peak_gops"] if is_int8 else peak["fp32_peak_gflops"]) * 1e9 * threads / peak["cores"]
            achieved = cost.flops / (st["p50_ms"] / 1e3)
            rows[fmt] = {**st, "achieved_gflops": achieved / 1e9, "peak_fraction": achieved / peak_ops,
                         "peak_used_gops": peak_ops / 1e9}
        eager_p50, fp32_p50 = rows["PyTorch eager"]["p50_ms"], rows["ONNX Runtime fp32"]["p50_ms"]
        best_int8 = min((k for k in rows if "int8" in k), key=lambda k: rows[k]["p50_ms"])
        out["threads"][str(threads)] = {
            "rows": rows, "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0],
            "ort_fp32_over_eager": fp32_p50 / eager_p50,
            "int8_speedup_over_fp32": {k: fp32_p50 / rows[k]["p50_ms"] for k in rows if "int8" in k},
            "best_int8": best_int8,
            "check_fp32_le_0.8x_eager": fp32_p50 <= 0.8 * eager_p50,
            "check_int8_ge_2x_fp32": fp32_p50 / rows[best_int8]["p50_ms"] >= 2.0,
        }
        log.info("%s, %d thread(s): eager %.3f ms, ORT fp32 %.3f ms, best int8 %.3f ms (%s)", key, threads, eager_p50,
                 fp32_p50, rows[best_int8]["p50_ms"], best_int8)

    if args.profile:  # where the time goes, per op type (1 thread)
        out["op_profile_ms"] = {"fp32": op_profile(fp32, x_np), **{k: op_profile(p, x_np) for k, p in int8.items()}}

    if key == "demo":  # linear probe on CLS features: fp32 vs each INT8 layout
        tr_x, tr_y = digits("train", img_size, stats)
        va_x, va_y = digits("val", img_size, stats)
        probes = {"ONNX Runtime fp32": fp32, **{f"ONNX Runtime {k}": p for k, p in int8.items()}}
        feats = {"PyTorch eager": (torch_features(model, tr_x), torch_features(model, va_x))}
        for fmt, path in probes.items():
            sess = ort_session(path, max(args.threads))
            feats[fmt] = (ort_features(sess, tr_x), ort_features(sess, va_x))
        acc = {}
        with torch_threads(max(args.threads)):
            for fmt, (f_tr, f_va) in feats.items():
                acc[fmt] = linear_probe(
                    torch.from_numpy(f_tr), torch.from_numpy(tr_y), torch.from_numpy(f_va), torch.from_numpy(va_y)
                )["top1"]
        out["linear_probe_top1"] = acc
        out["linear_probe_drop"] = {k: acc["ONNX Runtime fp32"] - v for k, v in acc.items() if "int8" in k}
    return out


# ---------------------------------------------------------------- report


def kept_analysis(md: Path) -> str:
    """The hand-written "## Analysis" section of an existing results file, to carry into its rewrite."""
    text = md.read_text() if md.is_file() else ""
    return text[text.index("## Analysis"):] if "## Analysis" in text else ""


def short(fmt: str) -> str:
    """A format's name without the runtime, for the linear-probe line."""
    return fmt.replace("ONNX Runtime ", "")


def render(data: dict[str, Any], analysis: str) -> str:
    p, v = data["cpu"], data["versions"]
    lines = [
        "# CPU latency: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8",
        "",
        f"Command: `{data['command']}`  ",
        f"Machine: {data['machine']}; `lscpu` model name: {p['model']} (vendor {p['vendor']}, family {p['family']}), "
        f"{p['cores']} cores at {p['mhz']:.0f} MHz, flags {', '.join(p['flags'])}.  ",
        f"Software: torch {v['torch']}, onnxruntime {v['onnxruntime']}, Python {v['python']}.  ",
        f"Date: {data['date']}. Batch 1; {data['rounds']} interleaved rounds per format.",
        "",
        f"This CPU's peak (derived, {p['why']}): FP32 {p['fp32_peak_gflops']:.0f} GFLOP/s, "
        f"INT8 {p['int8_peak_gops']:.0f} GOP/s ({'VNNI: 4x FP32' if p['vnni'] else 'no VNNI: 2x FP32'}) "
        f"for all {p['cores']} cores; "
        "'% peak' uses the share of the cores the run's threads may use. "
        "FLOPs are 2 x MACs of the fp32 model (attention included).",
        "",
    ]
    for m in data["models"].values():
        lines += [f"## {m['model']} at {m['img_size']} px", "",
                  f"Weights: {m['weights']}. {m['params'] / 1e6:.2f} M parameters, "
                  f"{m['flops'] / 1e9:.3f} GFLOPs per image ({m['flops_source']}); "
                  f"INT8 calibration on {m['calibration_images']} digits images. ONNX sizes (MB): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in m["sizes_mb"].items()) + ".", ""]
        for threads, t in m["threads"].items():
            lines += [f"### {threads} thread(s) (load average {t['load_avg_before']:.1f} before, "
                      f"{t['load_avg_after']:.1f} after)", "",
                      "| format | p50 ms | p90 ms | p99 ms | cv | FPS | achieved GFLOP/s | % peak | vs fp32 ORT |",
                      "|---|---|---|---|---|---|---|---|---|"]
            fp32 = t["rows"]["ONNX Runtime fp32"]["p50_ms"]
            for fmt, r in t["rows"].items():
                lines.append(f"| {fmt} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['cv']:.2f} | "
                             f"{r['throughput']:.1f} | {r['achieved_gflops']:.2f} | {100 * r['peak_fraction']:.1f} | "
                             f"{fp32 / r['p50_ms']:.2f}x |")
            best = t["best_int8"]
            lines += ["", f"- ONNX Runtime fp32 / PyTorch eager (p50): **{t['ort_fp32_over_eager']:.2f}x** "
                          f"-> target <= 0.8x {'met' if t['check_fp32_le_0.8x_eager'] else '**not met**'}",
                      f"- best INT8 ({best}) speed-up over fp32 (p50): "
                      f"**{t['int8_speedup_over_fp32'][best]:.2f}x** -> target >= 2x "
                      f"{'met' if t['check_int8_ge_2x_fp32'] else '**not met**'}", ""]
        if "op_profile_ms" in m:
            top = ["MatMul", "QLinearMatMul", "Softmax", "QLinearSoftmax", "QuantizeLinear", "DequantizeLinear",
                   "Transpose", "LayerNormalization", "BiasGelu", "Add"]
            lines += ["Where the time goes (ONNX Runtime profiler, 1 thread, ms per inference by op type; "
                      "'other' is every remaining op):", "",
                      "| format | total | " + " | ".join(top) + " | other |", "|" + "---|" * (len(top) + 3)]
            for fmt, ops in m["op_profile_ms"].items():
                other = sum(v for k, v in ops.items() if k not in top)
                lines.append(f"| {fmt} | {sum(ops.values()):.2f} | " + " | ".join(f"{ops.get(k, 0.0):.2f}" for k in top)
                             + f" | {other:.2f} |")
            lines.append("")
        if "linear_probe_top1" in m:
            lines += ["Linear probe (digits, CLS features, top-1 %): "
                      + ", ".join(f"{short(k)} {v:.2f}" for k, v in m["linear_probe_top1"].items())
                      + ". Drop vs fp32 (points): "
                      + ", ".join(f"{short(k)} {v:+.2f}" for k, v in m["linear_probe_drop"].items()) + ".", ""]
    if analysis:
        lines += [analysis.rstrip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--threads", nargs="+", type=int, default=[1],
        help="intra-op threads; more threads than free cores measures oversubscription, not the runtimes",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters-demo", type=int, default=40, help="timed iterations per round for the demo student")
    parser.add_argument("--iters-vits14", type=int, default=4, help="timed iterations per round for ViT-S/14")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--calib", type=int, default=32, help="calibration images")
    parser.add_argument("--demo-run", default=None,
                        help="a distilled demo run (leapkit distill): its student, weights and resolution")
    parser.add_argument(
        "--demo-train-epochs", type=int, default=15,
        help="without --demo-run: train the demo student supervised for this many epochs first (0: random weights)",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the per-op ONNX Runtime profile")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.iters = {"demo": args.iters_demo, "vits14": args.iters_vits14}
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    peak = cpu_peak()
    data: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_latency.py", *sys.argv[1:]]),
        "machine": f"{peak['cores']}-core {platform.machine()} CPU VM",
        "cpu": peak,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models:
            data["models"][key] = bench_model(key, args, peak, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    md = args.out / "bench_latency.md"
    analysis = kept_analysis(md)
    (args.out / "bench_latency.json").write_text(json.dumps(data, indent=2) + "\n")
    md.write_text(render(data, analysis))
    print(md.read_text())


if __name__ == "__main__":
    main()
