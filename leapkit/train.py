"""LEAP distillation as a library call: :func:`distill` validates, trains and writes the run directory.

Everything that can be wrong (options, models, data, the output folder, the checkpoint of a resumed
run, ``--student auto``'s choice) is checked by :func:`prepare` and the trainer's set-up before the run
directory is touched; the loop itself is :class:`leapkit.trainer.Trainer`. Once training has finished,
:func:`leapkit.evidence.add_evidence` adds the training FLOPs, MFU and the closing evaluation to
summary.json: the library call and ``leapkit distill`` write the same run directory.

A run's config.yaml and summary.json change only when the work they describe goes ahead or has
succeeded: ``--resume`` refuses any change to what the run trains (:func:`check_resume`; only the
keys in :data:`leapkit.config.RESUMABLE` may change), and resuming a finished run with nothing left
to train (:func:`finished_summary`) changes no file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from leapkit import run as rundir
from leapkit.config import Config, PlanConfig, load_config, resume_changes
from leapkit.dashboard import backend
from leapkit.data import (
    BatchNormalize,
    CropDecoder,
    DigitsDataset,
    ImageFolderDataset,
    eval_transform,
    resolve_split,
    train_transform,
)
from leapkit.distributed import init_distributed, shutdown
from leapkit.errors import ConfigError, RunError
from leapkit.evidence import add_evidence
from leapkit.host import resolve_device
from leapkit.models import TruncatedTeacher, check_pair, create_student, create_teacher, grid_size, normalization
from leapkit.paths import require_writable
from leapkit.planning.plan import PlanRequest, choose_student
from leapkit.profiles import load_target
from leapkit.run import RunSummary, RunWriter, check_writable, load_checkpoint, student_readable
from leapkit.trainer import Distiller, Setup, Trainer

log = logging.getLogger(__name__)


def build_train_set(cfg: Config, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """The training images the config names, with the training augmentation unless ``data.augment`` is off.

    With ``data.decode: fast`` the augmentation reads the files itself (:class:`leapkit.data.CropDecoder`) and
    the batches are normalised on the training device.
    """
    size, d = cfg.model.img_size, cfg.data
    if d.source == "digits":
        return DigitsDataset("train", size, mean, std, augment=d.augment, crop_scale=d.crop_scale)
    root = resolve_split(d.path, "train")
    if d.augment and d.decode == "fast":
        decoder = CropDecoder(size, d.crop_scale, d.hflip)
        return ImageFolderDataset(root, decoder=decoder, batch_transform=BatchNormalize(mean, std))
    if d.augment:
        transform = train_transform(size, mean, std, d.crop_scale, d.hflip)
    else:
        transform = eval_transform(size, mean, std)
    return ImageFolderDataset(root, transform)


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    """--resume continues a run and --overwrite replaces it: never both."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one of them")


def resume_dir(out: str | Path | None) -> Path:
    """The run --resume continues: ``out`` or runs/latest, checked to hold a checkpoint."""
    if out is None and not rundir.latest_link().exists():
        raise RunError("nothing to resume: runs/latest does not exist; start a run without --resume")
    run_dir = rundir.resolve_run(out)
    if not (run_dir / rundir.CHECKPOINT).is_file():
        raise RunError(f"nothing to resume in {run_dir}: no {rundir.CHECKPOINT}; start a new run without --resume")
    return run_dir


def check_resume(run_dir: Path, cfg: Config | None) -> Config:
    """The config a resume of ``run_dir`` continues with: ``cfg``, checked against the run's config.yaml.

    Only the keys in :data:`leapkit.config.RESUMABLE` (epochs, per-process batch, device, precision,
    loader workers, logging, the data folder's path) may differ; anything else would make the run
    another run.

    Args:
        run_dir: the run being resumed.
        cfg: the config asked for, or None to continue with the run's own.

    Raises:
        ConfigError: ``cfg`` changes the recipe, the model, the curriculum or another key of the run;
            the one line names every such key with its old and new value.
    """
    saved = load_config(run_dir / rundir.CONFIG)
    if cfg is None:
        return saved
    changes = resume_changes(saved, cfg)
    if changes:
        raise ConfigError(
            f"--resume cannot change {', '.join(changes)}: drop those options to continue {run_dir}, or start a new "
            f"run with --out NEW_DIR"
        )
    return cfg


def auto_student(cfg: Config, target: str | None, budget_ms: float | None, resumed: bool = False) -> Config:
    """``cfg`` with ``model.student: auto`` resolved for ``target`` and the choice recorded in its ``plan`` section.

    The candidates are :mod:`leapkit.planning.candidates`' students at the run's resolution and every precision
    the target runs; the largest whose whole predicted range fits the budget is taken.

    Args:
        cfg: the config asked for; any other student is returned as is.
        target: the target profile the student must fit.
        budget_ms: the latency budget (default: the profile's).
        resumed: ``cfg`` continues a run, which keeps its own student.

    Raises:
        ConfigError: ``--target``/``--budget-ms`` without ``--student auto`` or the reverse, ``auto`` on a
            resumed run, or no candidate fits.
    """
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
    row, report = choose_student(PlanRequest(profile=profile, budget_ms=budget_ms, img_sizes=(cfg.model.img_size,)))
    log.info("--student auto: %s at %d px %s, predicted %.3g ms (%.3g-%.3g, %s) within %g ms on %s, largest of %d "
             "candidates", row.student, row.img_size, row.precision, row.predicted_ms, *row.predicted_range_ms,
             report.source, report.budget_ms, profile.name, len(report.rows))
    model = dataclasses.replace(cfg.model, student=row.student)
    plan = PlanConfig(target=profile.name, budget_ms=report.budget_ms, precision=row.precision,
                      predicted_ms=row.predicted_ms, predicted_range_ms=tuple(row.predicted_range_ms),
                      calibrated=report.calibrated, source=report.source, candidates=len(report.rows))
    return dataclasses.replace(cfg, model=model, plan=plan)


def _check_epochs(run_dir: Path, cfg: Config, state: dict[str, Any]) -> None:
    """A resume may extend a run, never cut it below the epochs its checkpoint has trained."""
    trained = int(state["epoch"]) + (1 if state.get("epoch_samples") else 0)
    if cfg.train.epochs < trained:
        raise ConfigError(
            f"--resume cannot shorten {run_dir} to {cfg.train.epochs} epochs: its checkpoint is in epoch {trained}; "
            f"pass --epochs {trained} or more"
        )


def finished_summary(run_dir: Path, cfg: Config) -> RunSummary | None:
    """The summary of ``run_dir`` when a resume with ``cfg`` has nothing left to do, else None.

    Finished means: the checkpoint closed epoch ``cfg.train.epochs``, and a readable student and a
    summary.json were written after it. A run whose student is damaged is not finished: resuming
    it writes the student again from the checkpoint.

    Raises:
        ConfigError: ``cfg`` asks for fewer epochs than the checkpoint has trained.
        RunError: the checkpoint is not readable.
    """
    summary_file = run_dir / rundir.SUMMARY
    if not (summary_file.is_file() and student_readable(run_dir / rundir.STUDENT)):
        return None
    try:
        summary = RunSummary.load(summary_file)
    except RunError:
        return None  # a damaged summary is written again by the resume
    if summary.epochs < cfg.train.epochs:
        return None  # extended: no need to read the checkpoint to know that work remains
    state = load_checkpoint(run_dir / rundir.CHECKPOINT)["state"]
    _check_epochs(run_dir, cfg, state)
    return summary if int(state["epoch"]) == cfg.train.epochs and not state.get("epoch_samples") else None


def prepare(cfg: Config | None, out: str | Path | None, resume: bool, overwrite: bool) -> Setup:
    """Validate everything that can be wrong before the run directory is touched.

    Raises:
        LeapkitError: bad options, an unwritable output folder, a resume that would change the run
            or a damaged checkpoint, models that do not fit, data without a readable image.
    """
    check_resume_overwrite(resume, overwrite)
    resume_state = None
    if resume:
        run_dir = resume_dir(out)
        cfg = check_resume(run_dir, cfg)
        require_writable(run_dir, "the resumed run", rundir.READ_ONLY_FIX)
        resume_state = load_checkpoint(run_dir / rundir.CHECKPOINT)
        _check_epochs(run_dir, cfg, resume_state["state"])
    else:
        if cfg is None:
            raise ValueError("a config is needed unless resuming")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(out) if out is not None else rundir.RUNS_DIR / f"{cfg.recipe}-{cfg.curriculum.mode}-{stamp}"
        check_writable(run_dir, overwrite)
        require_writable(run_dir, "the run", "pass --out DIR in a folder you can write to")
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
    if isinstance(train_set, ImageFolderDataset):
        train_set.check_readable()
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
    target: str | None = None,
    budget_ms: float | None = None,
) -> RunSummary:
    """Run LEAP (or the fixed-target baseline) distillation, write the run directory, return its summary.

    What ``leapkit distill`` does: ``model.student: auto`` is resolved (:func:`auto_student`), and
    the summary holds what training measured plus the closing evidence (training FLOPs, MFU and,
    with ``train.eval_at_end``, the evaluation; see :func:`leapkit.evidence.add_evidence`).

    Args:
        config: the resolved config (see leapkit.config.resolve_config); with ``resume`` it may be
            None to continue with the run's saved config.
        out: run directory; default runs/<recipe>-<mode>-<timestamp>.
        resume: continue the run in ``out`` (default runs/latest) from its last checkpoint.
        overwrite: replace the leapkit run in ``out``; a folder that is not a run is never deleted.
        show_progress: draw a rich progress bar (rank 0 only).
        target: with ``model.student: auto``, the target profile the student must fit.
        budget_ms: with ``model.student: auto``, the latency budget (default: the profile's).

    A resume of a finished run with nothing left to train returns the run's summary and changes no file.
    """
    start = time.perf_counter()
    check_resume_overwrite(resume, overwrite)
    if resume:
        run_dir = resume_dir(out)
        if config is not None:
            config = auto_student(config, target, budget_ms, resumed=True)
        config = check_resume(run_dir, config)
        finished = finished_summary(run_dir, config)
        if finished is not None:
            log.info("%s is already complete (%d epochs): nothing to do, no file changed; pass --epochs N to train it "
                     "further", run_dir, config.train.epochs)
            return finished
        out = run_dir
    elif config is not None:
        config = auto_student(config, target, budget_ms)
    setup = prepare(config, out, resume, overwrite)
    writer = RunWriter(setup.run_dir, active=setup.dist.is_main)
    try:
        trainer = Trainer(setup, writer)
        # The checkpoint is loaded, and a new run's start block scanned, before the first write: a run
        # that cannot start leaves its folder as it was (no stub, config.yaml unchanged, latest kept).
        if setup.resume_state is not None:
            trainer.load_state_dict(setup.resume_state)
        else:
            trainer.scan_start_block()
        writer.start(setup.cfg, overwrite)
        if setup.resume_state is not None:
            writer.resume(trainer.state.step)
            log.info("resuming %s at epoch %d, step %d", setup.run_dir, trainer.state.epoch, trainer.state.step)
        trainer.fit(show_progress)
        summary = trainer.summary()
    finally:
        shutdown(setup.dist)
    if writer.active:  # rank 0; a failure leaves no summary.json, so that --resume adds the evidence again
        summary = add_evidence(summary, setup.cfg)
    summary.wall_seconds = round(time.perf_counter() - start, 1)  # this invocation: setup, training, evidence
    writer.save_summary(summary)
    return summary
