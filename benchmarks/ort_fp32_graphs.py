"""How much can the ONNX graph buy ONNX Runtime fp32 against PyTorch eager? ViT-S/14, 224 px, batch 1.

`bench_latency.py` found ONNX Runtime fp32 at ~0.86x of PyTorch eager's latency on this CPU, short of
the 0.8x target. This script times rewrites of the graph that `leapkit export` writes, each checked
against it for equal outputs, interleaved with PyTorch eager (``forward_features``):

- ``leapkit export`` (torch.export, opset 18): GELU arrives as Erf/Div/Mul/Add;
- opset 20: GELU as one ``Gelu`` op;
- opset 23: GELU and attention as ``Gelu`` and ``Attention`` ops;
- Linear as Gemm: every nn.Linear applied to the flattened (tokens, channels) matrix, so that the
  exporter writes Reshape -> Gemm (bias inside the GEMM) instead of a 3-D MatMul and an Add;
- Linear as Gemm at opset 20;
- ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``, model type vit) run
  on the leapkit graph.

PyTorch eager on CPU returns its activation buffers to glibc after every inference, and glibc may
hand the memory back to the kernel (munmap, or trimming the heap's top) and fault it in again on the
next, depending on the heap's history; ONNX Runtime's arena keeps its buffers. ``--mallopt``
raises glibc's mmap and trim thresholds in this process first (what ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` do), which rules the churn out, and writes ``ort_fp32_graphs_mallopt.*``.
The page faults per inference of every format are reported either way.

For each it also runs ONNX Runtime's profiler and splits the time into GEMM kernels (MatMul, Gemm,
FusedMatMul) and the rest. The GEMMs alone give a floor that no rewrite keeping ORT's GEMM kernels
can beat: ``GEMM ms / eager ms`` is the best ratio any fusion of the remaining ops could reach.

    python benchmarks/ort_fp32_graphs.py [--threads 1] [--repeats 3] [--pause 30] [--rounds 6] [--iters 3] [--mallopt]

Writes benchmarks/results/ort_fp32_graphs[_mallopt].{md,json}; a hand-written "## Analysis" section in an
existing results file is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import bench_latency as BL  # noqa: E402  (sibling script: CPU peak, sessions, interleaving, profiler)

from leapkit.deploy.onnx_graph import OPSET, export_onnx, quiet_exporters  # noqa: E402
from leapkit.models import create_student  # noqa: E402
from leapkit.runtimes.base import INPUT_NAME  # noqa: E402
from leapkit.threads import torch_threads  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MODEL, IMG = "vit_small_patch14_dinov2", 224
GEMM_OPS = ("MatMul", "Gemm", "FusedMatMul")


class FlatLinear(nn.Module):
    """nn.Linear on the (tokens, channels) matrix: exported as Reshape -> Gemm -> Reshape."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def flat_linears(model: nn.Module) -> nn.Module:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, FlatLinear(child))
    return model


def export(model: nn.Module, path: Path, opset: int) -> Path:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()), quiet_exporters():
        export_onnx(model, path, IMG, opset=opset)
    return path


def ort_transformer_optimizer(src: Path, dst: Path, model: nn.Module) -> Path:
    from onnxruntime.transformers import optimizer

    with contextlib.redirect_stdout(io.StringIO()):
        opt = optimizer.optimize_model(str(src), model_type="vit", num_heads=model.blocks[0].attn.num_heads,
                                       hidden_size=model.embed_dim, opt_level=0)
    opt.save_model_to_file(str(dst))
    return dst


def build(work: Path) -> tuple[nn.Module, dict[str, Path]]:
    torch.manual_seed(0)
    model = create_student(MODEL, IMG).eval()
    flat = flat_linears(create_student(MODEL, IMG).eval())
    flat.load_state_dict(model.state_dict())
    base = export(model, work / "leapkit.onnx", OPSET)
    graphs: dict[str, Callable[[], Path]] = {
        f"leapkit export (opset {OPSET})": lambda: base,
        "opset 20 (Gelu op)": lambda: export(model, work / "opset20.onnx", 20),
        "opset 23 (Gelu and Attention ops)": lambda: export(model, work / "opset23.onnx", 23),
        f"Linear as Gemm (opset {OPSET})": lambda: export(flat, work / "gemm.onnx", OPSET),
        "Linear as Gemm, opset 20": lambda: export(flat, work / "gemm20.onnx", 20),
        "ORT transformer optimizer (vit) on the leapkit graph":
            lambda: ort_transformer_optimizer(base, work / "ortopt.onnx", model),
    }
    return model, {name: make() for name, make in graphs.items()}


def op_types(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def no_mmap_churn() -> None:
    """glibc: serve large allocations from the heap and keep freed memory.

    mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, both raised to 1 GiB.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)):
        raise SystemExit("mallopt failed: is this glibc?")


def page_faults(fn: Callable[[], Any], runs: int = 5) -> float:
    """Minor page faults per call of ``fn`` (this process, after one call)."""
    import resource

    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(runs):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per format per round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="timing blocks, each every format interleaved")
    parser.add_argument("--pause", type=float, default=30.0, help="seconds between timing blocks")
    parser.add_argument("--mallopt", action="store_true", help="raise glibc's mmap/trim thresholds first (see above)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.mallopt:
        no_mmap_churn()

    x_torch = torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    x = x_torch.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        model, graphs = build(Path(tmp))
        with torch.inference_mode():
            ref = model.forward_features(x_torch).numpy()
        sessions = {name: BL.ort_session(path, args.threads) for name, path in graphs.items()}
        rows: dict[str, dict[str, Any]] = {}
        for name, sess in sessions.items():
            diff = float(np.abs(sess.run(["tokens"], {INPUT_NAME: x})[0] - ref).max())
            profile = BL.op_profile(graphs[name], x)
            gemm = sum(v for k, v in profile.items() if k in GEMM_OPS)
            rows[name] = {"max_abs_diff_vs_eager": diff, "ops": op_types(graphs[name]), "profile_ms": profile,
                          "profile_total_ms": sum(profile.values()), "profile_gemm_ms": gemm}

        def eager() -> None:
            with torch.inference_mode():
                model.forward_features(x_torch)

        fns: dict[str, Any] = {"PyTorch eager": eager}
        fns.update({name: (lambda s=s: s.run(None, {INPUT_NAME: x})) for name, s in sessions.items()})
        repeats, loads = [], []
        for i in range(args.repeats):
            if i:
                time.sleep(args.pause)
            loads.append(os.getloadavg()[0])
            with torch_threads(args.threads):
                repeats.append(BL.interleaved(fns, args.rounds, args.iters, args.warmup))
        loads.append(os.getloadavg()[0])
        with torch_threads(args.threads):
            faults = {name: page_faults(fn) for name, fn in fns.items()}

    # Per repeat: each format's p50 and min over that repeat's samples, as a ratio to eager's.
    per_repeat = [{name: (float(np.median(s)), float(np.min(s))) for name, s in rep.items()} for rep in repeats]
    samples = {name: [t for rep in repeats for t in rep[name]] for name in fns}
    timed = {}
    for name, s in samples.items():
        p50_ratios = [rep[name][0] / rep["PyTorch eager"][0] for rep in per_repeat]
        min_ratios = [rep[name][1] / rep["PyTorch eager"][1] for rep in per_repeat]
        timed[name] = {"p50_ms": float(np.median(s)), "min_ms": float(np.min(s)), "cv": float(np.std(s) / np.mean(s)),
                       "p50_ratio_per_repeat": p50_ratios, "min_ratio_per_repeat": min_ratios,
                       "over_eager": float(np.median(p50_ratios)), "min_over_eager_min": float(np.median(min_ratios)),
                       "page_faults_per_inference": faults[name]}
    eager_min = timed["PyTorch eager"]["min_ms"]
    for name, r in rows.items():
        r |= timed[name]
        # the profiler inflates every kernel a little; scale its GEMM share onto the timed minimum
        r["gemm_floor_ms"] = r["min_ms"] * r["profile_gemm_ms"] / r["profile_total_ms"]
        r["gemm_floor_over_eager_min"] = r["gemm_floor_ms"] / eager_min
    data = {
        "command": "python benchmarks/ort_fp32_graphs.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": BL.cpu_peak(), "threads": args.threads,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "mallopt": args.mallopt, "load_avg": loads, "repeats": args.repeats, "pause_s": args.pause,
        "rounds": args.rounds, "iters": args.iters, "eager": timed["PyTorch eager"],
        "eager_p50_per_repeat": [rep["PyTorch eager"][0] for rep in per_repeat], "graphs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "ort_fp32_graphs" + ("_mallopt" if args.mallopt else "")
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    md = args.out / f"{stem}.md"
    analysis = BL.kept_analysis(md)
    md.write_text(render(data) + ("\n" + analysis if analysis else ""))
    print(render(data))


def render(data: dict[str, Any]) -> str:
    p, e, sw = data["cpu"], data["eager"], data["versions"]
    lines = [
        f"# ONNX Runtime fp32 graph rewrites vs PyTorch eager ({MODEL}, {IMG} px, batch 1)", "",
        f"Command: `{data['command']}`  ",
        f"Machine: 2-core x86_64 VM, `lscpu` model name {p['model']} (family {p['family']}), "
        f"{p['cores']} cores at {p['mhz']:.0f} MHz.  ",
        f"Software: torch {sw['torch']}, onnxruntime {sw['onnxruntime']}, Python {sw['python']}.  ",
        f"Date: {data['date']}. {data['threads']} thread(s) per runtime; {data['repeats']} timing blocks "
        f"{data['pause_s']:.0f} s apart, each {data['rounds']} interleaved rounds of {data['iters']} iterations "
        "per format; load average at the blocks' starts and end: "
        + ", ".join(f"{v:.1f}" for v in data["load_avg"]) + ".", "",
        "glibc malloc: "
        + ("mmap and trim thresholds raised to 1 GiB (`--mallopt`)" if data["mallopt"] else "defaults") + ".", "",
        f"PyTorch eager (`forward_features`, inference mode): p50 {e['p50_ms']:.1f} ms, min {e['min_ms']:.1f} ms, "
        f"cv {e['cv']:.2f}, {e['page_faults_per_inference']:.0f} page faults per inference; per block p50 "
        + ", ".join(f"{r:.1f}" for r in data["eager_p50_per_repeat"]) + " ms.", "",
        "'p50 / eager' is the median over the timing blocks of (graph p50 / eager p50 in that block), with each "
        "block's value in brackets; 'min / eager min' does the same with each block's fastest inference, the figure "
        "least moved by other load. 'GEMM floor' is the graph's fastest inference times the GEMM kernels' share of "
        "ONNX Runtime's profile (MatMul, Gemm, FusedMatMul): its latency if every other op cost nothing, against "
        "eager's fastest.", "",
        "| graph | max abs diff vs eager | p50 ms | min ms | page faults | p50 / eager | min / eager min "
        "| GEMM floor ms | floor / eager min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data["graphs"].items():
        each = ", ".join(f"{v:.3f}" for v in r["p50_ratio_per_repeat"])
        lines.append(f"| {name} | {r['max_abs_diff_vs_eager']:.1e} | {r['p50_ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['page_faults_per_inference']:.0f} | **{r['over_eager']:.3f}x** ({each}) | "
                     f"{r['min_over_eager_min']:.3f}x | {r['gemm_floor_ms']:.1f} | "
                     f"{r['gemm_floor_over_eager_min']:.3f}x |")
    lines += ["", "ONNX Runtime profile, ms per inference by op type "
                  "(1 thread; the profiler adds per-kernel overhead):", ""]
    for name, r in data["graphs"].items():
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(r["profile_ms"].items())[:9])
        lines.append(f"- {name}: total {r['profile_total_ms']:.1f}: {top}")
    lines += ["", "Op counts in each graph:", ""]
    for name, r in data["graphs"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in list(r["ops"].items())[:10]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
