"""`leapkit distill`: LEAP distillation (the demo recipe when called with no arguments).

The command resolves the config (recipe <- ``--set`` items <- flags), trains through
:func:`leapkit.train.distill`, then adds the closing evidence to summary.json: the training FLOPs
(flops.json), the achieved rate, MFU on a known GPU and the closing evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from leapkit.cli.options import BudgetOpt, ModeOpt
from leapkit.config import LogBackend
from leapkit.types import Amp, Metric

if TYPE_CHECKING:
    from leapkit.config import Config
    from leapkit.run import RunSummary

log = logging.getLogger(__name__)

FLAG_KEYS: dict[str, str] = {
    "teacher": "model.teacher",
    "teacher_weights": "model.teacher_weights",
    "student": "model.student",
    "img_size": "model.img_size",
    "data": "data.path",
    "workers": "data.workers",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "device": "train.device",
    "amp": "train.amp",
    "compile": "train.compile",
    "lr": "optim.lr",
    "curriculum": "curriculum.mode",
    "metric": "curriculum.metric",
    "cka_threshold": "curriculum.threshold",
    "ema_alpha": "curriculum.ema_alpha",
    "max_epochs_per_block": "curriculum.max_epochs_per_block",
    "log": "train.log",
}
"""Each config flag of the command and the config key it sets; every other key is reached with --set."""

_SET_HELP = (
    "Any config key as section.key=value, repeatable (e.g. --set optim.accum_steps=4 --set data.hflip=0). "
    "Applied over the recipe; a key is given by its flag or by --set, not both."
)


def config_delta(params: Mapping[str, Any], sets: list[str]) -> dict[str, dict[str, Any]]:
    """The nested config delta of a command line: the ``--set`` items and the flags that were given.

    ``--data`` also sets ``data.source: folder``, replacing the recipe's source (e.g. the demo digits).

    Args:
        params: the command's parameter values by name; None means not given.
        sets: the ``--set section.key=value`` items.

    Raises:
        ConfigError: an item is malformed, or a key is given both by a flag and by ``--set``.
    """
    from leapkit.config import parse_set
    from leapkit.errors import ConfigError

    delta = parse_set(sets)
    given = {name: value for name, value in params.items() if name in FLAG_KEYS and value is not None}
    keys = {FLAG_KEYS[name]: (name, str(value) if isinstance(value, Path) else value) for name, value in given.items()}
    if "data" in given:
        keys["data.source"] = ("data", "folder")
    for key, (name, value) in keys.items():
        section, field = key.split(".")
        if field in delta.get(section, {}):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{key} is given twice, by {flag} and by --set {key}=...; pass it once")
        delta.setdefault(section, {})[field] = value
    return delta


def distill(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Option(help="Recipe name (see `leapkit profiles list`) or a YAML file.")] = "demo",
    teacher: Annotated[
        str | None, typer.Option(help="timm teacher name, e.g. vit_giant_patch14_dinov2.lvd142m.")
    ] = None,
    teacher_weights: Annotated[
        Path | None, typer.Option(help="Local safetensors weights for the teacher (no hub download).")
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(help="timm student name, e.g. vit_small_patch14_dinov2, or 'auto': the largest candidate that "
                     "`leapkit plan` predicts within --budget-ms on --target."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder of images (recursive), or an ImageFolder root with train/.")
    ] = None,
    img_size: Annotated[int | None, typer.Option(help="Training resolution in pixels.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per micro-batch (per process).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (optim.lr; see optim.scale_lr).")] = None,
    curriculum: ModeOpt = None,
    metric: Annotated[Metric | None, typer.Option(help="Progress signal.")] = None,
    cka_threshold: Annotated[float | None, typer.Option(help="Level up when the smoothed score reaches this.")] = None,
    ema_alpha: Annotated[float | None, typer.Option(help="EMA weight of the newest score (1 = none).")] = None,
    max_epochs_per_block: Annotated[
        float | None, typer.Option(help="Level up after this many epochs on a block.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    amp: Annotated[Amp | None, typer.Option(help="Mixed precision on CUDA.")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader worker processes.")] = None,
    compile: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the student forward.")
    ] = None,
    log: Annotated[
        LogBackend | None,
        typer.Option(help="Training dashboard beside metrics.jsonl: TensorBoard scalars in RUN/tensorboard "
                     "(auto: when the tensorboard package is installed)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", metavar="SECTION.KEY=VALUE", help=_SET_HELP, show_default=False)
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<recipe>-<mode>-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (default runs/latest).")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the leapkit run in --out (never a folder that is not a run).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="With --student auto: the target profile the student must fit.",
                     show_default=False),
    ] = None,
    budget_ms: BudgetOpt = None,
) -> None:
    """Distil a teacher into a student with the LEAP curriculum.

    With --resume the run continues from its checkpoint. Its recipe, model, curriculum, optimizer and
    seed are the run's own: an option that would change them is refused (exit 2, naming each key).
    --epochs (to extend the run), --batch-size (per process), --device, --amp, --compile, --workers,
    --log, --data (the same data in another folder) and --no-progress may change. A finished run
    with nothing left to train is left exactly as it is.
    """
    import dataclasses

    from leapkit.config import apply, load_config, resolve_config
    from leapkit.distributed import is_main_process
    from leapkit.run import CONFIG
    from leapkit.train import check_resume, check_resume_overwrite, finished_summary, resume_dir
    from leapkit.train import distill as run_distill

    start = time.perf_counter()
    check_resume_overwrite(resume, overwrite)
    delta = config_delta(ctx.params, set_ or [])
    if resume:
        run_dir = resume_dir(out)
        cfg = apply(load_config(run_dir / CONFIG), delta, origin="command line")
        # By name: typer may bring its own copy of click, whose ParameterSource is another enum than click's.
        if ctx.get_parameter_source("recipe").name != "DEFAULT":
            # The recipe's own name (a file's `recipe:` key, else its stem), compared with the run's below.
            cfg = dataclasses.replace(cfg, recipe=resolve_config(recipe).recipe)
        cfg = choose_student(cfg, target, budget_ms, resumed=True)
        cfg = check_resume(run_dir, cfg)
        finished = finished_summary(run_dir, cfg)
        if finished is not None:
            logging.getLogger(__name__).info(  # not `log`: the --log option shadows it here
                "%s is already complete (%d epochs): nothing to do, no file changed; pass --epochs N to train it "
                "further", run_dir, cfg.train.epochs,
            )
            print_summary(finished)
            return
        out = run_dir
    else:
        cfg = choose_student(resolve_config(recipe, delta), target, budget_ms)
    summary = run_distill(cfg, out=out, resume=resume, overwrite=overwrite, show_progress=progress)
    if is_main_process():
        summary = add_evidence(summary, cfg)
        summary.wall_seconds = round(time.perf_counter() - start, 1)  # setup, training and the evidence
        summary.save(folder=Path(summary.run_dir))
        print_summary(summary)


def choose_student(cfg: Config, target: str | None, budget_ms: float | None, resumed: bool = False) -> Config:
    """``cfg`` with ``--student auto`` resolved for ``target`` and the choice recorded in its ``plan`` section.

    The candidates are :mod:`leapkit.planning.candidates`' students at the run's resolution and every precision
    the target runs; the largest whose whole predicted range fits the budget is taken.

    Raises:
        ConfigError: ``--target``/``--budget-ms`` without ``--student auto`` or the reverse, ``auto`` on a
            resumed run, or no candidate fits.
    """
    import dataclasses

    from leapkit.config import PlanConfig
    from leapkit.errors import ConfigError
    from leapkit.planning.plan import PlanRequest
    from leapkit.planning.plan import choose_student as choose
    from leapkit.profiles import load_target

    if cfg.model.student != "auto":
        if target is not None or budget_ms is not None:
            raise ConfigError("--target and --budget-ms choose the student: pass them with --student auto, or leave "
                              "them out and name the student")
        return cfg
    if resumed:
        raise ConfigError("--student auto chooses the student of a new run; a resumed run keeps its own")
    if target is None:
        raise ConfigError("--student auto needs --target T (and optionally --budget-ms X) to choose a student for; "
                          "e.g. --student auto --target jetson-orin-nano")
    profile = load_target(target)
    row, report = choose(PlanRequest(profile=profile, budget_ms=budget_ms, img_sizes=(cfg.model.img_size,)))
    log.info("--student auto: %s at %d px %s, predicted %.3g ms (%.3g-%.3g, %s) within %g ms on %s, largest of %d "
             "candidates", row.student, row.img_size, row.precision, row.predicted_ms, *row.predicted_range_ms,
             report.source, report.budget_ms, profile.name, len(report.rows))
    model = dataclasses.replace(cfg.model, student=row.student)
    plan = PlanConfig(target=profile.name, budget_ms=report.budget_ms, precision=row.precision,
                      predicted_ms=row.predicted_ms, predicted_range_ms=tuple(row.predicted_range_ms),
                      calibrated=report.calibrated, source=report.source, candidates=len(report.rows))
    return dataclasses.replace(cfg, model=model, plan=plan)


def add_evidence(summary: RunSummary, cfg: Config) -> RunSummary:
    """The run's training FLOPs (writes flops.json), achieved rate, MFU and closing evaluation.

    Args:
        summary: what training returned; updated in place and returned.
        cfg: the run's config (``train.eval_at_end`` turns the evaluation on).
    """
    import torch

    from leapkit.devices import gpu_peak_tflops
    from leapkit.errors import DataError
    from leapkit.evaluate import EvalReport, evaluate_model, labelled_splits
    from leapkit.flops import run_flops
    from leapkit.run import load_student

    f = run_flops(summary.run_dir, export_batch=1, write=True)
    summary.train_flops = f.train_flops_run
    summary.train_flops_baseline = f.train_flops_baseline
    summary.train_flops_saving_pct = f.train_flops_saving_pct
    summary.achieved_tflops_per_s = round(f.train_flops_run / max(summary.train_seconds, 1e-9) / 1e12, 4)
    device = torch.device(summary.device or "cpu")
    peak = gpu_peak_tflops(device)
    if peak:
        summary.mfu_pct = round(100 * summary.achieved_tflops_per_s / (peak * summary.world_size), 2)
    if cfg.train.eval_at_end:
        try:
            train_set, val_set = labelled_splits(cfg)
        except DataError as e:
            log.info("no labelled split for the closing evaluation (%s)", e)
        else:
            student = load_student(summary.run_dir, device=device)
            summary.eval = EvalReport.from_dict(evaluate_model(student, train_set, val_set, device=device))
    return summary


def print_summary(summary: RunSummary) -> None:
    """The closing summary: time, throughput, curriculum, teacher work saved, probe accuracy."""
    from rich.console import Console

    from leapkit.tables import Table

    s = summary
    table = Table.of("measure", "value", title=f"leapkit distill: {s.run_dir}")
    if s.wall_seconds is None:
        wall = "training"
    elif s.wall_seconds >= s.train_seconds:
        wall = f"{s.wall_seconds:.1f} s, of which training"
    else:  # resumed: the wall clock is this session's, the training time the whole run's
        wall = f"{s.wall_seconds:.1f} s this session; training over all sessions"
    table.add("wall time", f"{wall} {s.train_seconds:.1f} s ({s.steps} steps, {s.epochs} epochs)")
    table.add("throughput", f"{s.images_per_s:.0f} images/s")
    table.add("curriculum", s.mode)
    table.add("blocks visited", " -> ".join(map(str, s.blocks_visited)) + f"  (of {s.teacher_blocks})")
    saved = f"{s.teacher_blocks_saved_pct:.1f}% of the block evaluations of the fixed-target baseline"
    table.add("teacher blocks saved", saved)
    if s.train_flops is not None and s.train_flops_saving_pct is not None and s.train_flops_baseline is not None:
        table.add(
            "training FLOPs",
            f"{s.train_flops / 1e12:.2f} TFLOPs, {s.train_flops_saving_pct:.1f}% below the baseline's "
            f"{s.train_flops_baseline / 1e12:.2f}",
        )
    if s.mfu_pct is not None:
        table.add("model FLOP utilisation", f"{s.mfu_pct:.1f}%")
    if s.images_skipped:
        # A corrupt file is skipped once per epoch: say how many files, then how many reads.
        files = f"{s.unreadable_files} files, " if s.unreadable_files else ""
        table.add("unreadable images skipped", f"{files}{s.images_skipped} reads over {s.epochs} epochs")
    if s.eval is not None:
        table.add("student linear probe", f"{s.eval.linear_probe_top1:.2f}% top-1 on {s.eval.n_val} held-out images")
        table.add("student kNN (k=20)", f"{s.eval.knn_top1:.2f}% top-1")
    Console().print(table.to_rich())
