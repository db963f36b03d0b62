"""Is the latency lower bound (leapkit.latency.cost) below every latency this machine measures?

For a few timm ViTs with random weights: time PyTorch eager, ONNX Runtime fp32 and ONNX Runtime
int8 (dynamic quantization) on this machine's CPU with the x86-cpu profile's thread count, and
compare each p50 with the bound of the same model on the profile of this machine (x86-cpu). A
bound above a measurement would be a bug in the bound or in the profile's peaks. It also lists the
bound beside each published measurement cited in tests/test_cost.py.

    python benchmarks/lower_bound_check.py [--duration 3] [--models vit_tiny_patch16_224:224 ...]

Writes benchmarks/results/lower_bound_check.{json,md}. A benchmark, not a test: it asserts nothing
on wall time, it reports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from leapkit.latency.cost import Cost, onnx_cost, roofline, torch_cost
from leapkit.latency.machine import environment, target_match
from leapkit.latency.timing import latency_stats, time_runner
from leapkit.models import Backbone
from leapkit.profiles import load_target
from leapkit.runtimes.ort_runner import OrtRunner
from leapkit.runtimes.torch_runner import TorchRunner
from leapkit.tables import Table
from leapkit.threads import torch_threads

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vit_tiny_patch16_224:224", "vit_tiny_patch16_224:112", "vit_small_patch16_224:224",
          "vit_small_patch14_dinov2:224", "vit_base_patch16_224:224")

log = logging.getLogger("lower_bound_check")


def export(model: torch.nn.Module, img_size: int, folder: Path) -> dict[str, Path]:
    """fp32 ONNX (the outputs leapkit exports) and its dynamically quantized int8 copy."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = folder / "model.onnx"
    torch.onnx.export(Backbone(model), torch.zeros(1, 3, img_size, img_size), str(fp32), dynamo=False,
                      opset_version=17, input_names=["images"], output_names=["tokens", "cls", "patch_tokens"])
    int8 = folder / "model_int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"fp32": fp32, "int8": int8}


def time_p50(run: Any, duration_s: float) -> tuple[float, int]:
    samples = time_runner(run, warmup_s=1.0, iterations=None, duration_s=duration_s)
    stats = latency_stats(samples, 1)
    return stats["p50_ms"], stats["iterations"]


def measure(name: str, img_size: int, threads: int, duration_s: float) -> list[dict[str, Any]]:
    profile = load_target("x86-cpu")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=0).eval()
    cost = torch_cost(model, img_size, 1)
    x = np.random.default_rng(0).standard_normal((1, 3, img_size, img_size)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads):
        files = export(model, img_size, Path(tmp))
        # one runner alive at a time: idle ONNX Runtime sessions keep threads that compete for the cores
        runners: list[tuple[str, str, Any, Cost]] = [("torch", "fp32", lambda: TorchRunner(model, "cpu"), cost)]
        for precision, path in files.items():
            graph = onnx_cost(path, 1)
            runners.append(("onnxruntime", precision,
                            lambda path=path: OrtRunner(path, threads, ["CPUExecutionProvider"]),
                            Cost(cost.flops, graph.params, graph.io_elements, cost.source, img_size)))
        for runtime, precision, make, used in runners:
            runner = make()
            p50, n = time_p50(runner.timed(x), duration_s)
            runner.close()
            bound = roofline(used, profile, precision)
            assert bound is not None
            rows.append({"model": name, "img_size": img_size, "runtime": runtime, "precision": precision,
                         "threads": threads, "p50_ms": p50, "iterations": n, "bound_ms": bound.estimate_ms,
                         "compute_ms": bound.compute_ms, "memory_ms": bound.memory_ms, "gflops": cost.flops / 1e9,
                         "ratio": bound.estimate_ms / p50, "below": bound.estimate_ms <= p50})
            log.info("%s %d %s %s: p50 %.3f ms, bound %.3f ms", name, img_size, runtime, precision, p50,
                     bound.estimate_ms)
    return rows


def published() -> list[dict[str, Any]]:
    """The bound beside each published measurement of tests/test_cost.py (its cited table)."""
    spec = importlib.util.spec_from_file_location("test_cost", ROOT / "tests" / "test_cost.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = []
    for entry in module.PUBLISHED:
        what, name, img_size, precision, target, ms, source = getattr(entry, "values", entry)
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=0).eval()
        bound = roofline(torch_cost(model, img_size, 1), load_target(target), precision)
        assert bound is not None
        rows.append({"measured": what, "model": name, "img_size": img_size, "precision": precision,
                     "target": target, "published_ms": ms, "bound_ms": bound.estimate_ms,
                     "compute_ms": bound.compute_ms, "memory_ms": bound.memory_ms,
                     "ratio": bound.estimate_ms / ms, "source": source})
        log.info("%s %s %d on %s: bound %.3f ms, published %.3f ms", what, name, img_size, target,
                 bound.estimate_ms, ms)
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="timm name:input size")
    ap.add_argument("--duration", type=float, default=3.0, help="timed seconds per format")
    ap.add_argument("--threads", type=int, default=load_target("x86-cpu").threads)
    args = ap.parse_args()

    env = environment()
    match = target_match(load_target("x86-cpu"), env)
    rows = [row for spec in args.models for row in measure(spec.split(":")[0], int(spec.split(":")[1]),
                                                            args.threads, args.duration)]
    pub = published()
    command = "python benchmarks/lower_bound_check.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = {"command": command.strip(), "machine": env, "profile": "x86-cpu",
              "this_host_is_the_profile": match.is_target, "measured": rows, "published": pub}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lower_bound_check.json").write_text(json.dumps(record, indent=2) + "\n")

    mine = Table.of("model", "input", "runtime", "precision", "GFLOPs", "p50 ms", "bound ms", "bound / p50",
                    "bound <= p50", right=("input", "GFLOPs", "p50 ms", "bound ms", "bound / p50"))
    for r in rows:
        mine.add(r["model"], str(r["img_size"]), r["runtime"], r["precision"], f"{r['gflops']:.2f}",
                 f"{r['p50_ms']:.2f}", f"{r['bound_ms']:.3f}", f"{r['ratio']:.2f}", "yes" if r["below"] else "NO")
    cited = Table.of("measured", "timm backbone", "input", "precision", "target", "published ms", "bound ms",
                     "bound / published", right=("input", "published ms", "bound ms", "bound / published"))
    for r in pub:
        cited.add(r["measured"], r["model"], str(r["img_size"]), r["precision"], r["target"],
                  f"{r['published_ms']:g}", f"{r['bound_ms']:.3f}", f"{r['ratio']:.3f}")
    gpu = env.get("gpu") or {}
    lines = [
        "# Latency lower bound against measurements",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {env['host']}, {env['cpu']} ({env['cpu_cores']} cores, {env.get('cpu_affinity')} usable; "
        f"{', '.join(env['cpu_flags'])}), GPU {gpu.get('name', 'none')}; torch {env['torch']}, onnxruntime "
        f"{env['onnxruntime']}; {env['os']}; load average {env['load_avg_1m']:.1f} at the end. "
        f"x86-cpu profile: {match.reason}.",
        "",
        f"## On this machine ({args.threads} threads, x86-cpu profile)",
        "",
        "Random-weight timm models, p50 of a timed run after a 1 s warm-up; the bound of the same model on the "
        "x86-cpu profile (int8: ONNX Runtime dynamic quantization).",
        "",
        mine.to_markdown(),
        "",
        "## Against published measurements (tests/test_cost.py)",
        "",
        cited.to_markdown(),
        "",
        "Sources: " + "; ".join(dict.fromkeys(r["source"] for r in pub)),
    ]
    (RESULTS / "lower_bound_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not all(r["below"] for r in rows):
        sys.exit("the bound exceeded a measurement on this machine (see the table)")


if __name__ == "__main__":
    main()
