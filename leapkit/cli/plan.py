"""`leapkit plan`: forecast latency and training cost of candidate students before training.

    leapkit plan --teacher NAME --target T [--budget-ms X] [--recipe R]   the answer, the frontier, training cost
    leapkit plan ... --all                                                every candidate, not only the frontier
    leapkit plan --student NAME --img-size N --target T                   one given model
    leapkit plan ... --runtime openvino                                   another of the target's runtimes

Offline and in seconds: models are counted on the meta device and predicted with the target's
latency model for the runtime (its fit from leapkit calibrate, else for the profile's runtime the published
efficiencies, which the output says). The table opens with one line, the largest student whose
whole range fits the budget, and shows the accuracy-capacity frontier (``--all``: every candidate);
``--format json`` gives every candidate.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from leapkit.cli.options import FRACTION, BudgetOpt, PrecisionsOpt, TargetOpt, split_choices
from leapkit.types import PRECISIONS

log = logging.getLogger(__name__)

OutputFormat = Literal["table", "json"]
DEFAULT_RECIPE = "imagenet100-vits14-from-vitg14"


def plan_command(
    target: TargetOpt,
    teacher: Annotated[
        str | None, typer.Option(help="timm teacher name: adds LEAP's training cost against the baseline.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help=f"Recipe of the training cost's schedule (default with --teacher: {DEFAULT_RECIPE})."),
    ] = None,
    budget_ms: BudgetOpt = None,
    student: Annotated[
        list[str] | None,
        typer.Option("--student", help="timm name(s) to forecast instead of the default candidates; repeatable.",
                     show_default=False),
    ] = None,
    img_size: Annotated[
        list[int] | None,
        typer.Option("--img-size", min=8, help="Input size(s), multiples of the patch; repeatable.",
                     show_default=False),
    ] = None,
    precision: PrecisionsOpt = None,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", "-r", help="One of the target's runtimes to plan for, e.g. openvino after leapkit "
                     "calibrate --runtime openvino (default: its profile's runtime).", show_default=False),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="A table, or JSON (one object per candidate).")
    ] = "table",
    every: Annotated[
        bool, typer.Option("--all", help="Table every candidate, not only the frontier (for each latency, the "
                                         "largest student).")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option(help="The frontier PNG (default plan-<target>.png; for --format json when given).",
                                  show_default=False)
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="A latency-model fit (default: the target's, from leapkit calibrate).",
                                  show_default=False)
    ] = None,
    gpu: Annotated[str, typer.Option(help="GPU the training hours are for.")] = "A100",
    utilisation: Annotated[
        float, typer.Option(parser=FRACTION, metavar="FRACTION",
                            help="Model FLOP utilisation assumed for the training hours, in (0, 1].")
    ] = 0.4,
    train_images: Annotated[
        int | None, typer.Option(help="Training images per epoch (default: the recipe's dataset).", show_default=False)
    ] = None,
) -> None:
    """Forecast latency (with a range), size and training cost of candidate students on a target."""
    from rich.console import Console

    from leapkit.config import resolve_config
    from leapkit.planning import candidates
    from leapkit.planning.frontier import draw
    from leapkit.planning.latency_model import check_runtime
    from leapkit.planning.plan import PlanRequest, answer, plan, plan_table
    from leapkit.profiles import load_target

    profile = load_target(target)
    precisions = split_choices(precision, PRECISIONS, "--precision") or []
    overrides = {"model": {"teacher": teacher}} if teacher else None
    cfg = resolve_config(recipe or DEFAULT_RECIPE, overrides) if (teacher or recipe) else None
    request = PlanRequest(
        profile=profile, budget_ms=budget_ms, students=tuple(student or candidates.STUDENTS),
        img_sizes=tuple(img_size or ()), precisions=tuple(precisions), recipe=cfg, train_images=train_images,
        gpu=gpu, utilisation=utilisation, fit_path=calibration, runtime=check_runtime(profile, runtime),
    )
    report = plan(request)
    if output == "json":
        # strict JSON: a NaN or Infinity would be refused by most parsers, so it is a bug here (exit 3), not output
        typer.echo(json.dumps([r.to_dict() for r in report.rows], indent=2, allow_nan=False))
        if plot is not None:
            draw(report, plot)
        return
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes are wider than 80
    console.print(answer(report), highlight=False, markup=False, soft_wrap=True)  # one line, however long
    console.print(plan_table(report, every).to_rich())
    for note in report.notes:
        log.info(note)
    path = draw(report, plot or Path(f"plan-{profile.name}.png"))
    console.print(f"frontier: {path}")
