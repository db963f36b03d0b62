"""The distillation loop: a :class:`Trainer` over the student, the truncated teacher and the curriculum.

Each optimizer step (:meth:`Trainer.train_step`) reads top to bottom: schedule, teacher forward up
to the target block, student forward and loss per micro-batch, backward, clip, step, curriculum
update, one metrics row. :meth:`Trainer.fit` runs the epochs with a checkpoint after each. Under
torchrun every rank runs the same loop on its shard; the step's score is averaged over ranks so
that every rank levels up at the same step, and only rank 0 writes (its
:class:`~leapkit.run.RunWriter` is the only active one, and only it opens a
:class:`~leapkit.dashboard.Dashboard`).

A metrics.jsonl row holds ``step``, ``epoch`` (fractional), ``loss`` and the score named for the
metric (``cka``/``ema_cka``, or ``cosine``/``ema_cosine``; both averaged over the step's
micro-batches and ranks), ``target_block``, ``lr``, ``teacher_blocks_run`` (teacher blocks each
image of the step went through: the target block, where the truncated teacher exits),
``images`` (over all ranks), ``images_per_s`` and ``data_wait_frac`` (the share of the step spent
waiting for the loader; an epoch above :data:`~leapkit.data.DATA_WAIT_WARN` is warned about once).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from leapkit import __version__
from leapkit.config import Config
from leapkit.curriculum import METRICS, CurriculumController
from leapkit.dashboard import Dashboard, NoDashboard, open_dashboard
from leapkit.data import (
    DATA_WAIT_WARN,
    Batch,
    DataWait,
    EpochSeeded,
    collate,
    data_wait_advice,
    resolve_workers,
)
from leapkit.distributed import Dist
from leapkit.errors import DataError, Interrupted, RunError, TrainingDiverged
from leapkit.host import amp_dtype
from leapkit.loop_control import EpochSampler, StopRequested
from leapkit.models import TruncatedTeacher, resize_tokens, student_tokens
from leapkit.optim import build_optimizer, lr_at, scaled_lr
from leapkit.run import RunSummary, RunWriter

log = logging.getLogger(__name__)


class Distiller(nn.Module):
    """The trainable part: the student and its projection head (kept across level-ups)."""

    def __init__(
        self, student: nn.Module, teacher_dim: int, student_grid: tuple[int, int], teacher_grid: tuple[int, int]
    ):
        super().__init__()
        self.student = student
        self.head = nn.Linear(student.embed_dim, teacher_dim)
        self.student_grid, self.teacher_grid = student_grid, teacher_grid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected student patch tokens on the teacher's grid (B, N_t, D_t) and CLS (B, D_t)."""
        tokens = student_tokens(self.student, x)
        patch = resize_tokens(tokens.patch, self.student_grid, self.teacher_grid)
        return self.head(patch), self.head(tokens.cls)


def distill_loss(
    patch: torch.Tensor, cls: torch.Tensor, target_patch: torch.Tensor, target_cls: torch.Tensor, cls_weight: float
) -> torch.Tensor:
    """MSE to the teacher's patch tokens, plus ``cls_weight`` times the MSE to its CLS token."""
    loss = F.mse_loss(patch.float(), target_patch.float())
    if cls_weight > 0:
        loss = loss + cls_weight * F.mse_loss(cls.float(), target_cls.float())
    return loss


@dataclass
class Setup:
    """Everything the trainer needs, built and validated before anything is written."""

    cfg: Config
    run_dir: Path
    device: torch.device
    dist: Dist
    teacher: TruncatedTeacher
    model: Distiller
    train_set: Dataset
    resume_state: dict[str, Any] | None


@dataclass
class TrainState:
    """The position and counters that survive a restart (besides weights, optimizer and curriculum).

    Counters are global: summed over ranks.
    """

    epoch: int = 0
    epoch_samples: int = 0
    """Samples consumed in the current epoch, readable or not (where a resumed epoch continues)."""
    step: int = 0
    restart_step: int = 0
    """The step the current cosine segment started at (LR restart at a level-up), else 0."""
    teacher_block_images: int = 0
    """Teacher block evaluations: blocks run x images, the start-block scan included."""
    images: int = 0
    skipped: int = 0
    """Image reads skipped as unreadable (a corrupt file counts once per epoch)."""
    unreadable: list[int] = field(default_factory=list)
    """The distinct dataset indices of unreadable files, over all ranks (merged at each checkpoint)."""
    seconds: float = 0.0
    data_wait_seconds: float = 0.0
    """Of ``seconds``, the time this rank's steps waited for the loader."""


class Trainer:
    """Distils the teacher into the student under the curriculum controller.

    Args:
        setup: the validated models, data and device from :func:`prepare`.
        writer: where the run directory is written (inactive on ranks other than 0).
    """

    def __init__(self, setup: Setup, writer: RunWriter):
        cfg, d = setup.cfg, setup.dist
        self.cfg, self.dist, self.device, self.writer, self.train_set = cfg, d, setup.device, writer, setup.train_set
        self.model = setup.model.to(self.device).train()
        self.dtype = amp_dtype(cfg.train.amp, self.device)
        half_teacher = self.dtype if cfg.train.teacher_half else None
        self.teacher = setup.teacher.to(self.device, dtype=half_teacher)
        self.teacher_dtype = next(self.teacher.parameters()).dtype
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=device_ids) if d.enabled else self.model
        self.forward = torch.compile(self.ddp) if cfg.train.compile else self.ddp
        self.optimizer = build_optimizer(cfg.optim, [self.model])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        c = cfg.curriculum
        self.controller = CurriculumController.from_config(self.teacher.num_blocks, c, cfg.train.epochs)
        self.metric_name, self.metric = c.metric, METRICS[c.metric]

        self.workers = resolve_workers(cfg.data.workers)
        self.seeded = EpochSeeded(setup.train_set) if self.workers > 0 else None
        self.epochs_loader: DataLoader | None = None  # full epochs share it: its worker processes persist
        self.batches_per_epoch = len(self.loader(0))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.optim.accum_steps)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.global_batch = cfg.train.batch_size * cfg.optim.accum_steps * d.world
        self.peak_lr = scaled_lr(cfg.optim.lr, self.global_batch, cfg.optim.scale_lr)
        self.min_lr = min(cfg.optim.min_lr, self.peak_lr)
        self.state = TrainState()
        self.unreadable: set[int] = set()  # this rank's, since the last merge into the state
        self.dashboard: Dashboard = NoDashboard()
        self.to_input = getattr(setup.train_set, "batch_transform", None) or (lambda x: x)  # uint8 -> normalised
        self.data_wait, self.data_wait_warned = DataWait(), False

    # --- data and precision ---------------------------------------------------------------------

    def loader(self, epoch: int, skip: int = 0) -> DataLoader:
        """This rank's batches of ``epoch``, without the first ``skip`` samples of its share.

        With worker processes, the full epochs share one loader whose workers persist, and each sample
        is augmented from its own seed (:class:`~leapkit.data.EpochSeeded`), set here for the epoch.
        """
        cfg, d, n = self.cfg, self.dist, len(self.train_set)
        if self.seeded is not None:
            self.seeded.set_seed(cfg.train.seed * 1_000_003 + epoch * 101 + d.rank)
        if skip == 0 and self.epochs_loader is not None:
            self.epochs_loader.sampler.epoch = epoch
            return self.epochs_loader
        loader = DataLoader(
            self.seeded if self.seeded is not None else self.train_set,
            batch_size=cfg.train.batch_size,
            sampler=EpochSampler(n, cfg.train.seed, epoch, d.rank, d.world, skip=skip),
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=cfg.data.pin_memory and self.device.type == "cuda",
            drop_last=n >= 2 * cfg.train.batch_size * d.world,
            persistent_workers=self.seeded is not None and skip == 0,
            generator=torch.Generator().manual_seed(cfg.train.seed * 7919 + epoch * 131 + d.rank),
        )
        if loader.persistent_workers:
            self.epochs_loader = loader
        return loader

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def sync(self, last: bool) -> AbstractContextManager[Any]:
        """DDP averages gradients on the last micro-batch of a step only."""
        return self.ddp.no_sync() if self.dist.enabled and not last else nullcontext()

    # --- the curriculum's start -----------------------------------------------------------------

    @torch.no_grad()
    def scan_start_block(self) -> None:
        """Layer skipping: score the untrained student against every teacher block on the first batch.

        The student sees the batch under autocast as in training, the teacher in its own dtype. In
        baseline mode, or with the scan off (``curriculum.calibrate: false``), the curriculum starts
        where its mode says.
        """
        first = next(iter(self.loader(0)))
        if first.images.numel() == 0:
            raise DataError(
                f"the first batch held no readable image; replace the corrupt files under {self.cfg.data.path}"
            )
        c, d = self.cfg.curriculum, self.dist
        if c.mode == "baseline" or not c.calibrate:
            return self.controller.skip_start_scan()
        x = self.to_input(first.images.to(self.device))
        self.model.eval()
        with self.autocast():
            patch, _ = self.model(x)
            blocks = self.teacher.all_blocks(x.to(self.teacher_dtype))
        self.model.train()
        scores = d.mean_list([self.metric(patch, t.patch) for t in blocks], self.device)
        self.controller.scan_start_block(scores, images=len(x) * d.world)
        self.state.teacher_block_images += self.teacher.num_blocks * len(x) * d.world

    # --- one optimizer step ---------------------------------------------------------------------

    def train_step(self, batches: Iterator[Batch], micro_steps: int, epoch: int) -> dict[str, Any] | None:
        """One optimizer step over the next ``micro_steps`` batches; returns its metrics row.

        Loss and score are averaged over the step's micro-batches and over ranks. Returns None when
        every image of the step was unreadable, on this rank or on another (no rank takes the step).
        """
        cfg, d, s = self.cfg, self.dist, self.state
        tic = time.perf_counter()
        micro = [next(batches) for _ in range(micro_steps)]
        wait = time.perf_counter() - tic
        s.epoch_samples += sum(len(b.images) + b.skipped for b in micro) * d.world
        s.skipped += sum(b.skipped for b in micro) * d.world
        self.unreadable.update(i for b in micro for i in b.unreadable)
        micro = [b for b in micro if b.images.numel() > 0]
        # Under DDP every rank must take the step or none: a rank that skipped it alone would leave the others
        # waiting in the gradient all-reduce until the process group times out.
        if d.any(not micro, self.device):
            if micro:
                log.warning("step %d skipped: another rank had no readable image in it", s.step + 1)
            return None

        k = self.controller.block
        lr = lr_at(s.step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr, s.restart_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses, scores, images, block_images = [], [], 0, 0
        for i, batch in enumerate(micro):
            x = self.to_input(batch.images.to(self.device, non_blocking=True))
            with torch.no_grad(), self.autocast():
                target = self.teacher(x.to(self.teacher_dtype), k)  # early exit: blocks k+1..L never run
            with self.sync(last=i == len(micro) - 1), self.autocast():
                patch, cls = self.forward(x)
                loss = distill_loss(patch, cls, target.patch, target.cls, cfg.curriculum.cls_weight)
            self.scaler.scale(loss / len(micro)).backward()
            losses.append(loss.detach())
            scores.append(self.metric(patch.detach(), target.patch))
            images += len(x) * d.world
            block_images += k * len(x) * d.world

        self.scaler.unscale_(self.optimizer)
        if cfg.optim.clip_grad:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        loss_value, score = d.mean_list([torch.stack(losses).mean().item(), sum(scores) / len(scores)], self.device)
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"non-finite loss at step {s.step + 1} (epoch {epoch}, block {k}); the last good checkpoint is kept: "
                f"lower optim.lr or the clipping threshold, then --resume"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

        s.step += 1
        s.images += images
        s.teacher_block_images += block_images
        epoch_pos = epoch + min(1.0, s.epoch_samples / (self.batches_per_epoch * cfg.train.batch_size * d.world))
        seen = len(self.controller.level_ups)
        self.controller.update(score, s.step, epoch_pos)
        level_ups = self.controller.level_ups[seen:]  # two when a level-up lands on snap_to_last_at
        for event in level_ups:
            log.info(
                "level-up at step %d (epoch %.2f): block %d -> %d (%s, ema %.3f)",
                event.step, event.epoch, event.from_block, event.to_block, event.reason, event.ema,
            )
            self.dashboard.log_level_up(event)
        if level_ups and cfg.optim.lr_restart:
            s.restart_step = s.step
        elapsed = time.perf_counter() - tic
        s.seconds += elapsed
        s.data_wait_seconds += wait
        self.data_wait.add(wait, elapsed)
        return {
            "step": s.step,
            "epoch": round(epoch_pos, 4),
            "loss": loss_value,
            self.metric_name: score,
            f"ema_{self.metric_name}": level_ups[0].ema if level_ups else self.controller.ema,
            "target_block": k,
            "lr": lr,
            "teacher_blocks_run": block_images // images,
            "images": images,
            "images_per_s": images / max(elapsed, 1e-9),
            "data_wait_frac": round(wait / max(elapsed, 1e-9), 4),
        }

    # --- the loop -------------------------------------------------------------------------------

    def fit(self, show_progress: bool = True) -> None:
        """Train to the last epoch, a checkpoint after each; then save the student and curriculum.json.

        Raises:
            Interrupted: SIGTERM or SIGINT arrived; a checkpoint of the last step was written first.
            TrainingDiverged: the loss became non-finite; the last epoch's checkpoint is kept.
        """
        cfg, d, s, c = self.cfg, self.dist, self.state, self.controller
        progress = _progress(show_progress and d.is_main)
        task = progress.add_task("distill", total=self.total_steps, completed=s.step, info="")
        try:
            self.dashboard = self.start_dashboard()
            with progress, StopRequested() as stop:
                for epoch in range(s.epoch, cfg.train.epochs):
                    s.epoch = epoch
                    if s.epoch_samples == 0:
                        torch.manual_seed(cfg.train.seed * 1_000_003 + epoch * 101 + d.rank)  # augmentations, drop path
                    loader = self.loader(epoch, skip=s.epoch_samples // d.world)
                    batches, remaining = iter(loader), len(loader)
                    while remaining > 0:
                        micro_steps = min(cfg.optim.accum_steps, remaining)
                        remaining -= micro_steps
                        row = self.train_step(batches, micro_steps, epoch)
                        if row is not None:
                            self.writer.log_step(row)
                            self.dashboard.log_step(row)
                            progress.update(task, advance=1, info=self._progress_info(row, epoch))
                        if d.any(stop.signal is not None, self.device):
                            self.merge_unreadable()
                            self.writer.save_checkpoint(self.state_dict())
                            d.barrier()
                            raise Interrupted(
                                f"stopped by a signal at step {s.step}; checkpoint written, continue with "
                                f"`leapkit distill --resume --out {self.writer.path}`"
                            )
                    s.epoch, s.epoch_samples = epoch + 1, 0
                    self.merge_unreadable()
                    self.writer.save_checkpoint(self.state_dict())
                    self.writer.save_curriculum(c.summary())
                    log.info("epoch %d/%d done: block %d, ema %.3f", epoch + 1, cfg.train.epochs, c.block, c.ema)
                    self.check_data_wait(epoch)
        finally:
            self.writer.close()
            self.dashboard.close()
            self.epochs_loader = None  # its persistent worker processes end with it, before the evaluation

        if s.images == 0:
            raise DataError(
                f"every image in the data was unreadable ({s.skipped} skipped); check the files under {cfg.data.path}"
            )
        log.info("rank %d of %d: blocks visited %s", d.rank, d.world, c.blocks_visited)
        trajectories = d.gather([(e.step, e.to_block) for e in c.level_ups])
        if any(t != trajectories[0] for t in trajectories):
            raise RunError(f"ranks disagree on the curriculum ({trajectories}); this is a bug, please report it")
        self.writer.save_student(self.model.student)
        self.writer.save_curriculum(c.summary())
        d.barrier()

    def merge_unreadable(self) -> None:
        """Fold every rank's unreadable files into the state, so that each file counts once (all ranks call it)."""
        gathered = self.dist.gather(sorted(self.unreadable))
        self.state.unreadable = sorted(set(self.state.unreadable).union(*gathered))
        self.unreadable.clear()

    def check_data_wait(self, epoch: int) -> None:
        """Warn, once per run and on rank 0, when the epoch's steps waited for the loader over 20% of their time."""
        frac, self.data_wait = self.data_wait.frac, DataWait()
        if frac > DATA_WAIT_WARN and not self.data_wait_warned and self.dist.is_main:
            decode = self.cfg.data.decode if self.cfg.data.source == "folder" and self.cfg.data.augment else None
            log.warning(data_wait_advice(frac, epoch, self.workers, decode))
            self.data_wait_warned = True

    def start_dashboard(self) -> Dashboard:
        """The dashboard ``train.log`` asks for, on rank 0; it continues from the current step."""
        if not self.dist.is_main:
            return NoDashboard()
        c = self.controller
        scan_images = int(c.start_scan.get("images", 0))
        dashboard = open_dashboard(self.cfg.train.log, self.writer.path, self.cfg, self.state.step, scan_images)
        if self.state.step == 0:
            for event in c.level_ups:  # a snap at the start-block scan levels up before the first step
                dashboard.log_level_up(event)
        return dashboard

    def _progress_info(self, row: dict[str, Any], epoch: int) -> str:
        return (
            f"ep {epoch + 1}/{self.cfg.train.epochs} loss {row['loss']:.4f} "
            f"{self.metric_name} {row[self.metric_name]:.3f} block {row['target_block']}/{self.teacher.num_blocks} "
            f"{row['images_per_s']:.0f} img/s"
        )

    # --- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything --resume needs: the checkpoint payload (tensors and plain types only)."""
        return {
            "leapkit_version": __version__,
            "student": self.model.student.state_dict(),
            "head": self.model.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),  # empty unless fp16 loss scaling is on
            "curriculum": self.controller.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "state": asdict(self.state),
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        """Continue from a checkpoint payload written by :meth:`state_dict`.

        Raises:
            RunError: the checkpoint does not fit the run's model or curriculum (its config.yaml
                was edited by hand, or the checkpoint belongs to another run).
        """
        try:
            self.model.student.load_state_dict(ck["student"])
            self.model.head.load_state_dict(ck["head"])
            self.optimizer.load_state_dict(ck["optimizer"])
            if ck["scaler"]:
                self.scaler.load_state_dict(ck["scaler"])
            self.controller.load_state_dict(ck["curriculum"])
            state = TrainState(**ck["state"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            # A size-mismatch report runs to dozens of lines; the cause is one: another model.
            run = self.writer.path
            raise RunError(
                f"{run / 'checkpoints' / 'last.pt'} does not fit the model in {run / 'config.yaml'} "
                f"({str(e).splitlines()[0][:120]}); restore the run's own config.yaml, or start a new run with --out "
                f"NEW_DIR"
            ) from e
        self.state = state
        torch.set_rng_state(ck["rng_torch"])
        if ck["rng_cuda"] and torch.cuda.is_available() and not self.dist.enabled:
            torch.cuda.set_rng_state_all(ck["rng_cuda"])

    def summary(self) -> RunSummary:
        """What the run did, for summary.json (:mod:`leapkit.evidence` adds FLOPs and evaluation)."""
        s, c = self.state, self.controller
        baseline = c.num_blocks * s.images
        return RunSummary(
            run_dir=str(self.writer.path),
            mode=self.cfg.curriculum.mode,
            world_size=self.dist.world,
            epochs=self.cfg.train.epochs,
            steps=s.step,
            train_seconds=round(s.seconds, 2),
            images_seen=s.images,
            images_per_s=round(s.images / max(s.seconds, 1e-9), 1),
            data_wait_frac=round(s.data_wait_seconds / max(s.seconds, 1e-9), 4),
            images_skipped=s.skipped,
            unreadable_files=len(s.unreadable),
            teacher_blocks=c.num_blocks,
            blocks_visited=c.blocks_visited,
            final_block=c.block,
            teacher_block_images=s.teacher_block_images,
            teacher_block_images_baseline=baseline,
            teacher_blocks_saved_pct=round(100.0 * (1 - s.teacher_block_images / baseline), 2),
            device=str(self.device),
            global_batch=self.global_batch,
            peak_lr=self.peak_lr,
        )


def _progress(enabled: bool) -> Any:
    from rich import progress as rp

    return rp.Progress(
        rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
        rp.TextColumn("{task.fields[info]}"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(), disable=not enabled,
    )
