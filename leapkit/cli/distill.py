"""`leapkit distill`: LEAP distillation (the demo recipe when called with no arguments).

The command resolves the config (recipe <- ``--set`` items <- flags, or the resumed run's config
under the flags), calls :func:`leapkit.train.distill`, which trains, resolves ``--student auto`` and
adds the closing evidence to summary.json, and prints the summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from leapkit.cli.options import BudgetOpt, ModeOpt
from leapkit.config import LogBackend
from leapkit.types import Amp, Metric

if TYPE_CHECKING:
    from leapkit.run import RunSummary

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
    "plateau_window": "curriculum.plateau_window",
    "plateau_tolerance": "curriculum.plateau_tolerance",
    "log": "train.log",
}
"""Each config flag of the command and the config key it sets; every other key is reached with --set."""

def loader_workers(value: str | int) -> int | str:
    """``--workers``: an integer >= 0 or ``auto`` (a typer parser; a ValueError becomes a usage error)."""
    text = str(value).strip()
    if text == "auto":
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"must be an integer >= 0 or auto, got {value!r}")


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
    plateau_window: Annotated[
        int | None, typer.Option(help="plateau: steps per window; the last window's mean score is set against the "
                                 "one before it.")
    ] = None,
    plateau_tolerance: Annotated[
        float | None, typer.Option(help="plateau: level up when the window's relative gain is below this.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    amp: Annotated[Amp | None, typer.Option(help="Mixed precision on CUDA.")] = None,
    workers: Annotated[
        str | None,
        typer.Option(parser=loader_workers, metavar="N|auto",
                     help="Data loader worker processes; auto: one per CPU of this process less one."),
    ] = None,
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
    from leapkit.train import check_resume_overwrite, resume_dir
    from leapkit.train import distill as run_distill

    check_resume_overwrite(resume, overwrite)
    delta = config_delta(ctx.params, set_ or [])
    if resume:
        cfg = apply(load_config(resume_dir(out) / CONFIG), delta, origin="command line")
        # By name: typer may bring its own copy of click, whose ParameterSource is another enum than click's.
        if ctx.get_parameter_source("recipe").name != "DEFAULT":
            # The recipe's own name (a file's `recipe:` key, else its stem), compared with the run's by the resume.
            cfg = dataclasses.replace(cfg, recipe=resolve_config(recipe).recipe)
    else:
        cfg = resolve_config(recipe, delta)
    summary = run_distill(cfg, out=out, resume=resume, overwrite=overwrite, show_progress=progress, target=target,
                          budget_ms=budget_ms)
    if is_main_process():
        print_summary(summary)


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
