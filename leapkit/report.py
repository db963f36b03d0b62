"""`RUN/report.md`: one Markdown page with everything the stages wrote about a run.

Sections, each read through the record of the stage that writes it: the run's settings
(config.yaml, :class:`~leapkit.run.RunSummary`), the curriculum (curriculum.json, metrics.jsonl,
with plots), training FLOPs against the fixed-target baseline (:class:`~leapkit.flops.FlopsReport`,
computed when missing or older than the metrics), evaluation (:class:`~leapkit.eval.record.EvalReport`,
or the closing evaluation in the summary), export parity and accuracy
(:class:`~leapkit.deploy.manifest.ExportManifest`), latency with the budget verdict
(:class:`~leapkit.latency.records.BenchReport`) and, when a latency was predicted (``--student auto``'s
``plan`` in config.yaml, or bench's predictions), the prediction against the target's measurement
(:mod:`leapkit.latency.forecast`). The tables are the ones the commands print, rendered
to Markdown. A section without data says which command produces it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leapkit import __version__
from leapkit.config import Config
from leapkit.errors import MissingDependency, RunError
from leapkit.flops import FlopsReport
from leapkit.paths import require_writable
from leapkit.run import (
    CONFIG,
    CURRICULUM,
    METRICS,
    READ_ONLY_FIX,
    STUDENT,
    SUMMARY,
    RunSummary,
    atomic_write_bytes,
    read_json,
    read_metrics,
    read_run_config,
    resolve_run,
)
from leapkit.tables import Table, fmt

log = logging.getLogger(__name__)

REPORT = "report.md"
ARROW = " \u2192 "


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

    def table(self) -> Table:
        """Each section and plot with whether it is included, for the terminal."""
        table = Table.of("section", "status", title=f"report: {self.path}")
        for s in self.sections:
            if s.missing:
                table.add(s.title, f"missing: run `{s.missing}`", style="yellow")
            else:
                table.add(s.title, "included", style="green")
        for name, path in self.plots.items():
            table.add(f"plot {name}", path.name)
        return table


# --- formatting ---------------------------------------------------------------------------------


def _saved(pct: float) -> str:
    """A saving in percent as words; a negative saving is a cost."""
    return f"{pct:.1f}% saved" if pct >= 0 else f"{-pct:.1f}% more"


def _missing(what: str, *commands: str) -> list[str]:
    return [f"_{what}_ Produce it with " + " or ".join(f"`{c}`" for c in commands) + "."]


def _stale(path: Path, reference: Path, command: str) -> list[str]:
    """A warning line when ``path`` was written before ``reference`` (the student it describes changed)."""
    if reference.exists() and path.stat().st_mtime < reference.stat().st_mtime:
        return [f"> Note: `{path.name}` is older than `{reference.name}`; it may describe an earlier student. "
                f"Refresh it with `{command}`.", ""]
    return []


def _images(plots: dict[str, str], names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        if name in plots:
            out += [f"![{name.replace('_', ' ')}]({plots[name]})", ""]
    return out


# --- sections -----------------------------------------------------------------------------------


def _settings_table(cfg: Config) -> Table:
    m, d, c, o, t = cfg.model, cfg.data, cfg.curriculum, cfg.optim, cfg.train
    if d.source == "digits":
        data = "embedded digits (scikit-learn): 1,437 train / 360 held-out"
    else:
        data = f"folder `{d.path}`"
    gate = {
        "leap": f"LEAP: {c.metric} threshold {c.threshold:g}, EMA alpha {c.ema_alpha:g}, at most "
                f"{c.max_epochs_per_block:g} epochs per block",
        "plateau": f"plateau: level up when the {c.metric}'s mean over the last {c.plateau_window} steps gains less "
                   f"than {c.plateau_tolerance:g} (relative) over the {c.plateau_window} before, EMA alpha "
                   f"{c.ema_alpha:g}, at most {c.max_epochs_per_block:g} epochs per block",
        "progressive": "progressive: an equal share of the epochs per block, no gate",
    }
    if c.mode in gate:
        curriculum = (
            f"{gate[c.mode]}, start-block scan {'on' if c.calibrate else 'off'}"
            + (f", snap to last at block {c.snap_to_last_at}" if c.snap_to_last_at else "")
        )
    else:
        curriculum = "fixed-target baseline: the teacher's last block from the first step, no early exit"
    accumulation = f" x {o.accum_steps} accumulation" if o.accum_steps > 1 else ""
    table = Table.of("setting", "value")
    table.add("recipe", cfg.recipe)
    weights = f" (weights `{m.teacher_weights}`)" if m.teacher_weights else " (hub weights)"
    table.add("teacher", f"`{m.teacher}`{weights}")
    table.add("student", f"`{m.student}`")
    table.add("resolution", f"{m.img_size} px")
    table.add("data", data + ("" if d.augment else ", no augmentation"))
    table.add("schedule", f"{t.epochs} epochs, batch {t.batch_size}{accumulation}")
    restart = ", cosine restarted at each level-up" if o.lr_restart else ""
    table.add("optimizer", f"{o.name}, lr {o.lr:g} (min {o.min_lr:g}), weight decay {o.weight_decay:g}, warmup "
                           f"{o.warmup_epochs:g} epochs{restart}")
    table.add("curriculum", curriculum)
    table.add("loss", "MSE to the target block's patch tokens"
              + (f" + {c.cls_weight:g} x CLS MSE" if c.cls_weight > 0 else ""))
    table.add("seed, device", f"{t.seed}, {t.device}")
    return table


def _run_section(cfg: Config, summary: RunSummary | None, q: str) -> Section:
    lines = ["From `config.yaml`.", "", _settings_table(cfg).to_markdown(), ""]
    if summary is None:
        command = f"leapkit distill --resume --out {q}"
        lines += _missing("The run has no summary.json: it did not finish.", command)
        return Section("Run", lines, missing=command)
    s = summary
    processes = f", {s.world_size} processes" if s.world_size > 1 else ""
    wall = f"; {s.wall_seconds:.1f} s wall time with setup and evaluation." if s.wall_seconds is not None else "."
    lines.append(
        f"Finished: {s.steps:,} steps over {s.epochs} epochs, {s.images_seen:,} images in {s.train_seconds:.1f} s of "
        f"training ({s.images_per_s:,.0f} images/s{processes}){wall}"
    )
    return Section("Run", lines)


def _level_ups_table(level_ups: list[dict[str, Any]], metric: str) -> Table:
    table = Table.of("step", "epoch", "block", "reason", f"EMA {metric}")
    for e in level_ups:
        table.add(e["step"], f"{e['epoch']:.2f}", f"{e['from_block']}{ARROW}{e['to_block']}", e.get("reason", "-"),
                  f"{e['ema']:.3f}")
    return table


def _curriculum_section(
    run_dir: Path, cfg: Config, summary: RunSummary | None, steps: list[dict[str, Any]], plots: dict[str, str]
) -> Section:
    path = run_dir / CURRICULUM
    cur = read_json(path) if path.is_file() else None
    metric = cfg.curriculum.metric
    lines: list[str] = []
    if cur is None:
        lines += ["No `curriculum.json` yet (it is written at the end of each epoch)."]
    else:
        visited = ARROW.join(map(str, cur["blocks_visited"]))
        lines.append(f"- Blocks visited: {visited} (of {cur['num_blocks']}); "
                     f"the run ended on block {cur['final_block']}.")
        cal = cur.get("calibration") or {}  # curriculum.json's key for the start-block scan
        if cal.get("scores"):
            scores = ", ".join(f"{i}: {s:.3f}" for i, s in enumerate(cal["scores"], 1))
            lines.append(f"- The start-block scan on {cal['images']} images started the run at block "
                         f"{cal['start_block']} "
                         f"({metric} per block {scores}).")
        elif cur["mode"] != "baseline":
            lines.append("- The start-block scan was off: the run started at block 1.")
        if summary is not None:
            lines.append(
                f"- Teacher-block evaluations (images x blocks run): {summary.teacher_block_images:,} against "
                f"{summary.teacher_block_images_baseline:,} for the fixed-target baseline "
                f"({_saved(summary.teacher_blocks_saved_pct)})."
            )
        lines.append("")
        if cur["level_ups"]:
            lines.append(_level_ups_table(cur["level_ups"], metric).to_markdown())
        else:
            lines.append("No level-ups.")
    last = steps[-1]
    score = last.get(metric, last.get("cka"))
    lines += ["", f"Last step ({last['step']}): loss {last['loss']:.4g}, {metric} {score:.3f}, "
              f"target block {last['target_block']}.", ""]
    lines += _images(plots, ("curriculum", "loss"))
    return Section("Curriculum", lines)


def _flops(run_dir: Path) -> FlopsReport:
    """The run's flops.json, computed again when it is missing, older than the metrics or unreadable."""
    from leapkit.flops import run_flops

    path = run_dir / FlopsReport.FILE
    if path.is_file() and path.stat().st_mtime >= (run_dir / METRICS).stat().st_mtime:
        try:
            return FlopsReport.load(path)
        except RunError as e:
            log.info("%s; computing it again", e)
    log.info("computing %s", path)
    return run_flops(run_dir)


def _flops_section(run_dir: Path, plots: dict[str, str]) -> Section:
    from leapkit.flops import inference_table, train_flops_table

    f = _flops(run_dir)
    run, base = f.train_flops_breakdown.run, f.train_flops_breakdown.baseline
    lines = [f"From `{FlopsReport.FILE}` ({f.steps:,} steps, {f.images:,} images at {f.img_size} px).", "",
             train_flops_table(f).to_markdown(), ""]
    if f.train_flops_saving_pct is None:
        lines.append("This run is the fixed-target baseline, so there is no saving to report.")
    else:
        lines.append(f"**Training FLOPs against the fixed-target baseline: {_saved(f.train_flops_saving_pct)}.**")
        share = base.teacher / f.train_flops_baseline
        skipped = 1 - run.teacher / base.teacher
        overhead = (run.signal + run.calibration) / f.train_flops_baseline
        lines.append(
            f"The teacher's forward is {100 * share:.1f}% of the baseline's cost, so skipping {100 * skipped:.1f}% of "
            f"the teacher's FLOPs saves {100 * share * skipped:.1f}% of the total, less {100 * overhead:.1f}% for the "
            f"per-step {f.metric} and the start-block scan."
        )
    lines += ["", inference_table(f).to_markdown(), ""]
    lines += _images(plots, ("train_flops",))
    return Section("Training FLOPs", lines)


def _eval_section(run_dir: Path, summary: RunSummary | None, q: str) -> Section:
    from leapkit.eval.record import EvalReport

    command = f"leapkit eval {q}"
    path = run_dir / EvalReport.FILE
    e = EvalReport.load_optional(path)
    if e is not None:
        source = f" of {e.data}" if e.data else ""
        lines = [f"From `{EvalReport.FILE}`: {e.pool} features, {e.n_train:,} train / {e.n_val:,} val "
                 f"images{source}.", ""]
        lines = _stale(path, run_dir / STUDENT, command) + lines + [e.table().to_markdown()]
        if e.teacher is None:
            lines += ["", f"The teacher was not evaluated; `{command}` (without --no-teacher) adds it and the gap."]
        return Section("Evaluation", lines)
    if summary is not None and summary.eval is not None:
        e = summary.eval
        lines = [f"From the closing evaluation in `{SUMMARY}` (student only, {e.n_train:,} train / {e.n_val:,} val "
                 "images).", "", e.table().to_markdown(),
                 "", f"`{command}` (or `leapkit report {q} --eval`) adds the teacher and the student/teacher gap."]
        return Section("Evaluation", lines)
    return Section("Evaluation", _missing("No evaluation yet.", command, f"leapkit report {q} --eval"), missing=command)


def _subdirs(folder: Path) -> list[Path]:
    """Real subfolders (the ``latest`` links are skipped so that nothing is listed twice)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()) if folder.is_dir() else []


def _export_section(run_dir: Path, q: str) -> Section:
    from leapkit.deploy.manifest import MANIFEST, ExportManifest
    from leapkit.deploy.summary import int8_blocks_table, int8_steps_table, variants_table

    folders = [p for p in _subdirs(run_dir / "export") if (p / MANIFEST).is_file()]
    command = f"leapkit export {q} --target T"
    if not folders:
        return Section("Export", _missing("No export yet.", command), missing=command)
    lines: list[str] = []
    for folder in folders:
        m = ExportManifest.load(folder)
        inp, target = m.input, m.target.name
        lines += [f"### {target}: {m.status}", ""]
        lines += _stale(folder / MANIFEST, run_dir / STUDENT, f"leapkit export {q} --target {target} --overwrite")
        parity = m.parity_data
        checked = f"; parity on {parity['split']} images of {parity['source']}" if parity else ""
        lines += [
            f"From `export/{folder.name}/{MANIFEST}`: input `{inp.name}` {' x '.join(map(str, inp.shape))} "
            f"{inp.dtype}, opset {m.opset}, {m.exporter}{checked}.",
            "",
            variants_table(m).to_markdown(),
        ]
        required = {v.precision: v.parity["min_cosine_required"] for v in m.variants if v.parity}
        if required:
            lines += ["", "Parity passes at a worst cosine of at least "
                      + ", ".join(f"{thr:g} for {prec}" for prec, thr in required.items()) + "."]
        for table in (int8_blocks_table(m), int8_steps_table(m)):
            if table is not None:
                lines += ["", f"{table.title}:", "", table.to_markdown()]
        if m.int8 is not None and m.int8.moved:
            lines += ["", f"INT8 fallback: {', '.join(m.int8.moved)} moved out of INT8 (they run in "
                      f"{m.int8.high_precision})."]
        failed = [f"`{v.file}`: {v.why_failed()}" for v in m.variants if v.failed]
        if failed:
            lines += ["", "Failed: " + "; ".join(failed) + "."]
        if m.not_run:
            lines += ["", "Not run: " + "; ".join(m.not_run) + "."]
        lines.append("")
    return Section("Export", lines)


def _bench_section(run_dir: Path, q: str) -> Section:
    from leapkit.latency.records import BenchReport
    from leapkit.latency.render import energy_sentence, latency_table, latency_title, power_table

    files = sorted((run_dir / "bench").glob("*.json")) if (run_dir / "bench").is_dir() else []
    command = f"leapkit bench {q} --target T"
    if not files:
        return Section("Latency", _missing("No latency measured yet.", command), missing=command)
    lines: list[str] = []
    for path in files:
        b = BenchReport.load(path)
        shape = "x".join(map(str, b.input_shape)) if b.input_shape else "?"
        lines += [f"### {b.target}: {b.verdict}", ""]
        lines += _stale(path, run_dir / STUDENT, f"leapkit bench {q} --target {b.target}")
        lines += [f"From `bench/{path.name}`: input {shape}; evidence **{b.evidence}**: {latency_title(b)}; "
                  f"leapkit {b.leapkit_version}.", "", latency_table(b).to_markdown()]
        lines += ["", f"**Verdict: {b.verdict}** ({b.verdict_reason}); budget {b.budget_stat} <= {b.budget_ms:g} ms "
                  f"from {b.budget_source}. The lower bound column is a bound for the target, not a measurement."]
        if b.choice:
            lines += ["", f"Judged: {b.choice}."]
        power, energy = power_table(b), energy_sentence(b)
        lines += ["", energy] if energy else []
        lines += ["", f"{power.title}:", "", power.to_markdown()] if power else []
        if b.warnings:
            lines += ["", *[f"- warning: {w}" for w in b.warnings]]
        lines.append("")
    return Section("Latency", lines)


def _prediction_section(run_dir: Path, cfg: Config, q: str) -> Section | None:
    """The latency predicted before training (``--student auto``) and at bench time, against the target's p50;
    None when nothing was predicted."""
    from leapkit.latency.forecast import comparison_table, forecasts
    from leapkit.latency.records import BenchReport

    files = sorted((run_dir / "bench").glob("*.json")) if (run_dir / "bench").is_dir() else []
    plan = cfg.plan if cfg.plan.target else None
    rows = forecasts(plan, cfg.model.student, [BenchReport.load(p) for p in files])
    if not rows:
        return None
    lines = ["The target's latency model against the p50 measured on the target (bench evidence measured or "
             "imported); _in range_ says whether the measurement fell within the forecast's range.", ""]
    if plan is not None:
        lines += [f"`leapkit distill --student auto` chose `{cfg.model.student}` for {plan.target} at {plan.precision} "
                  f"within {fmt(plan.budget_ms, 'g')} ms, the largest of {plan.candidates} candidates ({plan.source}).",
                  ""]
    lines.append(comparison_table(rows).to_markdown())
    unmeasured = sorted({f.target for f in rows if f.measured_ms is None and f.landed().startswith("not ")})
    if unmeasured:
        lines += ["", f"Not measured on {', '.join(unmeasured)} yet: run `leapkit bench {q} --target T` on the "
                  "device (from here: `--host HOST` for a Jetson, or `--from-trtexec` with its trtexec output)."]
    return Section("Prediction against measurement", lines)


# --- the report ---------------------------------------------------------------------------------


def _draw_plots(run_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Draw every plot that can be drawn; return file names by plot and one note per failure."""
    from leapkit.plots import PLOTS, plot_run

    try:
        paths = plot_run(run_dir, PLOTS)
    except MissingDependency as e:
        return {}, [f"Plots were not drawn: {e}."]
    return {name: path.relative_to(run_dir).as_posix() for name, path in paths.items()}, []


def write_report(
    run: str | Path | None = None, evaluate: bool = False, plots: bool = True, device: str = "cpu"
) -> Report:
    """Write ``RUN/report.md`` (and the PNG plots beside it) and return what it holds.

    Args:
        run: the run directory (default ``runs/latest``).
        evaluate: run the evaluation (student and teacher) first and write eval.json.
        plots: draw the curriculum, training-FLOPs and loss plots.
        device: where the evaluation runs.

    Raises:
        RunError: the run is missing or recorded no training steps.
    """
    run_dir = resolve_run(run, need=(CONFIG,))
    require_writable(run_dir, "report.md and its plots", READ_ONLY_FIX)
    steps = read_metrics(run_dir)
    if not steps:
        raise RunError(f"{run_dir} records no training steps (no {METRICS}); train it first with "
                       f"`leapkit distill --out {run_dir}`")
    q = shlex.quote(str(run_dir))
    cfg = read_run_config(run_dir)
    if evaluate:
        from leapkit.eval.stage import evaluate_run

        evaluate_run(run_dir, device=device)
    summary = RunSummary.load_optional(run_dir / SUMMARY)
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
    predicted = _prediction_section(run_dir, cfg, q)
    sections += [predicted] if predicted is not None else []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = [
        f"# leapkit report: {run_dir.name}",
        "",
        f"Run `{run_dir}`, report written by leapkit {__version__} on {now}. Each section names the file it is read "
        "from; a section without data names the command that produces it.",
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
