"""`leapkit distill`: LEAP distillation (the demo recipe when called with no arguments)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer


log = logging.getLogger("leapkit")

Curriculum = Literal["leap", "baseline"]


def _overrides(**flags: Any) -> dict[str, dict[str, Any]]:
    """Map CLI flags onto the nested config delta; flags left unset do not override the recipe."""
    where = {
        "teacher": ("model", "teacher"), "teacher_weights": ("model", "teacher_weights"), "student": ("model", "student"),
        "img_size": ("model", "img_size"), "data": ("data", "path"), "workers": ("data", "workers"),
        "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "seed": ("train", "seed"),
        "device": ("train", "device"), "amp": ("train", "amp"), "lr": ("optim", "lr"),
        "curriculum": ("curriculum", "mode"), "cka_threshold": ("curriculum", "threshold"),
        "ema_alpha": ("curriculum", "ema_alpha"), "max_epochs_per_block": ("curriculum", "max_epochs_per_block"),
        "metric": ("curriculum", "metric"), "compile": ("train", "compile"),
    }
    delta: dict[str, dict[str, Any]] = {}
    for flag, value in flags.items():
        if value is not None:
            section, key = where[flag]
            delta.setdefault(section, {})[key] = value
    if flags.get("data") is not None:
        delta["data"]["source"] = "folder"  # --data replaces the recipe's data source (e.g. the demo digits)
    return delta


def distill(
    recipe: Annotated[str, typer.Option(help="Recipe name (see `leapkit profiles list`) or a YAML file.")] = "demo",
    teacher: Annotated[Optional[str], typer.Option(help="timm teacher name, e.g. vit_giant_patch14_dinov2.lvd142m.")] = None,
    teacher_weights: Annotated[Optional[Path], typer.Option(help="Local safetensors weights for the teacher (no hub download).")] = None,
    student: Annotated[Optional[str], typer.Option(help="timm student name, e.g. vit_small_patch14_dinov2.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Folder of images (recursive), or an ImageFolder root with train/.")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Training resolution in pixels.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step (per process).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    curriculum: Annotated[Optional[Curriculum], typer.Option(help="leap, or baseline (fixed last block, no early exit).")] = None,
    metric: Annotated[Optional[Literal["cka", "cosine"]], typer.Option(help="Progress signal.")] = None,
    cka_threshold: Annotated[Optional[float], typer.Option(help="Level up when the smoothed score reaches this.")] = None,
    ema_alpha: Annotated[Optional[float], typer.Option(help="EMA weight of the newest score (1 = none).")] = None,
    max_epochs_per_block: Annotated[Optional[float], typer.Option(help="Level up after this many epochs on a block.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    amp: Annotated[Optional[Literal["auto", "bf16", "fp16", "off"]], typer.Option(help="Mixed precision on CUDA.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Data loader worker processes.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the student forward.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<recipe>-<mode>-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (default runs/latest).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Distil a teacher into a student with the LEAP curriculum."""
    from leapkit.config import apply, load_config, resolve_config
    from leapkit.run import CONFIG
    from leapkit.train import distill as run_distill, resume_dir

    delta = _overrides(
        teacher=teacher, teacher_weights=str(teacher_weights) if teacher_weights else None, student=student,
        data=str(data) if data else None,
        img_size=img_size, epochs=epochs, batch_size=batch_size, lr=lr, curriculum=curriculum, metric=metric,
        cka_threshold=cka_threshold, ema_alpha=ema_alpha, max_epochs_per_block=max_epochs_per_block, seed=seed,
        device=device, amp=amp, workers=workers, compile=compile,
    )
    if resume:
        run_dir = resume_dir(out)
        cfg = apply(load_config(run_dir / CONFIG), delta, origin="command line")
        out = run_dir
    else:
        cfg = resolve_config(recipe, delta)
    summary = run_distill(cfg, out=out, resume=resume, overwrite=overwrite, show_progress=progress)
    print_summary(summary)


def print_summary(summary: dict[str, Any]) -> None:
    """The closing summary: time, throughput, curriculum, teacher work saved, probe accuracy."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"leapkit distill: {summary['run_dir']}", show_header=False)
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s, of which training {summary['train_seconds']:.1f} s ({summary['steps']} steps, {summary['epochs']} epochs)")
    table.add_row("throughput", f"{summary['images_per_s']:.0f} images/s")
    table.add_row("curriculum", summary["mode"])
    table.add_row("blocks visited", " -> ".join(map(str, summary["blocks_visited"])) + f"  (of {summary['teacher_blocks']})")
    table.add_row(
        "teacher blocks saved",
        f"{summary['teacher_blocks_saved_pct']:.1f}% of the block evaluations of the fixed-target baseline",
    )
    if summary.get("train_flops_saving_pct") is not None:
        table.add_row("training FLOPs", f"{summary['train_flops'] / 1e12:.2f} TFLOPs, {summary['train_flops_saving_pct']:.1f}% below the baseline's {summary['train_flops_baseline'] / 1e12:.2f}")
    if summary.get("mfu_pct") is not None:
        table.add_row("model FLOP utilisation", f"{summary['mfu_pct']:.1f}%")
    if summary.get("images_skipped"):
        table.add_row("unreadable images skipped", str(summary["images_skipped"]))
    ev = summary.get("eval")
    if ev:
        table.add_row("student linear probe", f"{ev['linear_probe_top1']:.2f}% top-1 on {ev.get('n_val', '?')} held-out images")
        if "knn_top1" in ev:
            table.add_row("student kNN (k=20)", f"{ev['knn_top1']:.2f}% top-1")
    Console().print(table)
