"""LEAP against the fixed-target baseline on the embedded demo, over several seeds.

Both schedules train the same student from the same teacher on the same digits for the same
number of epochs (recipe ``demo``); only ``curriculum.mode`` differs. For every run it records:

- linear-probe and kNN top-1 of the student on the 360 held-out digits (the run's closing
  evaluation, ``leapkit.eval.stage.evaluate_model`` on the demo's train/val split);
- training FLOPs as executed (``leapkit.flops.run_flops``: teacher forward up to the blocks each
  step ran, student and head forward + 2x backward, CKA and calibration for LEAP);
- teacher-block evaluations (images x blocks run) and the share saved against the baseline;
- wall time (training loop alone, and the whole run with its evaluation);
- the blocks visited, the level-ups and how many epochs were spent on each block.

The teacher is evaluated once on the same split, for the student/teacher gap.

Targets (issue 3): LEAP needs at least 20% fewer training FLOPs than the baseline, and its
accuracy is not below the baseline's.

Extra LEAP (or baseline) configurations, to find out why LEAP wins or loses, are added with
``--variant NAME:section.key=value,...`` and appear as more rows of the same table.

Usage:
    python benchmarks/leap_vs_baseline.py                               # 3 seeds, the recipe's epochs
    python benchmarks/leap_vs_baseline.py --seeds 0 --epochs 2 --results /tmp/x   # a quick check
    python benchmarks/leap_vs_baseline.py --variant "thr0.8:curriculum.threshold=0.8"

Writes benchmarks/results/leap_vs_baseline.{md,json}. A hand-written "## Analysis" section in an
existing results file is kept when the file is rewritten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import yaml

from leapkit import __version__
from leapkit.config import Config, recipe_path, resolve_config
from leapkit.eval.features import labelled_splits
from leapkit.eval.stage import evaluate_model
from leapkit.flops import BACKWARD_FACTOR, run_flops, step_costs
from leapkit.models import builtin_weights, create_teacher
from leapkit.run import read_json, read_metrics
from leapkit.train import distill

log = logging.getLogger("leap_vs_baseline")

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "leap_vs_baseline"
ANALYSIS = "## Analysis"
FLOPS_TARGET_PCT = 20.0
METRICS = (
    "linear_probe_top1", "knn_top1", "train_flops", "teacher_blocks_saved_pct", "train_seconds", "wall_seconds",
)


@dataclass
class Arm:
    """One row of the table: a schedule and its config overrides, run over every seed."""

    name: str
    overrides: dict[str, dict[str, Any]]
    runs: list[dict[str, Any]] = field(default_factory=list)


def parse_variant(spec: str) -> Arm:
    """``NAME:section.key=value,section.key=value`` -> an Arm (LEAP unless it sets curriculum.mode)."""
    name, _, assignments = spec.partition(":")
    if not name or not assignments:
        raise SystemExit(f"--variant {spec!r}: expected NAME:section.key=value[,section.key=value]")
    delta: dict[str, dict[str, Any]] = {"curriculum": {"mode": "leap"}}
    for item in assignments.split(","):
        key, eq, value = item.partition("=")
        section, dot, option = key.strip().partition(".")
        if not eq or not dot:
            raise SystemExit(f"--variant {spec!r}: {item!r} is not section.key=value")
        delta.setdefault(section, {})[option] = yaml.safe_load(value)
    return Arm(name, delta)


def merge(*deltas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in deltas:
        for section, values in d.items():
            out.setdefault(section, {}).update(values)
    return out


def epochs_per_block(steps: list[dict[str, Any]], steps_per_epoch: int) -> dict[str, float]:
    counts = Counter(r["target_block"] for r in steps)
    return {str(k): round(counts[k] / steps_per_epoch, 2) for k in sorted(counts)}


def level_up_margins(
    steps: list[dict[str, Any]], level_ups: list[dict[str, Any]], window: int = 5
) -> dict[str, Any]:
    """How far above its block's recent CKA the batch that triggered each threshold level-up was.

    A level-up triggered by one lucky batch (EMA alpha 1) shows as a CKA well above the mean of the
    ``window`` batches before it on the same block. The step-to-step change on one block gives the
    scale of that noise.
    """
    by_step = {r["step"]: r for r in steps}
    margins, means = [], []
    for e in level_ups:
        if e["reason"] != "threshold":
            continue
        before = [r["cka"] for r in steps if r["step"] < e["step"] and r["target_block"] == e["from_block"]][-window:]
        if before:
            means.append(statistics.fmean(before))
            margins.append(by_step[e["step"]]["cka"] - means[-1])
    changes = [abs(b["cka"] - a["cka"]) for a, b in pairwise(steps) if a["target_block"] == b["target_block"]]
    return {
        "threshold_level_ups": len(margins),
        "mean_cka_before_level_up": round(statistics.fmean(means), 4) if means else None,
        "mean_margin": round(statistics.fmean(margins), 4) if margins else None,
        "median_step_change": round(statistics.median(changes), 4) if changes else None,
    }


def one_run(cfg: Config, out: Path) -> dict[str, Any]:
    """Distil one config into ``out`` as ``leapkit distill`` does (FLOPs and closing evaluation included)."""
    start = time.perf_counter()
    summary = distill(cfg, out=out, overwrite=True, show_progress=False)  # with FLOPs and the evaluation
    wall = time.perf_counter() - start
    summary.wall_seconds = round(wall, 1)
    summary.save(folder=out)
    if summary.eval is None:
        raise SystemExit(f"{out}: the run has no closing evaluation; the recipe needs a labelled split")
    flops = run_flops(out)
    curriculum = read_json(out / "curriculum.json")
    steps = read_metrics(out)
    steps_per_epoch = max(1, round(len(steps) / cfg.train.epochs))
    ev = summary.eval
    return {
        "seed": cfg.train.seed,
        "mode": cfg.curriculum.mode,
        "linear_probe_top1": ev.linear_probe_top1,
        "knn_top1": ev.knn_top1,
        "retrieval_map": ev.retrieval_map,
        "train_flops": flops.train_flops_run,
        "train_flops_fixed_target": flops.train_flops_baseline,
        "flops_parts": flops.train_flops_breakdown.run.to_dict(),
        "flops_parts_fixed_target": flops.train_flops_breakdown.baseline.to_dict(),
        "teacher_block_images": summary.teacher_block_images,
        "teacher_blocks_saved_pct": summary.teacher_blocks_saved_pct,
        "train_seconds": summary.train_seconds,
        "wall_seconds": round(wall, 2),
        "steps": summary.steps,
        "blocks_visited": summary.blocks_visited,
        "calibration_start_block": (curriculum.get("calibration") or {}).get("start_block"),
        "calibration_scores": [round(x, 4) for x in (curriculum.get("calibration") or {}).get("scores", [])],
        "level_up_noise": level_up_margins(steps, curriculum["level_ups"]),
        "level_ups": [
            [e["step"], e["from_block"], e["to_block"], e["reason"], round(e["ema"], 4)]
            for e in curriculum["level_ups"]
        ],
        "epochs_per_block": epochs_per_block(steps, steps_per_epoch),
        "final_loss": steps[-1]["loss"],
        "final_cka": steps[-1]["cka"],
    }


def stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def teacher_accuracy(cfg: Config) -> dict[str, Any]:
    """The teacher's backbone, evaluated exactly like the students (same split, same probe)."""
    teacher = create_teacher(
        cfg.model.teacher, cfg.model.img_size, weights=cfg.model.teacher_weights, pretrained=False
    )
    train, val = labelled_splits(cfg)
    return evaluate_model(teacher.eval(), train, val)


def machine() -> dict[str, Any]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "unknown"
        )
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor() or "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "leapkit": __version__,
    }


def teacher_fingerprint(cfg: Config) -> dict[str, Any]:
    w = cfg.model.teacher_weights
    path = builtin_weights(w.split(":", 1)[1]) if w and w.startswith("builtin:") else (Path(w) if w else None)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path and path.is_file() else None
    return {"name": cfg.model.teacher, "weights": w, "sha256_16": digest}


# --- presentation -------------------------------------------------------------------------------


def fmt(s: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    return f"{s['mean'] / scale:.{digits}f} ± {s['sd'] / scale:.{digits}f}"


def describe(overrides: dict[str, dict[str, Any]]) -> str:
    """A variant's overrides as ``section.key=value`` pairs."""
    return ", ".join(
        f"{section}.{key}={value}" for section, values in overrides.items() for key, value in values.items()
    )


def flops_unit(value: float) -> tuple[float, str]:
    """The largest unit in which ``value`` still reads as at least 10 (so one decimal separates the rows)."""
    for scale, name in ((1e18, "EFLOPs"), (1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs")):
        if value >= 10 * scale:
            return scale, name
    return 1e6, "MFLOPs"


def summarise(arm: Arm) -> dict[str, Any]:
    return {m: stats([r[m] for r in arm.runs]) for m in METRICS}


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    leap, base = rows["LEAP"]["stats"], rows["baseline"]["stats"]
    saving = 100.0 * (1 - leap["train_flops"]["mean"] / base["train_flops"]["mean"])
    out = {
        "train_flops_saving_pct": round(saving, 2),
        "flops_target_met": saving >= FLOPS_TARGET_PCT,
        "linear_probe_delta": round(leap["linear_probe_top1"]["mean"] - base["linear_probe_top1"]["mean"], 2),
        "knn_delta": round(leap["knn_top1"]["mean"] - base["knn_top1"]["mean"], 2),
    }
    out["accuracy_target_met"] = out["linear_probe_delta"] >= 0 and out["knn_delta"] >= 0
    return out


def render(data: dict[str, Any], analysis: str | None) -> str:
    m, s, t = data["machine"], data["settings"], data["targets"]
    base_flops = data["rows"]["baseline"]["stats"]["train_flops"]["mean"]
    scale, unit = flops_unit(base_flops)
    loads = [x for pair in data["load_avg"] for x in pair]
    lines = [
        "# LEAP vs the fixed-target baseline on the embedded demo",
        "",
        *[f"Command: `{c}`  " for c in data["commands"]],
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}), Python {m['python']}, torch {m['torch']}, "
        f"leapkit {m['leapkit']}; {s['threads']} torch thread(s) per run, runs one after another. "
        f"Load average (1 min) {min(loads):.1f} to {max(loads):.1f} at the starts and ends of the commands"
        + (" (the machine was shared with other jobs, so wall times are noisy)." if max(loads) > m["cores"] else "."),
        "",
        f"Recipe `{s['recipe']}`: teacher `{s['teacher']['name']}` (weights {s['teacher']['weights']}, "
        f"sha256 {s['teacher']['sha256_16']}...), student `{s['student']}`, {s['img_size']} px, {s['epochs']} epochs, "
        f"batch {s['batch_size']}, seeds {s['seeds']}. LEAP: CKA threshold {s['threshold']:g}, "
        f"EMA alpha {s['ema_alpha']:g}, at most {s['max_epochs_per_block']:g} epochs per block. "
        "Accuracy: the student's CLS features, linear probe and kNN (k=20) on the 360 held-out digits, trained on "
        "the 1,437 training digits. Training FLOPs: as executed, from `leapkit.flops` (FLOPs = 2 x MACs, "
        "backward = 2 x forward).",
        "",
        "Mean ± sample standard deviation over the seeds.",
        "",
        f"| schedule | linear probe top-1 % | kNN top-1 % | training {unit} | vs baseline | "
        "teacher-block evals saved % | train s | wall s | blocks visited |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in data["rows"].items():
        st = row["stats"]
        visited = sorted({" \u2192 ".join(map(str, r["blocks_visited"])) for r in row["runs"]})
        lines.append(
            f"| {name} | {fmt(st['linear_probe_top1'])} | {fmt(st['knn_top1'])} | {fmt(st['train_flops'], scale, 1)} | "
            f"{100 * (st['train_flops']['mean'] / base_flops - 1):+.1f}% | "
            f"{fmt(st['teacher_blocks_saved_pct'], digits=1)} | "
            f"{fmt(st['train_seconds'], digits=0)} | {fmt(st['wall_seconds'], digits=0)} | {'; '.join(visited)} |"
        )
    te = data["teacher_eval"]
    sd = {name: data["rows"][name]["stats"]["linear_probe_top1"]["sd"] for name in ("LEAP", "baseline")}
    variants = {name: row for name, row in data["rows"].items() if name not in ("LEAP", "baseline")}
    lines += [
        f"| teacher (reference) | {te['linear_probe_top1']:.2f} | {te['knn_top1']:.2f} | - | - | - | - | - | - |",
        "",
        *[f"- `{name}`: {describe(row['overrides'])}, seeds {[r['seed'] for r in row['runs']]}"
          for name, row in variants.items()],
        *([""] if variants else []),
        "## Targets",
        "",
        f"- Training FLOPs: LEAP uses {abs(t['train_flops_saving_pct']):.1f}% "
        f"{'fewer' if t['train_flops_saving_pct'] >= 0 else 'more'} "
        f"than the baseline (target: at least {FLOPS_TARGET_PCT:g}% fewer): "
        f"**{'met' if t['flops_target_met'] else 'missed'}**.",
        f"- Accuracy: LEAP minus baseline, linear probe {t['linear_probe_delta']:+.2f} points, "
        f"kNN {t['knn_delta']:+.2f} points (target: not below): **{'met' if t['accuracy_target_met'] else 'missed'}**. "
        f"Seed-to-seed sd of the linear probe: LEAP {sd['LEAP']:.2f}, baseline {sd['baseline']:.2f} points.",
        "",
        *where_flops_go(data["rows"], data.get("reference_pair")),
        *level_up_noise(data["rows"]),
        "## Per run",
        "",
        f"| schedule | seed | probe % | kNN % | {unit} | calibration start | "
        "level-ups (step: from \u2192 to, reason) | epochs per block |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in data["rows"].items():
        for r in row["runs"]:
            ups = ", ".join(f"{u[0]}: {u[1]}\u2192{u[2]} {u[3]}" for u in r["level_ups"]) or "-"
            per_block = ", ".join(f"{k}: {v:g}" for k, v in r["epochs_per_block"].items())
            lines.append(
                f"| {name} | {r['seed']} | {r['linear_probe_top1']:.2f} | {r['knn_top1']:.2f} | "
                f"{r['train_flops'] / scale:.1f} | "
                f"{r['calibration_start_block'] if r['mode'] == 'leap' else '-'} | {ups} | {per_block} |"
            )
    text = "\n".join(lines) + "\n"
    if analysis:
        text += "\n" + analysis.rstrip() + "\n"
    return text


def pair_shares(recipe: str) -> dict[str, Any]:
    """Per-image shares of a fixed-target training step for a recipe's model pair (meta device, no weights)."""
    cfg = resolve_config(recipe)
    costs, _, _ = step_costs(cfg)
    step = costs.teacher_upto[-1] + (1 + BACKWARD_FACTOR) * (costs.student_fwd + costs.head_fwd)
    return {"recipe": recipe, "teacher": cfg.model.teacher, "student": cfg.model.student,
            "img_size": cfg.model.img_size,
            "teacher_share": costs.teacher_upto[-1] / step, "signal_share": costs.signal / step}


def where_flops_go(rows: dict[str, dict[str, Any]], reference: dict[str, Any] | None = None) -> list[str]:
    """How a saving in teacher blocks becomes a saving in training FLOPs, for every LEAP row.

    total saving = (teacher share of the baseline's cost) x (teacher FLOPs skipped) - (CKA + calibration)
    """
    lines = []
    for name, row in rows.items():
        runs = [r for r in row["runs"] if r["mode"] == "leap" and "flops_parts" in r]
        if not runs:
            continue
        base_total = statistics.fmean(sum(r["flops_parts_fixed_target"].values()) for r in runs)
        base_parts = {
            k: statistics.fmean(r["flops_parts_fixed_target"][k] for r in runs)
            for k in runs[0]["flops_parts_fixed_target"]
        }
        parts = {k: statistics.fmean(r["flops_parts"][k] for r in runs) for k in runs[0]["flops_parts"]}
        share = base_parts["teacher"] / base_total
        skipped = 1 - parts["teacher"] / base_parts["teacher"]
        overhead = (parts["signal"] + parts["calibration"]) / base_total
        need = (FLOPS_TARGET_PCT / 100 + overhead) / share
        saving = (f"skipped {100 * skipped:.1f}% of the teacher's FLOPs, {100 * share * skipped:.1f}% of the total, "
                  f"and paid {100 * overhead:.1f}% for the per-step CKA and the calibration scan: "
                  f"net {100 * (share * skipped - overhead):.1f}%.")
        if lines:
            lines.append(f"- {name}: {saving}")
            continue
        lines.append(
            f"- {name}: the teacher's forward is {100 * share:.1f}% of the fixed-target cost of the same steps "
            f"(student forward + backward {100 * base_parts['student'] / base_total:.1f}%, "
            f"head {100 * base_parts['head'] / base_total:.1f}%). LEAP {saving} "
            f"A {FLOPS_TARGET_PCT:g}% net saving at this teacher share needs {100 * need:.1f}% of the teacher's FLOPs "
            "skipped."
        )
    leap = [r for r in rows["LEAP"]["runs"] if "flops_parts" in r]
    if reference and leap:
        skipped = 1 - statistics.fmean(
            r["flops_parts"]["teacher"] / r["flops_parts_fixed_target"]["teacher"] for r in leap
        )
        ref = reference
        lines.append(
            f"- For comparison, the paper's pair (recipe `{ref['recipe']}`: `{ref['teacher']}` into "
            f"`{ref['student']}` at {ref['img_size']} px) spends {100 * ref['teacher_share']:.1f}% of a fixed-target "
            f"step in the teacher (and {100 * ref['signal_share']:.1f}% on the CKA): "
            f"there, skipping the same {100 * skipped:.1f}% of the teacher's FLOPs would save about "
            f"{100 * (ref['teacher_share'] * skipped - ref['signal_share']):.1f}% "
            "(estimate from the per-image costs, calibration not counted)."
        )
    return ["## Where the FLOPs go", "", *lines, ""] if lines else []


def level_up_noise(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Calibration and threshold level-ups of the LEAP rows, averaged over seeds."""
    lines = []
    for name, row in rows.items():
        runs = [r for r in row["runs"] if r["mode"] == "leap" and "level_up_noise" in r]
        if not runs:
            continue
        cal = [r["calibration_scores"] for r in runs if r["calibration_scores"]]
        text = f"- {name}: calibration started at block {', '.join(str(r['calibration_start_block']) for r in runs)}"
        if cal:
            first, last = statistics.fmean(c[0] for c in cal), statistics.fmean(c[-1] for c in cal)
            text += f" (untrained student's CKA {first:.2f} with block 1 down to {last:.2f} with block {len(cal[0])})"
        noise = [r["level_up_noise"] for r in runs if r["level_up_noise"]["threshold_level_ups"]]
        ups = statistics.fmean(r["level_up_noise"]["threshold_level_ups"] for r in runs)
        text += f"; {ups:.1f} level-ups per run by threshold"
        if noise:
            text += (
                ": the 5 batches before each averaged CKA "
                f"{statistics.fmean(n['mean_cka_before_level_up'] for n in noise):.3f} and the triggering batch was "
                f"{statistics.fmean(n['mean_margin'] for n in noise):+.3f} above that, against a median "
                f"step-to-step change of {statistics.fmean(n['median_step_change'] for n in noise):.3f}"
            )
        lines.append(text + ".")
    return ["## Calibration and level-ups", "", *lines, ""] if lines else []


def kept_analysis(path: Path) -> str | None:
    """The hand-written analysis of an existing results file, from its heading to the end."""
    if not path.is_file():
        return None
    text = path.read_text()
    i = text.find(f"\n{ANALYSIS}\n")
    return text[i + 1 :] if i != -1 else None


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="Epochs for every run (default: the recipe's).")
    ap.add_argument("--teacher-weights", default=None, help="Teacher safetensors (default: the recipe's).")
    ap.add_argument("--variant", action="append", default=[],
                    help="Extra row: NAME:section.key=value[,...] (LEAP unless it sets curriculum.mode).")
    ap.add_argument("--variant-seeds", type=int, nargs="+", default=None,
                    help="Seeds for the variants (default: --seeds).")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (the machine is shared).")
    ap.add_argument("--runs-dir", type=Path, default=Path("/tmp/leapkit-leap-vs-baseline"))
    ap.add_argument("--results", type=Path, default=RESULTS, help="Folder for leap_vs_baseline.{md,json}.")
    ap.add_argument("--reference-recipe", default="imagenet100-vits14-from-vitg14",
                    help="Model pair whose FLOPs shares are shown for comparison.")
    ap.add_argument("--render-only", action="store_true", help="Rewrite the .md from the existing .json (no runs).")
    ap.add_argument("--extend", action="store_true",
                    help="Add the --variant rows to the existing results instead of starting over.")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("leapkit").setLevel(logging.INFO if args.verbose else logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.render_only:
        write_results(read_previous(args.results / f"{NAME}.json"), args.results)
        return

    common: dict[str, dict[str, Any]] = {}
    if args.epochs is not None:
        common.setdefault("train", {})["epochs"] = args.epochs
    if args.teacher_weights is not None:
        common.setdefault("model", {})["teacher_weights"] = args.teacher_weights
    previous = read_previous(args.results / f"{NAME}.json") if args.extend else None
    arms = [] if previous else [
        Arm("LEAP", {"curriculum": {"mode": "leap"}}), Arm("baseline", {"curriculum": {"mode": "baseline"}}),
    ]
    arms += [parse_variant(v) for v in args.variant]
    names = [a.name for a in arms] + (list(previous["rows"]) if previous else [])
    if len(set(names)) != len(names):
        raise SystemExit(f"row names must be unique, got {names}")

    load_start = os.getloadavg()[0]
    ref_cfg = resolve_config(args.recipe, merge(common, {"train": {"seed": args.seeds[0]}}))
    for arm in arms:
        seeds = args.seeds if arm.name in ("LEAP", "baseline") or args.variant_seeds is None else args.variant_seeds
        for seed in seeds:
            delta = merge(common, arm.overrides, {"train": {"seed": seed, "eval_at_end": True}})
            cfg = resolve_config(args.recipe, delta)
            out = args.runs_dir / f"{arm.name}-s{seed}"
            log.info("%s, seed %d -> %s", arm.name, seed, out)
            arm.runs.append(one_run(cfg, out))
            r = arm.runs[-1]
            log.info("  probe %.2f%%  kNN %.2f%%  %.1f GFLOPs  blocks %s  %.0f s", r["linear_probe_top1"],
                     r["knn_top1"], r["train_flops"] / 1e9, r["blocks_visited"], r["wall_seconds"])
    command = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    load = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    rows = {a.name: {"overrides": a.overrides, "stats": summarise(a), "runs": a.runs} for a in arms}
    if previous:
        check_same_settings(previous["settings"], ref_cfg, args)
        data = {**previous, "commands": [*previous["commands"], command], "load_avg": [*previous["load_avg"], load],
                "rows": {**previous["rows"], **rows}}
        data["settings"]["variant_seeds"] = args.variant_seeds or args.seeds
        write_results(data, args.results)
        return
    log.info("evaluating the teacher")
    teacher_eval = teacher_accuracy(ref_cfg)
    log.info("counting the paper's model pair (%s) for comparison", args.reference_recipe)
    reference = pair_shares(args.reference_recipe)

    c = ref_cfg.curriculum
    data = {
        "commands": [command],
        "machine": machine(),
        "load_avg": [load],
        "settings": {
            "recipe": args.recipe, "recipe_file": str(recipe_path(args.recipe).name),
            "teacher": teacher_fingerprint(ref_cfg),
            "student": ref_cfg.model.student, "img_size": ref_cfg.model.img_size, "epochs": ref_cfg.train.epochs,
            "batch_size": ref_cfg.train.batch_size, "seeds": args.seeds,
            "variant_seeds": args.variant_seeds or args.seeds, "threshold": c.threshold, "ema_alpha": c.ema_alpha,
            "max_epochs_per_block": c.max_epochs_per_block, "threads": args.threads,
        },
        "teacher_eval": teacher_eval,
        "reference_pair": reference,
        "rows": rows,
    }
    write_results(data, args.results)


def write_results(data: dict[str, Any], folder: Path) -> None:
    data["targets"] = targets(data["rows"])
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{NAME}.md"
    (folder / f"{NAME}.json").write_text(json.dumps(data, indent=2) + "\n")
    md.write_text(render(data, kept_analysis(md)))
    print(md.read_text())


def read_previous(path: Path) -> dict[str, Any]:
    """Results to extend, in the current layout (older files held one command and one load pair)."""
    if not path.is_file():
        raise SystemExit(f"--extend: {path} does not exist; run without --extend first")
    data = json.loads(path.read_text())
    if "commands" not in data:
        data["commands"] = [data.pop("command")]
        data["load_avg"] = [data["load_avg"]]
    return data


def check_same_settings(settings: dict[str, Any], cfg: Config, args: argparse.Namespace) -> None:
    """Rows are only comparable when the recipe, epochs and teacher are those of the existing results."""
    now = {"recipe": args.recipe, "epochs": cfg.train.epochs, "teacher": teacher_fingerprint(cfg),
           "batch_size": cfg.train.batch_size}
    differ = [k for k, v in now.items() if settings[k] != v]
    if differ:
        raise SystemExit(f"--extend: {', '.join(differ)} differ from the existing results; run without --extend")


if __name__ == "__main__":
    main()
