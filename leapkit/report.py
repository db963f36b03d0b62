"""`RUN/report.md`: one Markdown page with everything the stages wrote about a run.

Sections, each read from the file its stage writes: the run's settings (config.yaml,
summary.json), the curriculum (curriculum.json, metrics.jsonl, with plots), training FLOPs against
the fixed-target baseline (flops.json, computed when missing or older than the metrics),
evaluation (eval.json, or the closing evaluation in summary.json), export parity and accuracy
(export/<target>/manifest.json) and latency with the budget verdict (bench/<target>.json). A
section without data says which command produces it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from leapkit import __version__
from leapkit.config import Config
from leapkit.errors import MissingDependency, RunError
from leapkit.run import CONFIG, CURRICULUM, METRICS, STUDENT, SUMMARY, atomic_write_bytes, read_json, read_metrics, read_run_config, resolve_run

log = logging.getLogger(__name__)

REPORT = "report.md"


@dataclass
class Section:
    """One part of the report: its Markdown lines, and when its data is missing, the command that makes it."""

    title: str
    lines: list[str] = field(default_factory=list)
    missing: str | None = None


@dataclass
class Report:
    """What :func:`write_report` produced."""

    path: Path
    sections: list[Section]
    plots: dict[str, Path]

    @property
    def missing(self) -> dict[str, str]:
        """Section title -> the command that would fill it."""
        return {s.title: s.missing for s in self.sections if s.missing}


# --- formatting ---------------------------------------------------------------------------------


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _saved(pct: float) -> str:
    """A saving in percent as words; a negative saving is a cost."""
    return f"{pct:.1f}% saved" if pct >= 0 else f"{-pct:.1f}% more"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [row(header), "|" + "|".join("---" for _ in header) + "|", *(row(r) for r in rows)]


def _missing(what: str, *commands: str) -> list[str]:
    return [f"_{what}_ Produce it with " + " or ".join(f"`{c}`" for c in commands) + "."]


def _stale(path: Path, reference: Path, command: str) -> list[str]:
    """A warning line when ``path`` was written before ``reference`` (the student it describes changed)."""
    if reference.exists() and path.stat().st_mtime < reference.stat().st_mtime:
        return [f"> Note: `{path.name}` is older than `{reference.name}`; it may describe an earlier student. Refresh it with `{command}`.", ""]
    return []


# --- sections -----------------------------------------------------------------------------------


def _run_section(cfg: Config, summary: dict[str, Any] | None, q: str) -> Section:
    m, d, c, o, t = cfg.model, cfg.data, cfg.curriculum, cfg.optim, cfg.train
    data = "embedded digits (scikit-learn): 1,437 train / 360 held-out" if d.source == "digits" else f"folder `{d.path}`"
    if c.mode == "leap":
        curriculum = (
            f"LEAP: {c.metric} threshold {c.threshold:g}, EMA alpha {c.ema_alpha:g}, at most {c.max_epochs_per_block:g} epochs per block, "
            f"calibration {'on' if c.calibrate else 'off'}" + (f", snap to last at block {c.snap_to_last_at}" if c.snap_to_last_at else "")
        )
    else:
        curriculum = "fixed-target baseline: the teacher's last block from the first step, no early exit"
    rows = [
        ["recipe", cfg.recipe],
        ["teacher", f"`{m.teacher}`" + (f" (weights `{m.teacher_weights}`)" if m.teacher_weights else " (hub weights)")],
        ["student", f"`{m.student}`"],
        ["resolution", f"{m.img_size} px"],
        ["data", data + ("" if d.augment else ", no augmentation")],
        ["schedule", f"{t.epochs} epochs, batch {t.batch_size}" + (f" x {o.accum_steps} accumulation" if o.accum_steps > 1 else "")],
        ["optimizer", f"{o.name}, lr {o.lr:g} (min {o.min_lr:g}), weight decay {o.weight_decay:g}, warmup {o.warmup_epochs:g} epochs"
                      + (", cosine restarted at each level-up" if o.lr_restart else "")],
        ["curriculum", curriculum],
        ["loss", "MSE to the target block's patch tokens" + (f" + {c.cls_weight:g} x CLS MSE" if c.cls_weight > 0 else "")],
        ["seed, device", f"{t.seed}, {t.device}"],
    ]
    lines = ["From `config.yaml`.", "", *_table(["setting", "value"], rows), ""]
    if summary is None:
        lines += _missing("The run has no summary.json: it did not finish.", f"leapkit distill --resume --out {q}")
        return Section("Run", lines, missing=f"leapkit distill --resume --out {q}")
    lines.append(
        f"Finished: {summary['steps']:,} steps over {summary['epochs']} epochs, {summary['images_seen']:,} images in "
        f"{summary['train_seconds']:.1f} s of training ({summary['images_per_s']:,.0f} images/s"
        + (f", {summary['world_size']} processes" if summary.get("world_size", 1) > 1 else "") + ")"
        + (f"; {summary['wall_seconds']:.1f} s wall time with setup and evaluation." if "wall_seconds" in summary else ".")
    )
    return Section("Run", lines)


def _curriculum_section(run_dir: Path, cfg: Config, summary: dict[str, Any] | None, steps: list[dict[str, Any]], plots: dict[str, str]) -> Section:
    path = run_dir / CURRICULUM
    cur = read_json(path) if path.is_file() else None
    lines: list[str] = []
    if cur is None:
        lines += ["No `curriculum.json` yet (it is written at the end of each epoch)."]
    else:
        visited = " \u2192 ".join(map(str, cur["blocks_visited"]))
        lines.append(f"- Blocks visited: {visited} (of {cur['num_blocks']}); the run ended on block {cur['final_block']}.")
        cal = cur.get("calibration") or {}
        if cal.get("scores"):
            best = ", ".join(f"{i}: {s:.3f}" for i, s in enumerate(cal["scores"], 1))
            lines.append(f"- Calibration on {cal['images']} images started at block {cal['start_block']} ({cfg.curriculum.metric} per block {best}).")
        elif cur["mode"] == "leap":
            lines.append("- Calibration was off: the run started at block 1.")
        if summary is not None:
            lines.append(
                f"- Teacher-block evaluations (images x blocks run): {summary['teacher_block_images']:,} against "
                f"{summary['teacher_block_images_baseline']:,} for the fixed-target baseline ({_saved(summary['teacher_blocks_saved_pct'])})."
            )
        lines.append("")
        if cur["level_ups"]:
            rows = [[str(e["step"]), f"{e['epoch']:.2f}", f"{e['from_block']} \u2192 {e['to_block']}", e.get("reason", "-"), f"{e['ema']:.3f}"]
                    for e in cur["level_ups"]]
            lines += _table(["step", "epoch", "block", "reason", f"EMA {cfg.curriculum.metric}"], rows)
        else:
            lines.append("No level-ups.")
    last = steps[-1]
    lines += ["", f"Last step ({last['step']}): loss {last['loss']:.4g}, {cfg.curriculum.metric} {last['cka']:.3f}, target block {last['target_block']}.", ""]
    lines += _images(plots, ("curriculum", "loss"))
    return Section("Curriculum", lines)


def _flops_section(run_dir: Path, plots: dict[str, str]) -> Section:
    from leapkit.flops import FLOPS, run_flops

    path = run_dir / FLOPS
    if not path.is_file() or path.stat().st_mtime < (run_dir / METRICS).stat().st_mtime:
        log.info("computing %s", path)
        run_flops(run_dir)
    f = read_json(path)
    run_parts, base_parts = f["train_flops_breakdown"]["run"], f["train_flops_breakdown"]["baseline"]
    labels = {"teacher": "teacher forward", "student": "student forward + backward", "head": "head forward + backward",
              "signal": f"curriculum {f['metric']}", "calibration": "calibration scan"}
    rows = [[labels.get(k, k), _si(run_parts[k]), _si(base_parts[k])] for k in run_parts]
    rows.append(["**total**", f"**{_si(f['train_flops_run'])}**", f"**{_si(f['train_flops_baseline'])}**"])
    saving = f["train_flops_saving_pct"]
    lines = [f"From `{FLOPS}` ({f['steps']:,} steps, {f['images']:,} images at {f['img_size']} px). {f['units']}", ""]
    lines += _table(["component (FLOPs)", f"this run ({f['curriculum']})", "fixed-target baseline"], rows)
    lines.append("")
    if saving is None:
        lines.append("This run is the fixed-target baseline, so there is no saving to report.")
    else:
        lines.append(f"**Training FLOPs against the fixed-target baseline: {_saved(saving)}.**")
        base_total, share = f["train_flops_baseline"], base_parts["teacher"] / f["train_flops_baseline"]
        skipped = 1 - run_parts["teacher"] / base_parts["teacher"]
        lines.append(
            f"The teacher's forward is {100 * share:.1f}% of the baseline's cost, so skipping {100 * skipped:.1f}% of the teacher's FLOPs "
            f"saves {100 * share * skipped:.1f}% of the total, less {100 * (run_parts['signal'] + run_parts['calibration']) / base_total:.1f}% "
            "for the per-step CKA and the calibration scan."
        )
    t = f["teacher"]
    mem = ", ".join(f"{_si(v, 'B')} at batch {b}" for b, v in f["student_activation_bytes"].items())
    lines += [
        "",
        f"Inference, per image: student {_si(f['student_inference_flops'])}FLOPs, {_si(f['student_params'])} parameters, "
        f"activations {mem}; teacher `{t['name']}` {_si(t['inference_flops'])}FLOPs, {_si(t['params'])} parameters.",
        "",
    ]
    lines += _images(plots, ("train_flops",))
    return Section("Training FLOPs", lines)


_EVAL_ROWS = (("linear probe top-1", "linear_probe_top1"), ("linear probe top-5", "linear_probe_top5"),
              ("kNN top-1 (k=20)", "knn_top1"), ("retrieval mAP", "retrieval_map"))


def _eval_section(run_dir: Path, summary: dict[str, Any] | None, q: str) -> Section:
    from leapkit.evaluate import EVAL

    path = run_dir / EVAL
    command = f"leapkit eval {q}"
    if path.is_file():
        e = read_json(path)
        teacher = e.get("teacher")
        header = ["metric (%)", "student"] + (["teacher", "gap (teacher - student)"] if teacher else [])
        rows = []
        for label, key in _EVAL_ROWS:
            if key in e:
                rows.append([label, _pct(e[key])] + ([_pct(teacher[key]), f"{teacher[key] - e[key]:+.2f}"] if teacher else []))
        for name, r in e.get("revisitop", {}).items():
            for protocol in ("easy", "medium", "hard"):
                tr = teacher["revisitop"][name][protocol] if teacher else None
                rows.append([f"{name} {protocol} mAP", _pct(r[protocol])] + ([_pct(tr), f"{tr - r[protocol]:+.2f}"] if teacher else []))
        lines = [f"From `{EVAL}`: {e['pool']} features, {e['n_train']:,} train / {e['n_val']:,} val images of {e['data']}.", ""]
        lines = _stale(path, run_dir / STUDENT, command) + lines + _table(header, rows)
        if not teacher:
            lines += ["", f"The teacher was not evaluated; `{command}` (without --no-teacher) adds it and the gap."]
        return Section("Evaluation", lines)
    if summary is not None and "eval" in summary:
        e = summary["eval"]
        rows = [[label, _pct(e[key])] for label, key in _EVAL_ROWS if key in e]
        lines = [f"From the closing evaluation in `{SUMMARY}` (student only, {e['n_train']:,} train / {e['n_val']:,} val images).", ""]
        lines += _table(["metric (%)", "student"], rows)
        lines += ["", f"`{command}` (or `leapkit report {q} --eval`) adds the teacher and the student/teacher gap."]
        return Section("Evaluation", lines)
    return Section("Evaluation", _missing("No evaluation yet.", command, f"leapkit report {q} --eval"), missing=command)


def _subdirs(folder: Path) -> list[Path]:
    """Real subfolders (the ``latest`` links are skipped so that nothing is listed twice)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()) if folder.is_dir() else []


def _export_section(run_dir: Path, q: str) -> Section:
    from leapkit.export import MANIFEST

    manifests = [p / MANIFEST for p in _subdirs(run_dir / "export") if (p / MANIFEST).is_file()]
    command = f"leapkit export {q} --target T"
    if not manifests:
        return Section("Export", _missing("No export yet.", command), missing=command)
    lines: list[str] = []
    for path in manifests:
        m = read_json(path)
        inp = m["input"]
        lines += [f"### {m['target']['name']}: {m['status']}", ""]
        lines += _stale(path, run_dir / STUDENT, f"leapkit export {q} --target {m['target']['name']} --overwrite")
        lines += [
            f"From `export/{path.parent.name}/{MANIFEST}`: input `{inp['name']}` {' x '.join(map(str, inp['shape']))} {inp['dtype']}, opset {m['opset']}, "
            f"{m['exporter']}; parity on {m['parity_data']['split']} images of {m['parity_data']['source']}.",
            "",
        ]
        rows = []
        for v in m["variants"]:
            p, a = v.get("parity"), v.get("accuracy")
            worst = max(s["max_abs"] for s in p["outputs"].values()) if p else None
            rows.append([
                f"`{v['file']}`", v["format"], v["precision"], f"{v['size_bytes'] / 1e6:.2f}",
                f"{p['cosine_min']:.6f} (>= {p['min_cosine_required']:g})" if p else "not run",
                f"{worst:.2g}" if worst is not None else "-",
                f"{a['top1']:.2f} ({a['pytorch_top1']:.2f}, drop {a['drop_top1']:+.2f})" if a else "not run",
                v["status"] + (f": {'; '.join(v['notes'])}" if v.get("notes") else ""),
            ])
        lines += _table(["file", "format", "precision", "size MB", "parity: worst cosine", "max abs diff", "probe top-1 % (PyTorch)", "status"], rows)
        if m.get("not_run"):
            lines += ["", "Not run: " + "; ".join(m["not_run"]) + "."]
        lines.append("")
    return Section("Export", lines)


def _bench_section(run_dir: Path, q: str) -> Section:
    from leapkit.bench import TABLE_HEADER, table_rows

    files = sorted((run_dir / "bench").glob("*.json")) if (run_dir / "bench").is_dir() else []
    command = f"leapkit bench {q} --target T"
    if not files:
        return Section("Latency", _missing("No latency measured yet.", command), missing=command)
    lines: list[str] = []
    for path in files:
        b = read_json(path)
        env = b["environment"]
        shape = "x".join(map(str, b["input_shape"])) if b.get("input_shape") else "?"
        lines += [f"### {b['target']}: {b['verdict']}", ""]
        lines += _stale(path, run_dir / STUDENT, f"leapkit bench {q} --target {b['target']}")
        lines += [f"From `bench/{path.name}`: input {shape}, measured on {env['cpu']} ({env['cpu_cores']} cores"
                  + (f", GPU {env['gpu']['name']}" if env.get("gpu") else "") + f"), leapkit {b['leapkit_version']}.", ""]
        lines += _table(TABLE_HEADER, table_rows(b))
        lines += ["", f"**Verdict: {b['verdict']}** ({b['verdict_reason']}); budget {b['budget_stat']} <= {b['budget_ms']:g} ms from {b['budget_source']}. "
                  "Roofline figures are estimates for the target, not measurements."]
        if b.get("warnings"):
            lines += ["", *[f"- warning: {w}" for w in b["warnings"]]]
        lines.append("")
    return Section("Latency", lines)


def _images(plots: dict[str, str], names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        if name in plots:
            out += [f"![{name.replace('_', ' ')}]({plots[name]})", ""]
    return out


# --- the report ---------------------------------------------------------------------------------


def _draw_plots(run_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Draw every plot that can be drawn; return file names by plot and one note per failure."""
    from leapkit.plots import PLOTS, plot_run

    try:
        paths = plot_run(run_dir, PLOTS)
    except MissingDependency as e:
        return {}, [f"Plots were not drawn: {e}."]
    return {name: path.relative_to(run_dir).as_posix() for name, path in paths.items()}, []


def write_report(run: str | Path | None = None, evaluate: bool = False, plots: bool = True, device: str = "cpu") -> Report:
    """Write ``RUN/report.md`` (and the PNG plots beside it) and return what it holds.

    Args:
        run: the run directory (default ``runs/latest``).
        evaluate: run the evaluation (student and teacher) first and write eval.json.
        plots: draw the curriculum, training-FLOPs and loss plots.
        device: where the evaluation runs.
    """
    run_dir = resolve_run(run, need=(CONFIG,))
    steps = read_metrics(run_dir)
    if not steps:
        raise RunError(f"{run_dir} records no training steps (no {METRICS}); train it first with `leapkit distill --out {run_dir}`")
    q = shlex.quote(str(run_dir))
    cfg = read_run_config(run_dir)
    if evaluate:
        from leapkit.evaluate import evaluate_run

        evaluate_run(run_dir, device=device)
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).is_file() else None
    drawn, notes = _draw_plots(run_dir) if plots else ({}, [])

    builders: list[Callable[[], Section]] = [
        lambda: _run_section(cfg, summary, q),
        lambda: _curriculum_section(run_dir, cfg, summary, steps, drawn),
        lambda: _flops_section(run_dir, drawn),
        lambda: _eval_section(run_dir, summary, q),
        lambda: _export_section(run_dir, q),
        lambda: _bench_section(run_dir, q),
    ]
    sections = [build() for build in builders]
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = [
        f"# leapkit report: {run_dir.name}",
        "",
        f"Run `{run_dir}`, report written by leapkit {__version__} on {now}. Each section names the file it is read from; "
        "a section without data names the command that produces it.",
        "",
    ]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    missing = [s for s in sections if s.missing]
    if missing:
        lines += ["Not yet produced: " + "; ".join(f"{s.title.lower()} (`{s.missing}`)" for s in missing) + ".", ""]
    for s in sections:
        lines += [f"## {s.title}", "", *s.lines, ""]
    path = run_dir / REPORT
    atomic_write_bytes(path, ("\n".join(lines).rstrip() + "\n").encode())
    log.info("wrote %s", path)
    return Report(path, sections, {name: run_dir / f for name, f in drawn.items()})
