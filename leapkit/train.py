"""The LEAP distillation loop.

Reads top to bottom: set up (run dir, models, data, optimizer, curriculum), calibrate, then per
step: schedule, teacher forward up to the target block, student forward and loss, backward, clip,
step, curriculum update, log; a checkpoint at every epoch end.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from leapkit import __version__, run as rundir
from leapkit.config import Config, load_config, save_config
from leapkit.curriculum import METRICS, CurriculumController
from leapkit.data import Batch, DigitsDataset, ImageFolderDataset, collate, resolve_split, train_transform
from leapkit.errors import DataError, Interrupted, RunError, TrainingDiverged
from leapkit.models import (
    TruncatedTeacher,
    check_pair,
    create_student,
    create_teacher,
    grid_size,
    resize_tokens,
    student_tokens,
)
from leapkit.optim import build_optimizer, lr_at

log = logging.getLogger(__name__)


class Distiller(nn.Module):
    """The trainable part: the student and its projection head (kept across level-ups)."""

    def __init__(self, student: nn.Module, teacher_dim: int, student_grid: tuple[int, int], teacher_grid: tuple[int, int]):
        super().__init__()
        self.student = student
        self.head = nn.Linear(student.embed_dim, teacher_dim)
        self.student_grid, self.teacher_grid = student_grid, teacher_grid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected student patch tokens on the teacher's grid (B, N_t, D_t) and CLS (B, D_t)."""
        tokens = student_tokens(self.student, x)
        patch = resize_tokens(tokens.patch, self.student_grid, self.teacher_grid)
        return self.head(patch), self.head(tokens.cls)


def distill_loss(patch: torch.Tensor, cls: torch.Tensor, target_patch: torch.Tensor, target_cls: torch.Tensor, cls_weight: float) -> torch.Tensor:
    loss = F.mse_loss(patch.float(), target_patch.float())
    if cls_weight > 0:
        loss = loss + cls_weight * F.mse_loss(cls.float(), target_cls.float())
    return loss


class EpochSampler(Sampler[int]):
    """A permutation that is a pure function of (seed, epoch), sharded over ranks.

    ``skip`` drops the first indices of this rank's share, to continue an interrupted epoch.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0):
        self.n, self.seed, self.epoch, self.rank, self.world, self.skip = n, seed, epoch, rank, world, skip

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        perm = perm[: self.n - self.n % self.world]  # equal shares so that ranks step together
        return perm[self.rank :: self.world][self.skip :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


@dataclass
class Setup:
    """Everything the loop needs, built (and validated) before anything is written."""

    cfg: Config
    run_dir: Path
    device: torch.device
    teacher: TruncatedTeacher
    model: Distiller
    train_set: Dataset
    resume_state: dict[str, Any] | None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise RunError(f"unknown device '{name}'; use cpu, cuda or cuda:N") from e


def amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.train.amp == "off":
        return None
    if cfg.train.amp == "fp16" or (cfg.train.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def data_stats(teacher_name: str, model: nn.Module) -> tuple[tuple, tuple]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def build_train_set(cfg: Config, mean, std) -> Dataset:
    if cfg.data.source == "digits":
        return DigitsDataset("train", cfg.model.img_size, mean, std, augment=True, crop_scale=cfg.data.crop_scale)
    root = resolve_split(cfg.data.path, "train")
    transform = train_transform(cfg.model.img_size, mean, std, cfg.data.crop_scale, cfg.data.hflip)
    return ImageFolderDataset(root, transform)


def resume_dir(out: str | Path | None) -> Path:
    """The run --resume continues: ``out`` or runs/latest."""
    if out is None and not rundir.latest_link().exists():
        raise RunError("nothing to resume: runs/latest does not exist; start a run without --resume")
    return rundir.resolve_run(out)


def default_run_dir(cfg: Config) -> Path:
    return rundir.RUNS_DIR / f"{cfg.recipe}-{cfg.curriculum.mode}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare(cfg: Config | None, out: str | Path | None, resume: bool, overwrite: bool) -> Setup:
    """Validate everything that can be wrong before the run directory is touched."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one of them")
    resume_state = None
    if resume:
        run_dir = resume_dir(out)
        ckpt = run_dir / rundir.CHECKPOINT
        if not ckpt.is_file():
            raise RunError(f"nothing to resume in {run_dir}: no {rundir.CHECKPOINT}; start a new run without --resume")
        cfg = cfg if cfg is not None else load_config(run_dir / rundir.CONFIG)
        resume_state = torch.load(ckpt, map_location="cpu", weights_only=True)
    else:
        if cfg is None:
            raise ValueError("a config is needed unless resuming")
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise RunError(f"{run_dir} already holds files; pass --resume to continue it, --overwrite to replace it, or --out NEW_DIR")
    cfg.validate()

    device = pick_device(cfg.train.device)
    teacher = create_teacher(cfg.model.teacher, cfg.model.img_size, weights=cfg.model.teacher_weights)
    torch.manual_seed(cfg.train.seed)  # student and head initialisation
    student = create_student(cfg.model.student, cfg.model.img_size, drop_path_rate=cfg.model.drop_path)
    check_pair(teacher, student, cfg.model.img_size)
    mean, std = data_stats(cfg.model.teacher, teacher)
    train_set = build_train_set(cfg, mean, std)
    if len(train_set) < cfg.train.batch_size:
        log.warning("the data holds %d images, fewer than one batch of %d", len(train_set), cfg.train.batch_size)
    model = Distiller(student, teacher.embed_dim, grid_size(student), grid_size(teacher))
    return Setup(cfg, run_dir, device, TruncatedTeacher(teacher), model, train_set, resume_state)


def make_loader(setup: Setup, epoch: int, skip_batches: int = 0) -> DataLoader:
    cfg = setup.cfg
    sampler = EpochSampler(len(setup.train_set), cfg.train.seed, epoch, skip=skip_batches * cfg.train.batch_size)
    workers = cfg.data.workers
    return DataLoader(
        setup.train_set,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=cfg.data.pin_memory and setup.device.type == "cuda",
        drop_last=len(setup.train_set) >= 2 * cfg.train.batch_size,
        generator=torch.Generator().manual_seed(cfg.train.seed * 7919 + epoch),  # worker seeds
        persistent_workers=False,
    )


@torch.no_grad()
def calibrate(setup: Setup, controller: CurriculumController, batch: torch.Tensor) -> None:
    """Layer skipping: score the untrained student against every teacher block on one batch."""
    metric = METRICS[setup.cfg.curriculum.metric]
    setup.model.eval()
    patch, _ = setup.model(batch)
    setup.model.train()
    scores = [metric(patch, t.patch) for t in setup.teacher.all_blocks(batch)]
    start = controller.calibrate(scores, images=len(batch))
    log.info("calibration: start at teacher block %d of %d (scores %s)", start, controller.num_blocks, " ".join(f"{s:.2f}" for s in scores))


class StopRequested:
    """Turns SIGTERM/SIGINT into a flag checked after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequested":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def save_checkpoint(setup: Setup, optimizer, scaler, controller, state: dict[str, Any]) -> None:
    """Everything --resume needs, written atomically (temporary file, fsync, rename)."""
    import io

    payload = {
        "leapkit_version": __version__,
        "student": setup.model.student.state_dict(),
        "head": setup.model.head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "curriculum": controller.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **state,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    rundir.atomic_write_bytes(setup.run_dir / rundir.CHECKPOINT, buf.getvalue())


def save_student(setup: Setup) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in setup.model.student.state_dict().items()}
    rundir.atomic_write_bytes(setup.run_dir / rundir.STUDENT, save(tensors, metadata={"leapkit_version": __version__}))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint being resumed from."""
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
        rundir.atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def distill(config: Config | None, out: str | Path | None = None, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run LEAP (or the fixed-target baseline) distillation and return the run summary.

    Args:
        config: the resolved config (see leapkit.config.resolve_config); with ``resume`` it may be
            None to continue with the run's saved config.
        out: run directory; default runs/<recipe>-<mode>-<timestamp>.
        resume: continue the run in ``out`` (default runs/latest) from its last checkpoint.
        overwrite: replace an existing run in ``out``.
        show_progress: draw a rich progress bar.
    """
    setup = prepare(config, out, resume, overwrite)
    cfg, device, model, teacher = setup.cfg, setup.device, setup.model, setup.teacher
    if overwrite and setup.run_dir.exists():
        shutil.rmtree(setup.run_dir)
    setup.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, setup.run_dir / rundir.CONFIG)
    rundir.point_latest(setup.run_dir)

    model.to(device).train()
    dtype = amp_dtype(cfg, device)
    teacher.to(device, dtype=dtype if dtype is not None and cfg.train.teacher_half else None)
    optimizer = build_optimizer(cfg.optim, [model])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    controller = CurriculumController(
        num_blocks=teacher.num_blocks,
        mode=cfg.curriculum.mode,
        threshold=cfg.curriculum.threshold,
        ema_alpha=cfg.curriculum.ema_alpha,
        max_epochs_per_block=cfg.curriculum.max_epochs_per_block,
        snap_to_last_at=cfg.curriculum.snap_to_last_at,
    )
    metric = METRICS[cfg.curriculum.metric]
    batches_per_epoch = len(make_loader(setup, 0))
    per_epoch = math.ceil(batches_per_epoch / cfg.optim.accum_steps)
    total_steps = cfg.train.epochs * per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * per_epoch)
    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "restart_step": 0, "teacher_block_images": 0, "images": 0, "skipped": 0, "seconds": 0.0}

    if setup.resume_state is not None:
        ck = setup.resume_state
        model.student.load_state_dict(ck["student"])
        model.head.load_state_dict(ck["head"])
        optimizer.load_state_dict(ck["optimizer"])
        if scaler is not None and ck["scaler"]:
            scaler.load_state_dict(ck["scaler"])
        controller.load_state_dict(ck["curriculum"])
        state.update({k: ck[k] for k in state})
        torch.set_rng_state(ck["rng_torch"])
        if ck["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng_cuda"])
        _truncate_metrics(setup.run_dir / rundir.METRICS, state["step"])
        log.info("resuming %s at epoch %d, step %d", setup.run_dir, state["epoch"], state["step"])
    else:
        first = next(iter(make_loader(setup, 0)))
        if first.images.numel() == 0:
            raise DataError("the first batch held no readable image; check the data folder for corrupt files")
        if cfg.curriculum.mode == "leap" and cfg.curriculum.calibrate:
            calibrate(setup, controller, first.images.to(device, dtype=next(teacher.parameters()).dtype))
            state["teacher_block_images"] += teacher.num_blocks * len(first.images)
        else:
            controller.calibration = {"scores": [], "start_block": controller.block, "images": 0}

    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    metrics_file = (setup.run_dir / rundir.METRICS).open("a")
    progress = _progress(show_progress)
    task = progress.add_task("distill", total=total_steps, completed=state["step"], info="")
    clip = cfg.optim.clip_grad
    try:
        with progress, StopRequested() as stop:
            for epoch in range(state["epoch"], cfg.train.epochs):
                if state["batch_in_epoch"] == 0:
                    torch.manual_seed(cfg.train.seed * 1_000_003 + epoch)  # augmentations, drop path
                loader = make_loader(setup, epoch, skip_batches=state["batch_in_epoch"])
                tic, micro, step_images = time.perf_counter(), 0, 0
                for i, batch in enumerate(loader):
                    state["skipped"] += batch.skipped
                    if batch.images.numel() == 0:
                        continue
                    k = controller.block
                    x = batch.images.to(device, non_blocking=True)
                    with torch.no_grad(), autocast:
                        target = teacher(x.to(next(teacher.parameters()).dtype), k)
                    with autocast:
                        patch, cls = model(x)
                        loss = distill_loss(patch, cls, target.patch, target.cls, cfg.curriculum.cls_weight)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"non-finite loss at step {state['step']} (epoch {epoch}, block {k}); the last good checkpoint is kept: "
                            f"lower optim.lr or enable clipping, then --resume"
                        )
                    (scaler.scale(loss) if scaler else loss).div(cfg.optim.accum_steps).backward()
                    micro += 1
                    step_images += len(x)
                    state["batch_in_epoch"] += 1
                    state["images"] += len(x)
                    state["teacher_block_images"] += k * len(x)
                    if micro < cfg.optim.accum_steps and i < len(loader) - 1:
                        continue

                    lr = lr_at(state["step"], total_steps, warmup_steps, cfg.optim.lr, cfg.optim.min_lr, state["restart_step"])
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    if scaler:
                        scaler.unscale_(optimizer)
                    if clip:
                        nn.utils.clip_grad_norm_(model.parameters(), clip)
                    scaler.step(optimizer) if scaler else optimizer.step()
                    if scaler:
                        scaler.update()
                    optimizer.zero_grad(set_to_none=True)

                    score = metric(patch.detach(), target.patch)
                    state["step"] += 1
                    epoch_pos = epoch + state["batch_in_epoch"] / batches_per_epoch
                    event = controller.update(score, state["step"], epoch_pos)
                    if event is not None:
                        log.info("level-up at step %d (epoch %.2f): block %d -> %d (%s, ema %.3f)", event.step, event.epoch, event.from_block, event.to_block, event.reason, event.ema)
                        if cfg.optim.lr_restart:
                            state["restart_step"] = state["step"]
                    elapsed = time.perf_counter() - tic
                    row = {
                        "step": state["step"], "epoch": round(epoch_pos, 4), "loss": loss.item(), "cka": score,
                        "ema_cka": controller.ema if event is None else event.ema, "target_block": k, "lr": lr,
                        "teacher_blocks_run": k, "images": step_images,
                        "images_per_s": step_images / max(elapsed, 1e-9),
                    }
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    state["seconds"] += elapsed
                    tic, micro, step_images = time.perf_counter(), 0, 0
                    progress.update(task, advance=1, info=f"ep {epoch + 1}/{cfg.train.epochs} loss {row['loss']:.4f} cka {score:.3f} block {k}/{teacher.num_blocks} {row['images_per_s']:.0f} img/s")
                    if stop.signal is not None:
                        break
                if stop.signal is not None:
                    save_checkpoint(setup, optimizer, scaler, controller, {**state, "epoch": epoch})
                    raise Interrupted(
                        f"stopped by signal {stop.signal} at step {state['step']}; checkpoint written, continue with "
                        f"`leapkit distill --resume --out {setup.run_dir}`"
                    )
                state.update(epoch=epoch + 1, batch_in_epoch=0)
                save_checkpoint(setup, optimizer, scaler, controller, state)
                rundir.write_json(setup.run_dir / rundir.CURRICULUM, controller.summary())
                log.info("epoch %d/%d done: block %d, ema %.3f", epoch + 1, cfg.train.epochs, controller.block, controller.ema)
    finally:
        metrics_file.close()

    if state["images"] == 0:
        raise DataError(f"every image in the data was unreadable ({state['skipped']} skipped); check the files under {cfg.data.path}")
    save_student(setup)
    rundir.write_json(setup.run_dir / rundir.CURRICULUM, controller.summary())
    summary = summarize(setup, controller, state)
    rundir.write_json(setup.run_dir / rundir.SUMMARY, summary)
    return summary


def summarize(setup: Setup, controller: CurriculumController, state: dict[str, Any]) -> dict[str, Any]:
    cfg = setup.cfg
    baseline = controller.num_blocks * state["images"]
    summary: dict[str, Any] = {
        "run_dir": str(setup.run_dir),
        "mode": cfg.curriculum.mode,
        "epochs": cfg.train.epochs,
        "steps": state["step"],
        "train_seconds": round(state["seconds"], 2),
        "images_seen": state["images"],
        "images_per_s": round(state["images"] / max(state["seconds"], 1e-9), 1),
        "images_skipped": state["skipped"],
        "teacher_blocks": controller.num_blocks,
        "blocks_visited": controller.blocks_visited,
        "final_block": controller.block,
        "teacher_block_images": state["teacher_block_images"],
        "teacher_block_images_baseline": baseline,
        "teacher_blocks_saved_pct": round(100.0 * (1 - state["teacher_block_images"] / baseline), 2),
    }
    if cfg.train.eval_at_end:
        try:
            from leapkit.evaluate import evaluate_model, labelled_splits
        except ImportError:  # evaluation module not available
            evaluate_model = None
        if evaluate_model is not None:
            try:
                train_set, val_set = labelled_splits(cfg)
            except DataError as e:
                log.info("no labelled split for the closing evaluation (%s)", e)
            else:
                summary["eval"] = evaluate_model(setup.model.student.eval(), train_set, val_set, device=setup.device)
    return summary


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False,
    )
