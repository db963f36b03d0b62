"""`leapkit plan`: which student fits the target's budget, and what distilling it would cost, before training.

For each candidate (:mod:`leapkit.planning.candidates`) the plan gives the predicted latency and its
range (:mod:`leapkit.planning.latency_model`), parameters, inference FLOPs, memory, the budget verdict
and, given a teacher, LEAP's training cost against the fixed-target baseline
(:mod:`leapkit.planning.train_cost`). Everything is counted from shapes on the meta device: offline,
no weights, seconds.

The verdict compares the range with the budget: ``fits`` when even its high end is within the budget,
``does not fit`` when even its low end is over it, else ``too close to call``. The prediction is a
median latency; the profile's budget statistic (p99 by default) sits a little above it on a quiet
device, which the range is meant to cover.

A person reads the plan from :func:`answer` (one line: the largest student whose whole range fits) and the
accuracy-capacity :func:`frontier` (for each latency, the largest student): :func:`plan_table` shows those
rows unless asked for every one; the JSON keeps every row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leapkit.config import Config
from leapkit.errors import ConfigError
from leapkit.planning import candidates as C
from leapkit.planning.latency_model import LatencyModel, Prediction, check_runtime
from leapkit.planning.shape import VitShape, of_timm
from leapkit.planning.target_model import model_for
from leapkit.planning.train_cost import DEFAULT_GPU, DEFAULT_UTILISATION, TrainCost, dataset_images, train_cost
from leapkit.profiles import TargetProfile
from leapkit.records import Record
from leapkit.tables import Table, si
from leapkit.types import Precision, TargetRuntime

log = logging.getLogger(__name__)

Fit = Literal["fits", "does not fit", "too close to call"]


@dataclass
class PlanRequest:
    """What to plan.

    Args:
        profile: the target.
        budget_ms: the latency budget (default: the profile's).
        students: timm names to weigh (default: :data:`leapkit.planning.candidates.STUDENTS`, those with fewer
            parameters than the recipe's teacher when there is one).
        img_sizes: input sizes (default: per patch, :func:`leapkit.planning.candidates.sizes`).
        precisions: default: every precision the target runs that the runtime's latency model covers.
        recipe: the distillation config (teacher, schedule) for the training cost; None: no training cost.
        train_images: training images per epoch (default: the recipe's dataset).
        gpu: the GPU the training hours are for.
        utilisation: the MFU assumed for them.
        fit_path: a latency-model fit, the file of ``leapkit calibrate`` (``--calibration``; default: the
            target's own for the runtime, else its published efficiencies).
        runtime: the runtime whose latency model plans, one of the target's (default: the profile's).
    """

    profile: TargetProfile
    budget_ms: float | None = None
    students: tuple[str, ...] = C.STUDENTS
    img_sizes: tuple[int, ...] = ()
    precisions: tuple[Precision, ...] = ()
    recipe: Config | None = None
    train_images: int | None = None
    gpu: str = DEFAULT_GPU
    utilisation: float = DEFAULT_UTILISATION
    fit_path: Path | None = None
    runtime: TargetRuntime | None = None

    @property
    def budget(self) -> float:
        return self.budget_ms if self.budget_ms is not None else self.profile.latency_budget_ms


@dataclass
class PlanRow(Record):
    """One candidate: the ``--format json`` object.

    Args:
        student: the timm name.
        img_size: the input size.
        precision: the precision.
        predicted_ms: the predicted median latency.
        predicted_range_ms: [low, high].
        params: parameters.
        gflops: inference GFLOPs per image (2 x MACs, :mod:`leapkit.macs`).
        memory_mb: weights at the precision plus the peak activations, MB.
        fits: true, false, or null when too close to call.
        verdict: ``fits``, ``does not fit`` or ``too close to call``.
        train_cost: LEAP vs baseline training cost; null without a teacher or when the teacher cannot
            see this input size.
        parts_ms: the prediction by part of the model.
        calibrated: the latency model was fitted on the target (``leapkit calibrate``).
        target: the target.
        budget_ms: the budget judged against.
        runtime: the runtime the prediction is for.
        source: where the prediction's efficiencies come from (``unvalidated`` when no measurement checks them).
    """

    student: str
    img_size: int
    precision: Precision
    predicted_ms: float
    predicted_range_ms: list[float]
    params: int
    gflops: float
    memory_mb: float
    fits: bool | None
    verdict: Fit
    train_cost: TrainCost | None
    parts_ms: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False
    target: str = ""
    budget_ms: float = 0.0
    runtime: str = ""
    source: str = ""


@dataclass
class PlanReport(Record):
    """The plan: every candidate row, the budget, the latency model's runtime and source, and the teacher.

    ``sources`` holds, per precision, a source that differs from the model's (an unvalidated precision).
    """

    target: str
    budget_ms: float
    budget_stat: str
    calibrated: bool
    source: str
    teacher: str | None
    recipe: str | None
    rows: list[PlanRow]
    notes: list[str] = field(default_factory=list)
    runtime: str = ""
    sources: dict[str, str] = field(default_factory=dict)


def verdict(prediction: Prediction, budget_ms: float) -> Fit:
    """``fits`` when the whole range is within the budget, ``does not fit`` when none of it is."""
    if prediction.high_ms <= budget_ms:
        return "fits"
    if prediction.low_ms > budget_ms:
        return "does not fit"
    return "too close to call"


def row(shape: VitShape, student: str, precision: Precision, model: LatencyModel, profile: TargetProfile,
        budget_ms: float, cost: TrainCost | None) -> PlanRow:
    """The plan row of one candidate."""
    p = model.predict(shape, precision, profile.batch)
    v = verdict(p, budget_ms)
    return PlanRow(
        student=student, img_size=shape.img_size, precision=precision, predicted_ms=round(p.ms, 4),
        predicted_range_ms=[round(p.low_ms, 4), round(p.high_ms, 4)], params=shape.params,
        gflops=round(shape.flops / 1e9, 4), memory_mb=round(shape.memory_bytes(precision, profile.batch) / 1e6, 2),
        fits={"fits": True, "does not fit": False}.get(v), verdict=v, train_cost=cost,
        parts_ms={k: round(ms, 4) for k, ms in p.parts_ms.items()}, calibrated=p.calibrated, target=profile.name,
        budget_ms=budget_ms, runtime=model.runtime or profile.runtime, source=p.source,
    )


def plan(request: PlanRequest) -> PlanReport:
    """Every candidate of ``request`` with its prediction, verdict and training cost.

    Raises:
        ConfigError: a runtime the target does not deploy with, no latency model for it, a precision the
            target does not run, an unknown GPU, or a training set of unknown size.
        ModelError: a student or teacher timm does not know, or that is not a plain ViT.
    """
    profile = request.profile
    runtime = check_runtime(profile, request.runtime)
    asked = C.check_precisions(profile, request.precisions, runtime)
    model = model_for(profile, request.fit_path, runtime)
    if request.budget_ms is not None and not (math.isfinite(request.budget_ms) and request.budget_ms > 0):
        raise ConfigError(f"--budget-ms must be a finite number of ms > 0, got {request.budget_ms}")
    cfg = request.recipe
    teacher_name = cfg.model.teacher if cfg is not None else None
    teacher = of_timm(teacher_name, cfg.model.img_size, role="teacher") if cfg is not None else None
    teacher_patch = teacher.patch_size if teacher is not None else None
    images = dataset_images(cfg, request.train_images) if cfg is not None else 0
    wanted = tuple(p for p in asked if p in model.efficiencies)
    notes = [f"no {p} efficiencies in the latency model ({model.source}); {p} left out"
             for p in asked if p not in model.efficiencies]
    if not wanted:
        again = "" if runtime == profile.runtime else f" --runtime {runtime}"
        raise ConfigError(f"the {runtime} latency model of {profile.name} covers none of {', '.join(asked)}; it has "
                          f"{', '.join(model.precisions)}; calibrate them with leapkit calibrate --target "
                          f"{profile.name}{again}")
    students = request.students
    if teacher is not None and students == C.STUDENTS:  # a student is smaller than its teacher: drop the others
        students = tuple(s for s in students if of_timm(s, C.native_size(s)).params < teacher.params)
        dropped = [s for s in request.students if s not in students]
        if dropped:
            notes.append(f"left out {len(dropped)} default candidate(s) no smaller than the teacher {teacher_name}: "
                         f"{', '.join(dropped)}")
    found = C.candidates(profile, students, request.img_sizes, wanted,
                         cfg.model.img_size if cfg is not None else 224, teacher_patch, runtime)
    rows: list[PlanRow] = []
    costs: dict[tuple[str, int], TrainCost | None] = {}
    for cand in found:
        key = (cand.student, cand.img_size)
        if key not in costs:
            costs[key] = None
            if cfg is not None and teacher_patch and cand.img_size % teacher_patch == 0:
                teacher_at = of_timm(teacher_name, cand.img_size, role="teacher")
                costs[key] = train_cost(teacher_at, cand.shape, cfg, images, request.gpu, request.utilisation)
        rows.append(row(cand.shape, cand.student, cand.precision, model, profile, request.budget, costs[key]))
    if cfg is not None and any(r.train_cost is None for r in rows):
        notes.append(f"no training cost where the input size is not a multiple of the teacher's patch "
                     f"({teacher_patch}): the teacher sees the student's images")
    rows.sort(key=lambda r: (r.predicted_ms, -r.gflops))
    return PlanReport(
        target=profile.name, budget_ms=request.budget, budget_stat=profile.budget_stat, calibrated=model.calibrated,
        source=model.source, teacher=teacher_name, recipe=cfg.recipe if cfg is not None else None, rows=rows,
        notes=notes, runtime=runtime,
        sources={p: model.source_of(p) for p in wanted if model.source_of(p) != model.source},
    )


def largest_fit(rows: Sequence[PlanRow]) -> PlanRow | None:
    """The candidate with the most inference FLOPs among those that fit (ties: fewer ms), or None."""
    fitting = [r for r in rows if r.verdict == "fits"]
    return max(fitting, key=lambda r: (r.gflops, -r.predicted_ms), default=None)


def frontier(rows: Sequence[PlanRow]) -> list[PlanRow]:
    """The accuracy-capacity frontier, fastest first: for each latency, the candidate with the most inference GFLOPs.

    Latency is the high end of the range, which the verdict judges, so that the largest candidate that fits a
    budget (:func:`largest_fit`) is on the frontier for every budget; a row stays when no other is both as fast
    at its high end and bigger.
    """
    out: list[PlanRow] = []
    for r in sorted(rows, key=lambda r: (r.predicted_range_ms[1], -r.gflops, r.predicted_ms)):
        if not out or r.gflops > out[-1].gflops:
            out.append(r)
    return out


def _name(r: PlanRow) -> str:
    low, high = r.predicted_range_ms
    return f"{r.student} {r.img_size}px {r.precision}, {r.predicted_ms:.3g} ms ({low:.3g}-{high:.3g})"


def answer(report: PlanReport) -> str:
    """The plan's first line: the largest student whose whole range fits the budget, or the fastest when none does.

    When the answer's precision is unvalidated (no published measurement checks it), the line says so and names
    the largest that fits at a precision that is not.
    """
    budget = f"{report.budget_ms:g} ms"
    best = largest_fit(report.rows)
    if best is None:
        if not report.rows:
            return f"no candidate to plan for {budget}"
        fastest = min(report.rows, key=lambda r: r.predicted_range_ms[1])
        return (f"no student's whole range fits {budget}; the fastest is {_name(fastest)}: raise --budget-ms, lower "
                f"--img-size or name a --student")
    line = f"largest student whose whole range fits {budget}: {_name(best)}, {best.gflops:.3g} GFLOPs"
    if "unvalidated" in best.source:
        checked = largest_fit([r for r in report.rows if "unvalidated" not in r.source])
        line += f" ({best.precision} unvalidated on {report.target}"
        line += f"; largest at a checked precision: {_name(checked)})" if checked is not None else ")"
    return line


def shown_rows(report: PlanReport, every: bool = False) -> list[PlanRow]:
    """The rows a person reads, by predicted latency: the :func:`frontier`, or every row."""
    if every:
        return list(report.rows)
    keep = {id(r) for r in frontier(report.rows)}
    return [r for r in report.rows if id(r) in keep]


_VERDICT_STYLE = {"fits": "green", "does not fit": "red", "too close to call": "yellow"}


def plan_table(report: PlanReport, every: bool = False) -> Table:
    """One row per candidate on the frontier (``every``: per candidate): prediction and range, size, cost, verdict
    and training cost."""
    rows = shown_rows(report, every)
    caption = (f"Latency model of {report.runtime}, {report.source}"
               + "".join(f"; {p}: {s}" for p, s in report.sources.items())
               + f". Prediction: median ms at batch 1 with its range; verdict: the range against the "
               f"{report.budget_ms:g} ms budget.")
    if not every and len(rows) < len(report.rows):
        caption += (f" {len(rows)} of {len(report.rows)} candidates: the accuracy-capacity frontier (for each "
                    f"latency, the largest student); --all shows every one.")
    if any(r.train_cost for r in report.rows):
        cost = next(r.train_cost for r in report.rows if r.train_cost)
        caption += (f" Training: {cost.epochs} epochs of {cost.images_per_epoch:,} images from {report.teacher}, "
                    f"GPU-hours on one {cost.gpu} at {100 * cost.utilisation:.0f}% MFU; LEAP under the "
                    f"{cost.schedule}.")
    table = Table.of("student", "px", "precision", "predicted ms (range)", "params", "GFLOPs", "memory", "verdict",
                     "GPU-h LEAP / baseline", "LEAP saving",
                     title=f"leapkit plan: {report.target}, budget {report.budget_ms:g} ms", caption=caption,
                     right=("px", "predicted ms (range)", "params", "GFLOPs", "memory", "GPU-h LEAP / baseline",
                            "LEAP saving"))
    for r in rows:
        c = r.train_cost
        low, high = r.predicted_range_ms
        table.add(r.student, str(r.img_size), r.precision, f"{r.predicted_ms:.3g} ({low:.3g}-{high:.3g})",
                  si(r.params), f"{r.gflops:.3g}", f"{r.memory_mb:.0f} MB", r.verdict,
                  f"{c.leap_gpu_hours:.3g} / {c.baseline_gpu_hours:.3g}" if c else "-",
                  f"<= {c.saving_pct:.0f} %" if c else "-", style=_VERDICT_STYLE[r.verdict])
    return table


def choose_student(request: PlanRequest) -> tuple[PlanRow, PlanReport]:
    """The largest candidate (by inference FLOPs) whose whole predicted range fits the budget.

    The range is the margin: a candidate too close to call is never chosen.

    Raises:
        ConfigError: no candidate fits; the message names the fastest one and what to change.
    """
    report = plan(request)
    best = largest_fit(report.rows)
    if best is None:
        fastest = min(report.rows, key=lambda r: r.predicted_ms)
        sizes = ", ".join(sorted({str(r.img_size) for r in report.rows}))
        raise ConfigError(
            f"no candidate student fits {report.budget_ms:g} ms on {report.target} at {sizes} px: the fastest, "
            f"{fastest.student} {fastest.precision}, is predicted at {fastest.predicted_ms:.3g} ms "
            f"({fastest.predicted_range_ms[0]:.3g}-{fastest.predicted_range_ms[1]:.3g}; {report.source}); raise "
            f"--budget-ms, lower --img-size, or name a --student"
        )
    return best, report
