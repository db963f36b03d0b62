"""Curricula side by side: linear-probe accuracy against training FLOPs (issue 23).

Every curriculum (``baseline``, ``progressive``, ``plateau``, and ``leap`` at CKA thresholds 0.8, 0.85
and 0.9) trains the same student at four training budgets (epochs), three seeds each, in two settings:

- ``demo``: the embedded demo (8-block teacher, 16 px digits, 16 patch tokens);
- ``digits12``: a deeper teacher on four times the tokens (``leapkit_digits12_teacher``: 12 blocks,
  32 px digits, 64 patch tokens; ``builtin:digits12_teacher``, made by
  scripts/train_demo_teacher.py --teacher digits12), the same student at 32 px.

Everything else is the demo recipe. At a budget of B epochs the recipe's schedule is scaled to B
(warm-up B/16 epochs, the recipe's 1 of 16), and ``max_epochs_per_block`` is B/L, every block's
equal share, in both settings (the recipe's 2 = 16/8): leap's and plateau's safety net is then
progressive's share, so the three climbing curricula differ in their gate alone. Plateau runs
at its defaults (``leapkit.config.CurriculumConfig``), never tuned per setting.

For each run: linear-probe and kNN top-1 on the 360 held-out digits (the run's closing evaluation),
training FLOPs as executed (``leapkit.flops.run_flops``: teacher forward up to the blocks each step
ran, student and head forward + backward, the CKA where a level-up reads it, the start-block scan),
the blocks visited and why each level-up happened. The teachers are probed the same way.

Usage:
    python benchmarks/curricula.py                    # the full benchmark (144 runs, 2 worker processes)
    python benchmarks/curricula.py --quick --results /tmp/curricula   # a smoke check: 2 budgets, 1 seed
    python benchmarks/curricula.py --render-only      # rewrite .md and .png from the .json
    python benchmarks/curricula.py --resume           # skip the runs the .json already holds

Writes benchmarks/results/curricula.{json,md,png}; the .json is rewritten after every run, so an
interrupted benchmark leaves its partial results (``complete: false``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from leap_vs_baseline import machine, teacher_accuracy, teacher_fingerprint

from leapkit.config import Config, CurriculumConfig, resolve_config

log = logging.getLogger("curricula")

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "curricula"
SEEDS = (0, 1, 2)
THRESHOLDS = (0.8, 0.85, 0.9)
FLOPS_GOAL_PCT = 40.0


@dataclass(frozen=True)
class Setting:
    """A model pair and its data: the demo recipe with ``overrides``, trained at ``budgets`` epochs."""

    name: str
    label: str
    overrides: dict[str, dict[str, Any]]
    budgets: tuple[int, ...]
    quick_budgets: tuple[int, ...]


SETTINGS = (
    Setting("demo", "8-block teacher, 16 px digits (16 tokens)", {}, (2, 4, 8, 16), (1, 2)),
    Setting("digits12", "12-block teacher, 32 px digits (64 tokens)",
            {"model": {"teacher": "leapkit_digits12_teacher", "teacher_weights": "builtin:digits12_teacher",
                       "img_size": 32}}, (1, 3, 6, 12), (1, 2)),
)
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"mode": "baseline"},
    "progressive": {"mode": "progressive"},
    "plateau": {"mode": "plateau"},
    **{f"leap-{t:g}": {"mode": "leap", "threshold": t} for t in THRESHOLDS},
}


@dataclass(frozen=True)
class Job:
    setting: str
    arm: str
    budget: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.setting}-{self.arm}-e{self.budget}-s{self.seed}"


def config_of(job: Job) -> Config:
    """The demo recipe under the setting's overrides, the arm's curriculum and the budget's schedule."""
    setting = next(s for s in SETTINGS if s.name == job.setting)
    base = resolve_config("demo", setting.overrides)
    blocks = teacher_blocks(base)
    scale = job.budget / base.train.epochs
    delta = {
        **setting.overrides,
        "curriculum": {**ARMS[job.arm], "max_epochs_per_block": job.budget / blocks},
        "optim": {"warmup_epochs": base.optim.warmup_epochs * scale},
        "train": {"epochs": job.budget, "seed": job.seed, "eval_at_end": True, "log": "none"},
    }
    return resolve_config("demo", delta)


def teacher_blocks(cfg: Config) -> int:
    import timm

    import leapkit.models  # noqa: F401  (registers the digits teachers)

    with torch.device("meta"):
        return len(timm.create_model(cfg.model.teacher, pretrained=False, num_classes=0).blocks)


# --- one run (in a worker process) --------------------------------------------------------------


def init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    logging.getLogger("leapkit").setLevel(logging.WARNING)


def one_run(job: Job, runs_dir: Path) -> dict[str, Any]:
    """Distil one job into ``runs_dir`` as ``leapkit distill`` does; its accuracy, FLOPs and curriculum."""
    from leapkit.run import read_json, read_metrics
    from leapkit.train import distill

    cfg, out = config_of(job), runs_dir / job.key
    start = time.perf_counter()
    summary = distill(cfg, out=out, overwrite=True, show_progress=False)
    wall = time.perf_counter() - start
    if summary.eval is None:
        raise SystemExit(f"{out}: the run has no closing evaluation")
    cur = read_json(out / "curriculum.json")
    steps = read_metrics(out)
    per_block = Counter(r["target_block"] for r in steps)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the rest of the run (metrics, curriculum) is kept
    return {
        **asdict(job),
        "linear_probe_top1": summary.eval.linear_probe_top1,
        "knn_top1": summary.eval.knn_top1,
        "train_flops": summary.train_flops,  # as executed (leapkit.flops.run_flops, in the run's evidence)
        "train_flops_fixed_target": summary.train_flops_baseline,
        "steps": len(steps),
        "blocks_visited": cur["blocks_visited"],
        "level_up_reasons": dict(Counter(e["reason"] for e in cur["level_ups"])),
        "level_ups": [[e["step"], e["from_block"], e["to_block"], e["reason"]] for e in cur["level_ups"]],
        "steps_per_block": {str(k): per_block[k] for k in sorted(per_block)},
        "train_seconds": summary.train_seconds,
        "wall_seconds": round(wall, 1),
    }


def _run(args: tuple[Job, Path]) -> dict[str, Any]:
    return one_run(*args)


# --- statistics and goals -------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def cells(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """setting -> arm -> budget -> mean and sd of probe, kNN and FLOPs, and the level-up reasons."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["setting"], r["arm"], r["budget"]), []).append(r)
    order = {s.name: i for i, s in enumerate(SETTINGS)} | {a: i for i, a in enumerate(ARMS)}
    for (setting, arm, budget), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]],
                                                                              kv[0][2])):
        reasons: Counter[str] = Counter()
        for r in rs:
            reasons.update(r["level_up_reasons"])
        out.setdefault(setting, {}).setdefault(arm, {})[budget] = {
            "probe": stats([r["linear_probe_top1"] for r in rs]),
            "knn": stats([r["knn_top1"] for r in rs]),
            "flops": stats([r["train_flops"] for r in rs]),
            "level_ups_per_run": {k: v / len(rs) for k, v in sorted(reasons.items())},
            "seeds": sorted(r["seed"] for r in rs),
        }
    return out


def baseline_flops_at(curve: dict[int, dict[str, Any]], accuracy: float) -> tuple[float | None, str]:
    """The FLOPs the baseline needs for ``accuracy``, read off its curve (linear in log FLOPs between budgets).

    Returns the FLOPs (None when outside the curve) and ``=`` (interpolated), ``>`` (beyond the
    baseline's most accurate point: the saving is at least the one given) or ``<`` (below its cheapest).
    """
    points = sorted((c["flops"]["mean"], c["probe"]["mean"]) for c in curve.values())
    best = max(points, key=lambda p: p[1])
    if accuracy > best[1]:
        return best[0], ">"
    for (f0, a0), (f1, a1) in zip(points, points[1:], strict=False):
        if min(a0, a1) <= accuracy <= max(a0, a1) and a0 != a1:
            t = (accuracy - a0) / (a1 - a0)
            return math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0))), "="
    return (points[0][0], "<") if accuracy < points[0][1] else (None, "<")


def goals(table: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """The issue's three goals per setting and budget, from the mean and sd over seeds."""
    out: dict[str, Any] = {}
    for setting, arms in table.items():
        if "baseline" not in arms:
            continue
        base = arms["baseline"]
        leaps = [a for a in arms if a.startswith("leap-")]
        rows = []
        for budget, b in sorted(base.items()):
            row: dict[str, Any] = {"budget": budget, "baseline": b["probe"]["mean"], "baseline_sd": b["probe"]["sd"]}
            have = {a: arms[a][budget] for a in arms if budget in arms[a]}
            if leaps and "plateau" in have and all(a in have for a in leaps):
                best = max(leaps, key=lambda a: have[a]["probe"]["mean"])
                p, q = have["plateau"]["probe"], have[best]["probe"]
                row |= {"best_leap": best, "best_leap_probe": q["mean"], "plateau": p["mean"], "plateau_sd": p["sd"],
                        "plateau_minus_best_leap": p["mean"] - q["mean"], "spread": max(p["sd"], q["sd"]),
                        "plateau_within_spread": p["mean"] >= q["mean"] - max(p["sd"], q["sd"])}
            above = {a: have[a]["probe"]["mean"] - b["probe"]["mean"] for a in have if a == "plateau" or a in leaps}
            row["above_baseline"] = {a: round(d, 2) for a, d in above.items()}
            row["leap_or_plateau_above_baseline"] = any(d > 0 for d in above.values()) if above else None
            savings = {}
            for a in (x for x in have if x != "baseline"):
                need, how = baseline_flops_at(base, have[a]["probe"]["mean"])
                if need is not None and how != "<":
                    savings[a] = {"saving_pct": 100 * (1 - have[a]["flops"]["mean"] / need), "bound": how}
            row["flops_saving_at_equal_accuracy"] = savings
            rows.append(row)
        out[setting] = rows
    return out


# --- presentation -------------------------------------------------------------------------------


def render(data: dict[str, Any], analysis: str | None = None) -> str:
    """The results page; a hand-written ``## Analysis`` (kept from the previous file) goes after the tables."""
    table, gl = cells(data["runs"]), data["goals"]
    m = data["machine"]
    lines = [
        "# Curricula side by side: accuracy against training FLOPs",
        "",
        "<!-- --8<-- [start:tables] -->",  # what docs/leap.md includes: all but the title and the figure
        f"Command: `{data['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}), Python {m['python']}, torch {m['torch']}, "
        f"leapkit {m['leapkit']}; {data['workers']} worker processes of {data['threads']} torch thread each. "
        f"Load average (1 min) {data['load_avg'][0]} at the start, {data['load_avg'][1] or '-'} at the end; "
        f"{data['minutes']:.1f} minutes." + ("" if data["complete"] else " **Partial: the benchmark was stopped.**"),
        "",
        "Linear-probe top-1 (%) of the student on the 360 held-out digits, mean ± sample sd over seeds "
        f"{list(data['seeds'])}, and training FLOPs as executed (G = 1e9, mean over seeds). At B epochs: warm-up "
        "B/16 epochs, leap's and plateau's epoch cap B/L (every block's equal share). "
        f"Plateau at its defaults: window {data['plateau']['plateau_window']} steps, tolerance "
        f"{data['plateau']['plateau_tolerance']:g}.",
        "",
    ]
    for setting, arms in table.items():
        te = data["teachers"].get(setting, {})
        budgets = sorted({b for a in arms.values() for b in a})
        lines += [f"## {setting}", "",
                  f"{data['settings'][setting]}. Teacher probed the same way: "
                  f"{te.get('linear_probe_top1', float('nan')):.2f}% top-1.", "",
                  "| curriculum | " + " | ".join(f"{b} ep: probe % | GFLOPs" for b in budgets) + " |",
                  "|---|" + "---|---|" * len(budgets)]
        for arm, by_budget in arms.items():
            row = [f"{by_budget[b]['probe']['mean']:.2f} ± {by_budget[b]['probe']['sd']:.2f} | "
                   f"{by_budget[b]['flops']['mean'] / 1e9:.0f}" if b in by_budget else "- | -" for b in budgets]
            lines.append(f"| {arm} | " + " | ".join(row) + " |")
        lines += ["", "Level-ups per run, by reason (mean over seeds):", "",
                  "| curriculum | " + " | ".join(f"{b} ep" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        for arm, by_budget in arms.items():
            if arm == "baseline":
                continue
            row = [", ".join(f"{k} {v:.1f}" for k, v in by_budget[b]["level_ups_per_run"].items()) or "none"
                   if b in by_budget else "-" for b in budgets]
            lines.append(f"| {arm} | " + " | ".join(row) + " |")
        lines += ["", *goal_lines(gl.get(setting, [])), ""]
    if analysis:
        lines += [analysis.rstrip(), ""]
    lines += ["<!-- --8<-- [end:tables] -->", "", f"![accuracy against training FLOPs]({NAME}.png)", ""]
    return "\n".join(lines)


def goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["| budget | baseline % | plateau − best leap (spread) | above baseline (points) | "
             "FLOPs saved at equal accuracy (vs baseline's curve) |", "|---|---|---|---|---|"]
    for r in rows:
        gap = (f"{r['plateau_minus_best_leap']:+.2f} vs {r['best_leap']} (±{r['spread']:.2f}): "
               f"{'within' if r['plateau_within_spread'] else 'below'}") if "best_leap" in r else "-"
        above = ", ".join(f"{a} {d:+.2f}" for a, d in r["above_baseline"].items()) or "-"
        savings = ", ".join(f"{a} {s['bound'] if s['bound'] == '>' else ''}{s['saving_pct']:.0f}%"
                            for a, s in r["flops_saving_at_equal_accuracy"].items()) or "-"
        lines.append(f"| {r['budget']} ep | {r['baseline']:.2f} ± {r['baseline_sd']:.2f} | {gap} | {above} | "
                     f"{savings} |")
    lines += ["", "`>N%`: more accurate than any baseline point, so at least N% fewer FLOPs than the baseline's "
              "most accurate run; a curriculum less accurate than the baseline's cheapest run has no entry."]
    return lines


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = cells(data["runs"])
    fig, axes = plt.subplots(1, len(table), figsize=(6.2 * len(table), 4.6), constrained_layout=True, squeeze=False)
    styles = {"baseline": ("black", "--", "s"), "progressive": ("tab:gray", "-", "^"),
              "plateau": ("tab:red", "-", "o"), "leap-0.8": ("tab:blue", ":", "v"),
              "leap-0.85": ("tab:cyan", ":", "v"), "leap-0.9": ("tab:green", ":", "v")}
    for ax, (setting, arms) in zip(axes[0], table.items(), strict=True):
        for arm, by_budget in arms.items():
            budgets = sorted(by_budget)
            x = [by_budget[b]["flops"]["mean"] / 1e9 for b in budgets]
            y = [by_budget[b]["probe"]["mean"] for b in budgets]
            e = [by_budget[b]["probe"]["sd"] for b in budgets]
            color, ls, marker = styles.get(arm, ("tab:purple", "-", "x"))
            ax.errorbar(x, y, yerr=e, color=color, linestyle=ls, marker=marker, capsize=3, linewidth=1.5, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("training GFLOPs (as executed)")
        ax.set_ylabel("linear-probe top-1 % (held-out digits)")
        label = next((s.label for s in SETTINGS if s.name == setting), "")
        ax.set_title(f"{setting}: {label}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data: dict[str, Any], folder: Path, figures: bool = True) -> None:
    """The .json and .md after every run; the .png when ``figures`` (matplotlib takes a second)."""
    data["goals"] = goals(cells(data["runs"]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{NAME}.json").write_text(json.dumps(data, indent=2) + "\n")
    md = folder / f"{NAME}.md"
    md.write_text(render(data, kept_analysis(md)))
    if figures:
        plot(data, folder / f"{NAME}.png")


def kept_analysis(path: Path) -> str | None:
    """The hand-written ``## Analysis`` of an existing results page, up to the end of the tables."""
    text = path.read_text() if path.is_file() else ""
    start, end = text.find("\n## Analysis\n"), text.find("<!-- --8<-- [end:tables] -->")
    return text[start + 1:end] if start != -1 and end > start else None


# --- main ---------------------------------------------------------------------------------------


def describe(setting: Setting) -> str:
    cfg = resolve_config("demo", setting.overrides)
    return (f"teacher `{cfg.model.teacher}` ({teacher_blocks(cfg)} blocks), student `{cfg.model.student}`, "
            f"{cfg.model.img_size} px digits ({(cfg.model.img_size // 4) ** 2} patch tokens), batch "
            f"{cfg.train.batch_size}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="A smoke check: two small budgets, one seed.")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--settings", nargs="+", default=[s.name for s in SETTINGS], choices=[s.name for s in SETTINGS])
    ap.add_argument("--workers", type=int, default=2, help="Runs at once (processes).")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run.")
    ap.add_argument("--runs-dir", type=Path, default=Path("/tmp/leapkit-curricula"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--render-only", action="store_true", help="Rewrite the .md and .png from the .json.")
    ap.add_argument("--resume", action="store_true", help="Keep the .json's runs and run only the missing ones.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    path = args.results / f"{NAME}.json"
    if args.render_only:
        write(json.loads(path.read_text()), args.results)
        print((args.results / f"{NAME}.md").read_text())
        return

    seeds = tuple(args.seeds or ((0,) if args.quick else SEEDS))
    settings = [s for s in SETTINGS if s.name in args.settings]
    jobs = [Job(s.name, arm, budget, seed)
            for i in range(max(len(s.budgets) for s in settings))  # cheap budgets of both settings first
            for s in settings for budget in (s.quick_budgets if args.quick else s.budgets)[i:i + 1]
            for seed in seeds for arm in ARMS]
    previous = json.loads(path.read_text()) if args.resume and path.is_file() else None
    done = {Job(r["setting"], r["arm"], r["budget"], r["seed"]).key: r for r in (previous or {}).get("runs", [])}
    command = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    start, load_start = time.time(), round(os.getloadavg()[0], 2)
    torch.set_num_threads(args.threads)
    data: dict[str, Any] = {
        "command": command, "machine": machine(), "workers": args.workers, "threads": args.threads,
        "seeds": seeds, "load_avg": [load_start, None], "minutes": 0.0, "complete": False,
        "plateau": {k: getattr(CurriculumConfig(), k) for k in ("plateau_window", "plateau_tolerance")},
        "settings": {s.name: describe(s) for s in settings},
        "teachers": {s.name: teacher_accuracy(resolve_config("demo", s.overrides)) for s in settings},
        "teacher_weights": {s.name: teacher_fingerprint(resolve_config("demo", s.overrides)) for s in settings},
        "runs": [done[j.key] for j in jobs if j.key in done],
    }
    todo = [j for j in jobs if j.key not in done]
    log.info("%d runs (%d already done), %d at a time", len(todo), len(done), args.workers)
    with mp.get_context("spawn").Pool(args.workers, initializer=init_worker, initargs=(args.threads,)) as pool:
        for r in pool.imap_unordered(_run, [(j, args.runs_dir) for j in todo]):
            data["runs"].append(r)
            data["minutes"] = (time.time() - start) / 60
            log.info("%s %s %d ep seed %d: probe %.2f%%, %.0f GFLOPs, blocks %s (%.0f s) [%d/%d]", r["setting"],
                     r["arm"], r["budget"], r["seed"], r["linear_probe_top1"], r["train_flops"] / 1e9,
                     r["blocks_visited"], r["wall_seconds"], len(data["runs"]), len(jobs))
            write(data, args.results, figures=len(data["runs"]) % 6 == 0)
    data["complete"] = True
    data["load_avg"][1] = round(os.getloadavg()[0], 2)
    data["minutes"] = (time.time() - start) / 60
    write(data, args.results)
    print((args.results / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
