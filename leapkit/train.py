"""The LEAP distillation loop.

Reads top to bottom: set up (run dir, models, data, optimizer, curriculum), calibrate, then per
step: schedule, teacher forward up to the target block, student forward and loss, backward, clip,
step, curriculum update, log; a checkpoint at every epoch end. Under torchrun every rank runs the
same loop on its shard; the per-step score is averaged over ranks so that every rank levels up at
the same step, and only rank 0 writes files.
"""

from __future__ import annotations

import io
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from leapkit import __version__, run as rundir
from leapkit.config import Config, load_config, save_config
from leapkit.curriculum import METRICS, CurriculumController
from leapkit.data import DigitsDataset, ImageFolderDataset, collate, eval_transform, resolve_split, train_transform
from leapkit.distributed import Dist, init_distributed, shutdown
from leapkit.errors import DataError, Interrupted, RunError, TrainingDiverged
from leapkit.models import (
    TruncatedTeacher,
    check_pair,
    create_student,
    create_teacher,
    grid_size,
    normalization,
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
    """Everything the loop needs, built and validated before anything is written."""

    cfg: Config
    run_dir: Path
    device: torch.device
    dist: Dist
    teacher: TruncatedTeacher
    model: Distiller
    train_set: Dataset
    resume_state: dict[str, Any] | None


def pick_device(name: str, d: Dist) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and d.enabled:
        name = f"cuda:{d.local_rank}"
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


def build_train_set(cfg: Config, mean, std) -> Dataset:
    size, d = cfg.model.img_size, cfg.data
    if d.source == "digits":
        return DigitsDataset("train", size, mean, std, augment=d.augment, crop_scale=d.crop_scale)
    transform = train_transform(size, mean, std, d.crop_scale, d.hflip) if d.augment else eval_transform(size, mean, std)
    return ImageFolderDataset(resolve_split(d.path, "train"), transform)


def resume_dir(out: str | Path | None) -> Path:
    """The run --resume continues: ``out`` or runs/latest."""
    if out is None and not rundir.latest_link().exists():
        raise RunError("nothing to resume: runs/latest does not exist; start a run without --resume")
    return rundir.resolve_run(out)


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
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(out) if out is not None else rundir.RUNS_DIR / f"{cfg.recipe}-{cfg.curriculum.mode}-{stamp}"
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise RunError(f"{run_dir} already holds files; pass --resume to continue it, --overwrite to replace it, or --out NEW_DIR")
    cfg.validate()

    d = init_distributed(cfg.train.device)
    run_dir = d.broadcast(run_dir)  # the timestamped name is rank 0's
    device = pick_device(cfg.train.device, d)
    teacher = create_teacher(cfg.model.teacher, cfg.model.img_size, weights=cfg.model.teacher_weights)
    torch.manual_seed(cfg.train.seed)  # student and head initialisation, identical on every rank
    student = create_student(cfg.model.student, cfg.model.img_size, drop_path_rate=cfg.model.drop_path)
    check_pair(teacher, student, cfg.model.img_size)
    train_set = build_train_set(cfg, *normalization(cfg.model.teacher))
    if len(train_set) < cfg.train.batch_size * d.world:
        log.warning("the data holds %d images, fewer than one global batch of %d", len(train_set), cfg.train.batch_size * d.world)
    model = Distiller(student, teacher.embed_dim, grid_size(student), grid_size(teacher))
    return Setup(cfg, run_dir, device, d, TruncatedTeacher(teacher), model, train_set, resume_state)


def make_loader(setup: Setup, epoch: int, skip: int = 0) -> DataLoader:
    cfg, d = setup.cfg, setup.dist
    return DataLoader(
        setup.train_set,
        batch_size=cfg.train.batch_size,
        sampler=EpochSampler(len(setup.train_set), cfg.train.seed, epoch, d.rank, d.world, skip=skip),
        num_workers=cfg.data.workers,
        collate_fn=collate,
        pin_memory=cfg.data.pin_memory and setup.device.type == "cuda",
        drop_last=len(setup.train_set) >= 2 * cfg.train.batch_size * d.world,
        generator=torch.Generator().manual_seed(cfg.train.seed * 7919 + epoch * 131 + d.rank),  # worker seeds
    )


@torch.no_grad()
def calibrate(setup: Setup, controller: CurriculumController, batch: torch.Tensor, autocast: Any = None) -> None:
    """Layer skipping: score the untrained student against every teacher block on one batch.

    ``batch`` is in float32 on the device; the student sees it under ``autocast`` as in training and
    the teacher in its own dtype (half precision under AMP with teacher_half).
    """
    metric = METRICS[setup.cfg.curriculum.metric]
    teacher_dtype = next(setup.teacher.parameters()).dtype
    setup.model.eval()
    with autocast or nullcontext():
        patch, _ = setup.model(batch)
        teacher_out = setup.teacher.all_blocks(batch.to(teacher_dtype))
    setup.model.train()
    scores = [metric(patch, t.patch) for t in teacher_out]
    scores = setup.dist.mean_list(scores, setup.device)
    start = controller.calibrate(scores, images=len(batch) * setup.dist.world)
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
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def save_checkpoint(setup: Setup, optimizer, scaler, controller, state: dict[str, Any]) -> None:
    """Everything --resume needs, written atomically (temporary file, fsync, rename)."""
    payload = {
        "leapkit_version": __version__,
        "student": setup.model.student.state_dict(),
        "head": setup.model.head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "curriculum": controller.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "state": dict(state),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = setup.run_dir / rundir.CHECKPOINT
    try:
        rundir.atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise RunError(
            f"cannot write the checkpoint {path} ({e.strerror or e}); the previous checkpoint is intact: "
            f"free space or fix permissions, then `leapkit distill --resume --out {setup.run_dir}`"
        ) from e


def save_student(setup: Setup) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in setup.model.student.state_dict().items()}
    rundir.atomic_write_bytes(setup.run_dir / rundir.STUDENT, save(tensors, metadata={"leapkit_version": __version__}))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint being resumed from."""
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
        rundir.atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())


def distill(config: Config | None, out: str | Path | None = None, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run LEAP (or the fixed-target baseline) distillation and return the run summary.

    Args:
        config: the resolved config (see leapkit.config.resolve_config); with ``resume`` it may be
            None to continue with the run's saved config.
        out: run directory; default runs/<recipe>-<mode>-<timestamp>.
        resume: continue the run in ``out`` (default runs/latest) from its last checkpoint.
        overwrite: replace an existing run in ``out``.
        show_progress: draw a rich progress bar (rank 0 only).
    """
    start = time.perf_counter()
    setup = prepare(config, out, resume, overwrite)
    try:
        summary = _train(setup, overwrite, show_progress)
    finally:
        shutdown(setup.dist)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)  # this invocation: setup, training, evaluation
    if setup.dist.is_main:
        rundir.write_json(setup.run_dir / rundir.SUMMARY, summary)
    return summary


def _train(setup: Setup, overwrite: bool, show_progress: bool) -> dict[str, Any]:
    cfg, device, d, model, teacher = setup.cfg, setup.device, setup.dist, setup.model, setup.teacher
    main = d.is_main
    if main:
        if overwrite and setup.run_dir.exists():
            shutil.rmtree(setup.run_dir)
        setup.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, setup.run_dir / rundir.CONFIG)
        rundir.point_latest(setup.run_dir)

    model.to(device).train()
    dtype = amp_dtype(cfg, device)
    teacher.to(device, dtype=dtype if dtype is not None and cfg.train.teacher_half else None)
    teacher_dtype = next(teacher.parameters()).dtype
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.enabled else model
    forward = torch.compile(ddp) if cfg.train.compile else ddp
    optimizer = build_optimizer(cfg.optim, [model])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    c = cfg.curriculum
    controller = CurriculumController(teacher.num_blocks, c.mode, c.threshold, c.ema_alpha, c.max_epochs_per_block, c.snap_to_last_at)
    metric = METRICS[c.metric]
    batches_per_epoch = len(make_loader(setup, 0))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.optim.accum_steps)
    total_steps = cfg.train.epochs * steps_per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    # Counters are global (summed over ranks). epoch_samples: samples consumed in the current epoch.
    state = {"epoch": 0, "epoch_samples": 0, "step": 0, "restart_step": 0, "teacher_block_images": 0, "images": 0, "skipped": 0, "seconds": 0.0}

    if setup.resume_state is not None:
        ck = setup.resume_state
        model.student.load_state_dict(ck["student"])
        model.head.load_state_dict(ck["head"])
        optimizer.load_state_dict(ck["optimizer"])
        if scaler is not None and ck["scaler"]:
            scaler.load_state_dict(ck["scaler"])
        controller.load_state_dict(ck["curriculum"])
        state.update(ck["state"])
        torch.set_rng_state(ck["rng_torch"])
        if ck["rng_cuda"] and torch.cuda.is_available() and not d.enabled:
            torch.cuda.set_rng_state_all(ck["rng_cuda"])
        if main:
            _truncate_metrics(setup.run_dir / rundir.METRICS, state["step"])
        log.info("resuming %s at epoch %d, step %d", setup.run_dir, state["epoch"], state["step"])
    else:
        first = next(iter(make_loader(setup, 0)))
        if first.images.numel() == 0:
            raise DataError("the first batch held no readable image; check the data folder for corrupt files")
        if c.mode == "leap" and c.calibrate:
            calibrate(setup, controller, first.images.to(device), autocast)
            state["teacher_block_images"] += teacher.num_blocks * len(first.images) * d.world
        else:
            controller.calibration = {"scores": [], "start_block": controller.block, "images": 0}

    metrics_file = (setup.run_dir / rundir.METRICS).open("a") if main else None
    progress = _progress(show_progress and main)
    task = progress.add_task("distill", total=total_steps, completed=state["step"], info="")
    try:
        with progress, StopRequested() as stop:
            for epoch in range(state["epoch"], cfg.train.epochs):
                if state["epoch_samples"] == 0:
                    torch.manual_seed(cfg.train.seed * 1_000_003 + epoch * 101 + d.rank)  # augmentations, drop path
                loader = make_loader(setup, epoch, skip=state["epoch_samples"] // d.world)
                tic, micro, step_images = time.perf_counter(), 0, 0
                stopping = False
                for i, batch in enumerate(loader):
                    state["skipped"] += batch.skipped * d.world
                    if batch.images.numel() == 0:
                        continue
                    k = controller.block
                    x = batch.images.to(device, non_blocking=True)
                    with torch.no_grad(), autocast:
                        target = teacher(x.to(teacher_dtype), k)  # early exit: blocks k+1..L never run
                    last_micro = micro + 1 == cfg.optim.accum_steps or i == len(loader) - 1
                    with (ddp.no_sync() if d.enabled and not last_micro else nullcontext()), autocast:
                        patch, cls = forward(x)
                        loss = distill_loss(patch, cls, target.patch, target.cls, c.cls_weight)
                    (scaler.scale(loss) if scaler else loss).div(cfg.optim.accum_steps).backward()
                    micro += 1
                    step_images += len(x) * d.world
                    state["epoch_samples"] += len(x) * d.world
                    state["images"] += len(x) * d.world
                    state["teacher_block_images"] += k * len(x) * d.world
                    if not last_micro:
                        continue

                    lr = lr_at(state["step"], total_steps, warmup_steps, cfg.optim.lr, cfg.optim.min_lr, state["restart_step"])
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    if scaler:
                        scaler.unscale_(optimizer)
                    if cfg.optim.clip_grad:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                    loss_value, score = d.mean_list([loss.item(), metric(patch.detach(), target.patch)], device)
                    if not math.isfinite(loss_value):
                        raise TrainingDiverged(
                            f"non-finite loss at step {state['step'] + 1} (epoch {epoch}, block {k}); the last good checkpoint is kept: "
                            f"lower optim.lr or the clipping threshold, then --resume"
                        )
                    scaler.step(optimizer) if scaler else optimizer.step()
                    if scaler:
                        scaler.update()
                    optimizer.zero_grad(set_to_none=True)

                    state["step"] += 1
                    epoch_pos = epoch + min(1.0, state["epoch_samples"] / (batches_per_epoch * cfg.train.batch_size * d.world))
                    event = controller.update(score, state["step"], epoch_pos)
                    if event is not None:
                        log.info("level-up at step %d (epoch %.2f): block %d -> %d (%s, ema %.3f)", event.step, event.epoch, event.from_block, event.to_block, event.reason, event.ema)
                        if cfg.optim.lr_restart:
                            state["restart_step"] = state["step"]
                    elapsed = time.perf_counter() - tic
                    state["seconds"] += elapsed
                    row = {
                        "step": state["step"], "epoch": round(epoch_pos, 4), "loss": loss_value, "cka": score,
                        "ema_cka": event.ema if event else controller.ema, "target_block": k, "lr": lr,
                        "teacher_blocks_run": k, "images": step_images, "images_per_s": step_images / max(elapsed, 1e-9),
                    }
                    if metrics_file:
                        metrics_file.write(json.dumps(row) + "\n")
                        metrics_file.flush()
                    progress.update(task, advance=1, info=f"ep {epoch + 1}/{cfg.train.epochs} loss {loss_value:.4f} cka {score:.3f} block {k}/{teacher.num_blocks} {row['images_per_s']:.0f} img/s")
                    tic, micro, step_images = time.perf_counter(), 0, 0
                    if d.any(stop.signal is not None, device):
                        stopping = True
                        break
                if stopping:
                    if main:
                        save_checkpoint(setup, optimizer, scaler, controller, {**state, "epoch": epoch})
                    d.barrier()
                    raise Interrupted(
                        f"stopped by a signal at step {state['step']}; checkpoint written, continue with "
                        f"`leapkit distill --resume --out {setup.run_dir}`"
                    )
                state.update(epoch=epoch + 1, epoch_samples=0)
                if main:
                    save_checkpoint(setup, optimizer, scaler, controller, state)
                    rundir.write_json(setup.run_dir / rundir.CURRICULUM, controller.summary())
                log.info("epoch %d/%d done: block %d, ema %.3f", epoch + 1, cfg.train.epochs, controller.block, controller.ema)
    finally:
        if metrics_file:
            metrics_file.close()

    if state["images"] == 0:
        raise DataError(f"every image in the data was unreadable ({state['skipped']} skipped); check the files under {cfg.data.path}")
    log.info("rank %d of %d: blocks visited %s", d.rank, d.world, controller.blocks_visited)
    trajectories = d.gather([(e.step, e.to_block) for e in controller.level_ups])
    if any(t != trajectories[0] for t in trajectories):
        raise RunError(f"ranks disagree on the curriculum ({trajectories}); this is a bug, please report it")
    if main:
        save_student(setup)
        rundir.write_json(setup.run_dir / rundir.CURRICULUM, controller.summary())
    summary = summarize(setup, controller, state)
    d.barrier()
    return summary


def summarize(setup: Setup, controller: CurriculumController, state: dict[str, Any]) -> dict[str, Any]:
    """What summary.json records; the closing evaluation runs on rank 0 only."""
    cfg = setup.cfg
    baseline = controller.num_blocks * state["images"]
    summary: dict[str, Any] = {
        "run_dir": str(setup.run_dir),
        "mode": cfg.curriculum.mode,
        "world_size": setup.dist.world,
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
    if setup.dist.is_main:
        summary.update(training_flops(setup, state["seconds"]))
    if cfg.train.eval_at_end and setup.dist.is_main:
        from leapkit.evaluate import evaluate_model, labelled_splits

        try:
            train_set, val_set = labelled_splits(cfg)
        except DataError as e:
            log.info("no labelled split for the closing evaluation (%s)", e)
        else:
            summary["eval"] = evaluate_model(setup.model.student.eval(), train_set, val_set, device=setup.device)
    return summary


# Dense bf16/fp16 tensor-core peaks (TFLOP/s) from NVIDIA's datasheets, for model FLOP utilisation.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "RTX 4090": 165.2}


def training_flops(setup: Setup, seconds: float) -> dict[str, Any]:
    """The run's training FLOPs (flops.json) against the baseline's, the achieved rate and, on a known GPU, MFU."""
    from leapkit.flops import run_flops

    f = run_flops(setup.run_dir, export_batch=1, write=True)
    out: dict[str, Any] = {
        "train_flops": f["train_flops_run"],
        "train_flops_baseline": f["train_flops_baseline"],
        "train_flops_saving_pct": f["train_flops_saving_pct"],
        "achieved_tflops_per_s": round(f["train_flops_run"] / max(seconds, 1e-9) / 1e12, 4),
    }
    if setup.device.type == "cuda":
        name = torch.cuda.get_device_name(setup.device)
        peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
        if peak:
            out["mfu_pct"] = round(100 * out["achieved_tflops_per_s"] / (peak * setup.dist.world), 2)
    return out


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled,
    )
