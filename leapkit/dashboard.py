"""Training dashboards: TensorBoard scalars of a distillation run, beside its metrics.jsonl.

metrics.jsonl is the record that every later stage reads; the dashboard shows the same rows where
people follow training (``tensorboard --logdir runs``). With ``train.log`` (``--log``) at ``auto``
and the ``tensorboard`` package installed (``pip install 'leapkit[tensorboard]'``), or at
``tensorboard``, ``RUN/tensorboard/`` receives at every optimizer step:

    train/loss, train/lr, train/images_per_s, train/data_wait_frac (the share of the step spent waiting for data)
    curriculum/cka and curriculum/ema_cka (cosine and ema_cosine with that metric), curriculum/target_block
    flops/run, flops/baseline   cumulative training FLOPs of the run and of its fixed-target baseline
    flops/saving_pct            the saving so far (negative while the start-block scan is not paid back)

and each level-up as text under ``curriculum/level_up``. The FLOPs are counted as
:func:`leapkit.flops.cumulative_train_flops` counts them from metrics.jsonl, so the last point
matches flops.json. A resumed run continues the same log: its writer starts a session at the step
after the checkpoint, and TensorBoard hides the steps logged after that checkpoint before the
restart, which the resumed run logs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from leapkit.errors import MissingDependency
from leapkit.types import METRICS

if TYPE_CHECKING:
    from leapkit.config import Config, LogBackend
    from leapkit.curriculum import LevelUp
    from leapkit.flops import StepCosts
    from leapkit.types import Mode

log = logging.getLogger(__name__)

FOLDER = "tensorboard"
LEVEL_UP = "curriculum/level_up"

SCALARS: dict[str, str] = {
    "loss": "train/loss",
    "lr": "train/lr",
    "images_per_s": "train/images_per_s",
    "data_wait_frac": "train/data_wait_frac",
    "target_block": "curriculum/target_block",
    **{key: f"curriculum/{key}" for m in METRICS for key in (m, f"ema_{m}")},
}
"""The metrics.jsonl keys shown as scalars, and their TensorBoard tags."""

FLOPS_RUN, FLOPS_BASELINE, FLOPS_SAVING = "flops/run", "flops/baseline", "flops/saving_pct"
_LAYOUT = {"training FLOPs": {"this run vs the fixed-target baseline": ["Multiline", [FLOPS_RUN, FLOPS_BASELINE]]}}


class Dashboard(Protocol):
    """Where the training loop shows its steps, besides metrics.jsonl."""

    def log_step(self, row: dict[str, Any]) -> None: ...

    def log_level_up(self, event: LevelUp) -> None: ...

    def close(self) -> None: ...


class NoDashboard:
    """``--log none``, and every rank but 0 under torchrun: nothing is shown."""

    def log_step(self, row: dict[str, Any]) -> None:
        pass

    def log_level_up(self, event: LevelUp) -> None:
        pass

    def close(self) -> None:
        pass


def backend(choice: LogBackend) -> Literal["tensorboard", "none"]:
    """What ``train.log`` resolves to here: ``auto`` is TensorBoard when its package imports.

    Raises:
        MissingDependency: ``tensorboard`` was asked for and the package is not installed.
    """
    if choice == "none":
        return "none"
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package)
    except ImportError as e:
        if choice == "tensorboard":
            raise MissingDependency("tensorboard", "tensorboard", "--log tensorboard (train.log)") from e
        log.debug("no TensorBoard log: the tensorboard package does not import (%s)", e)
        return "none"
    return "tensorboard"


@dataclass
class FlopsCurve:
    """Cumulative training MACs of a run and of its fixed-target baseline, one step at a time.

    Each step costs what :func:`leapkit.flops.train_macs` says it costs; the run's total starts
    with the start-block scan, as in :func:`leapkit.flops.cumulative_train_flops`.
    """

    costs: StepCosts
    mode: Mode
    default_images: int
    run: int = 0
    baseline: int = 0

    @classmethod
    def start(cls, cfg: Config, scan_images: int, rows: list[dict[str, Any]]) -> FlopsCurve:
        """The curve of ``cfg``'s model pair after the steps in ``rows`` (those before a resume)."""
        from leapkit.flops import step_costs, train_macs

        costs, _, _ = step_costs(cfg)
        mode, images = cfg.curriculum.mode, cfg.train.batch_size
        run = train_macs(rows, costs, mode, scan_images, default_images=images).total
        baseline = train_macs(rows, costs, "baseline", default_images=images).total
        return cls(costs, mode, images, run, baseline)

    def add(self, row: dict[str, Any]) -> tuple[int, int]:
        """Count one metrics.jsonl row; returns the cumulative FLOPs (run, baseline) after it."""
        from leapkit.flops import FLOPS_PER_MAC, train_macs

        self.run += train_macs([row], self.costs, self.mode, default_images=self.default_images).total
        self.baseline += train_macs([row], self.costs, "baseline", default_images=self.default_images).total
        return FLOPS_PER_MAC * self.run, FLOPS_PER_MAC * self.baseline


class TensorBoardDashboard:
    """Scalars and level-up text in TensorBoard's event files, through its own writer.

    Args:
        folder: the event file folder (``RUN/tensorboard``).
        flops: the FLOPs curve, counted up to the step the log starts after.
        start_step: the optimizer steps already taken (0, or the checkpoint's step on resume).
    """

    def __init__(self, folder: Path, flops: FlopsCurve, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.flops = flops
        # A session start at the first new step: TensorBoard hides what an earlier session logged
        # from that step on (the steps a crash lost from the checkpoint, and that run again).
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1)
        if start_step == 0:
            self.writer.add_custom_scalars(_LAYOUT)

    def log_step(self, row: dict[str, Any]) -> None:
        step = row["step"]
        for key, tag in SCALARS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], step)
        run, baseline = self.flops.add(row)
        self.writer.add_scalar(FLOPS_RUN, run, step)
        self.writer.add_scalar(FLOPS_BASELINE, baseline, step)
        self.writer.add_scalar(FLOPS_SAVING, 100.0 * (1 - run / baseline), step)

    def log_level_up(self, event: LevelUp) -> None:
        text = (
            f"step {event.step} (epoch {event.epoch:.2f}): block {event.from_block} -> {event.to_block} "
            f"({event.reason}, ema {event.ema:.3f})"
        )
        self.writer.add_text(LEVEL_UP, text, event.step)

    def close(self) -> None:
        self.writer.close()


def open_dashboard(
    choice: LogBackend, run_dir: Path, cfg: Config, start_step: int, scan_images: int
) -> Dashboard:
    """The dashboard ``train.log`` asks for, continuing the log of a resumed run.

    Args:
        choice: ``train.log``.
        run_dir: the run directory; its metrics.jsonl holds the steps up to ``start_step``.
        cfg: the run's config (the model pair, for the FLOPs).
        start_step: the optimizer steps already taken.
        scan_images: images in the start-block scan (0 when there was none).

    Raises:
        MissingDependency: ``tensorboard`` was asked for and the package is not installed.
    """
    if backend(choice) == "none":
        return NoDashboard()
    import torch

    from leapkit.run import read_metrics

    rows = [r for r in read_metrics(run_dir) if r["step"] <= start_step]
    with torch.random.fork_rng(devices=[]):  # building the models to count them leaves training's random stream alone
        flops = FlopsCurve.start(cfg, scan_images, rows)
    log.info("TensorBoard log: %s (tensorboard --logdir %s)", run_dir / FOLDER, run_dir.parent)
    return TensorBoardDashboard(run_dir / FOLDER, flops, start_step)
