"""LEAP distillation as a library call: :func:`distill` validates, trains and writes the run directory.

Everything that can be wrong (options, models, data, the output folder) is checked by
:func:`prepare` before the run directory is touched; the loop itself is :class:`leapkit.trainer.Trainer`.
The closing FLOPs and evaluation belong to the ``leapkit distill`` command (:mod:`leapkit.cli.distill`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import Dataset

from leapkit import run as rundir
from leapkit.config import Config, load_config
from leapkit.dashboard import backend
from leapkit.data import DigitsDataset, ImageFolderDataset, eval_transform, resolve_split, train_transform
from leapkit.devices import resolve_device
from leapkit.distributed import init_distributed, shutdown
from leapkit.errors import RunError
from leapkit.models import TruncatedTeacher, check_pair, create_student, create_teacher, grid_size, normalization
from leapkit.run import RunSummary, RunWriter, check_writable
from leapkit.trainer import Distiller, Setup, Trainer

log = logging.getLogger(__name__)


def build_train_set(cfg: Config, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """The training images the config names, with the training augmentation unless ``data.augment`` is off."""
    size, d = cfg.model.img_size, cfg.data
    if d.source == "digits":
        return DigitsDataset("train", size, mean, std, augment=d.augment, crop_scale=d.crop_scale)
    if d.augment:
        transform = train_transform(size, mean, std, d.crop_scale, d.hflip)
    else:
        transform = eval_transform(size, mean, std)
    return ImageFolderDataset(resolve_split(d.path, "train"), transform)


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    """--resume continues a run and --overwrite replaces it: never both."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one of them")


def resume_dir(out: str | Path | None) -> Path:
    """The run --resume continues: ``out`` or runs/latest."""
    if out is None and not rundir.latest_link().exists():
        raise RunError("nothing to resume: runs/latest does not exist; start a run without --resume")
    return rundir.resolve_run(out)


def prepare(cfg: Config | None, out: str | Path | None, resume: bool, overwrite: bool) -> Setup:
    """Validate everything that can be wrong before the run directory is touched."""
    check_resume_overwrite(resume, overwrite)
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
        check_writable(run_dir, overwrite)
    cfg.validate()
    backend(cfg.train.log)  # --log tensorboard without its package fails here, before anything is written

    d = init_distributed(cfg.train.device)
    run_dir = d.broadcast(run_dir)  # the timestamped name is rank 0's
    device = resolve_device(cfg.train.device, d.local_rank if d.enabled else None)
    teacher = create_teacher(cfg.model.teacher, cfg.model.img_size, weights=cfg.model.teacher_weights)
    torch.manual_seed(cfg.train.seed)  # student and head initialisation, identical on every rank
    student = create_student(cfg.model.student, cfg.model.img_size, drop_path_rate=cfg.model.drop_path)
    check_pair(teacher, student, cfg.model.img_size)
    train_set = build_train_set(cfg, *normalization(cfg.model.teacher))
    if len(train_set) < cfg.train.batch_size * d.world:
        global_batch = cfg.train.batch_size * d.world
        log.warning("the data holds %d images, fewer than one global batch of %d", len(train_set), global_batch)
    model = Distiller(student, teacher.embed_dim, grid_size(student), grid_size(teacher))
    return Setup(cfg, run_dir, device, d, TruncatedTeacher(teacher), model, train_set, resume_state)


def distill(
    config: Config | None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> RunSummary:
    """Run LEAP (or the fixed-target baseline) distillation, write the run directory, return its summary.

    The summary holds what training measured; ``leapkit distill`` adds the training FLOPs and the
    closing evaluation (see :mod:`leapkit.cli.distill`).

    Args:
        config: the resolved config (see leapkit.config.resolve_config); with ``resume`` it may be
            None to continue with the run's saved config.
        out: run directory; default runs/<recipe>-<mode>-<timestamp>.
        resume: continue the run in ``out`` (default runs/latest) from its last checkpoint.
        overwrite: replace the leapkit run in ``out``; a folder that is not a run is never deleted.
        show_progress: draw a rich progress bar (rank 0 only).
    """
    start = time.perf_counter()
    setup = prepare(config, out, resume, overwrite)
    writer = RunWriter(setup.run_dir, active=setup.dist.is_main)
    try:
        writer.start(setup.cfg, overwrite)
        trainer = Trainer(setup, writer)
        if setup.resume_state is not None:
            trainer.load_state_dict(setup.resume_state)
            writer.resume(trainer.state.step)
            log.info("resuming %s at epoch %d, step %d", setup.run_dir, trainer.state.epoch, trainer.state.step)
        else:
            trainer.calibrate()
        trainer.fit(show_progress)
        summary = trainer.summary()
    finally:
        shutdown(setup.dist)
    summary.wall_seconds = round(time.perf_counter() - start, 1)  # this invocation: setup and training
    writer.save_summary(summary)
    return summary
