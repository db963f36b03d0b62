"""The LEAP curriculum: progress metrics, the start-block scan's choice and the level-up controller.

The controller is a plain object: it sees the start-block scan's scores (the untrained student
against every teacher block), then one similarity score per step and the fractional epoch, decides
the teacher block to imitate, and knows nothing of optimizers or data loaders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Any, Literal

import torch
import torch.nn.functional as F

from leapkit.config import CurriculumConfig
from leapkit.types import Metric, Mode

log = logging.getLogger(__name__)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).float()


@torch.no_grad()
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two token sets, in the feature-space form (no N x N Gram matrix).

    Args:
        x: (..., D1) features; leading dims are flattened into rows (e.g. B*N tokens).
        y: (..., D2) features with the same number of rows.

    Returns:
        ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F) with X, Y column-centred, computed in float32.
    """
    with torch.autocast(x.device.type, enabled=False):
        x, y = _flat(x), _flat(y)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"CKA needs the same number of rows, got {x.shape[0]} and {y.shape[0]}")
        x = x - x.mean(0, keepdim=True)
        y = y - y.mean(0, keepdim=True)
        cross = (x.T @ y).square().sum()
        norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
        return (cross / norm.clamp_min(1e-12)).item()


@torch.no_grad()
def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine similarity between corresponding tokens of two (..., D) tensors."""
    with torch.autocast(x.device.type, enabled=False):
        return F.cosine_similarity(_flat(x), _flat(y), dim=-1).mean().item()


METRICS: dict[Metric, Callable[[torch.Tensor, torch.Tensor], float]] = {"cka": linear_cka, "cosine": mean_cosine}


LevelUpReason = Literal["threshold", "plateau", "schedule", "max_epochs", "snap"]
"""Why a level-up happened: the score reached the threshold (leap), the score stopped improving (plateau), the
block's fixed share of the epochs ended (progressive), the per-block epoch cap (leap, plateau), snap-to-last."""


@dataclass
class LevelUp:
    step: int
    epoch: float
    from_block: int
    to_block: int
    ema: float
    reason: LevelUpReason
    gain: float | None = None
    """plateau: the relative gain of the last window's mean score over the window before it."""


@dataclass
class CurriculumController:
    """Chooses the teacher block (1-indexed) the student imitates.

    The rules, by mode (the score is the smoothed metric, ``ema``; it restarts at 0 on every block):

    - ``baseline``: block L from the first step, never changes.
    - ``leap``: level up when the score reaches ``threshold``, or after ``max_epochs_per_block``.
    - ``progressive``: the blocks from the start block to L each get an equal, fixed share of
      ``epochs``; block b ends at the first step at or past its share's end. No gate.
    - ``plateau``: with W = ``plateau_window`` and m1, m2 the mean scores of the W updates before
      the last W and of the last W on the current block, level up once the block has 2W updates and
      m2 - m1 < ``plateau_tolerance`` x |m1| (the score stopped improving); or after
      ``max_epochs_per_block``.

    Args:
        num_blocks: number of teacher blocks L.
        mode: the rule above.
        threshold: leap's level-up score.
        ema_alpha: smoothing weight of the newest score (1 = no smoothing).
        max_epochs_per_block: leap's and plateau's safety net: level up after this many epochs on one block.
        snap_to_last_at: once this block is reached, jump straight to block L.
        plateau_window: plateau's W, in score updates (optimizer steps).
        plateau_tolerance: plateau's relative gain below which the score has stopped improving.
        epochs: the run's length in epochs, which progressive shares among its blocks.
    """

    num_blocks: int
    mode: Mode = "leap"
    threshold: float = 0.85
    ema_alpha: float = 1.0
    max_epochs_per_block: float = 5.0
    snap_to_last_at: int | None = None
    plateau_window: int = 10
    plateau_tolerance: float = 0.01
    epochs: float = 0.0
    block: int = 1
    ema: float = 0.0
    block_start_epoch: float = 0.0
    block_scores: list[float] = field(default_factory=list)
    """plateau: the last 2W scores on the current block."""
    start_scan: dict[str, Any] = field(default_factory=dict)
    """The start-block scan: ``scores`` (one per teacher block), ``start_block`` and the ``images`` scanned."""
    level_ups: list[LevelUp] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.plateau_window < 1 or self.plateau_tolerance < 0:
            raise ValueError(f"plateau needs window >= 1 and tolerance >= 0, got {self.plateau_window}, "
                             f"{self.plateau_tolerance}")
        if self.mode == "baseline":
            self.block = self.num_blocks

    @classmethod
    def from_config(cls, num_blocks: int, cfg: CurriculumConfig, epochs: float) -> CurriculumController:
        """The controller of a run's ``curriculum`` section, for a run of ``epochs`` epochs."""
        return cls(num_blocks, cfg.mode, cfg.threshold, cfg.ema_alpha, cfg.max_epochs_per_block, cfg.snap_to_last_at,
                   cfg.plateau_window, cfg.plateau_tolerance, float(epochs))

    @property
    def at_last(self) -> bool:
        return self.block == self.num_blocks

    @property
    def block_epochs(self) -> float | None:
        """progressive: each block's share of the epochs (None in the other modes)."""
        if self.mode != "progressive":
            return None
        return self.epochs / (self.num_blocks - self.start_scan.get("start_block", 1) + 1)

    def scan_start_block(self, scores: list[float], images: int = 0) -> int:
        """Start at the teacher block the untrained student already matches best (layer skipping).

        Args:
            scores: the start-block scan's score of each teacher block, in block order.
            images: the images the scan ran on (over all ranks), for the FLOPs account.
        """
        if len(scores) != self.num_blocks:
            raise ValueError(f"expected {self.num_blocks} start-block scan scores, got {len(scores)}")
        if self.mode != "baseline":
            self.block = max(range(self.num_blocks), key=lambda i: scores[i]) + 1
            self._maybe_snap(step=0, epoch=0.0)
        self.start_scan = {"scores": [float(s) for s in scores], "start_block": self.block, "images": images}
        log.info("start-block scan: start at teacher block %d of %d (scores %s)",
                 self.block, self.num_blocks, " ".join(f"{s:.2f}" for s in scores))
        return self.block

    def skip_start_scan(self) -> None:
        """Start where the mode says (block 1, or L for the baseline): no scan ran."""
        self.start_scan = {"scores": [], "start_block": self.block, "images": 0}

    def update(self, score: float, step: int, epoch: float) -> LevelUp | None:
        """Feed one step's score; returns the level-up it caused, if any.

        Args:
            score: the step's similarity between projected student and current target.
            step: optimizer step just taken (for the record).
            epoch: fractional epoch at the end of that step.
        """
        self.ema = self._smooth(score)
        if self.mode == "baseline" or self.at_last:
            return None
        gain = self._plateau_gain() if self.mode == "plateau" else None
        reason = self._reason(epoch, gain)
        return None if reason is None else self._advance(self.block + 1, step, epoch, reason, gain)

    def _reason(self, epoch: float, gain: float | None) -> LevelUpReason | None:
        """Why the current block ends at this update, or None while it continues."""
        if self.mode == "progressive":
            return "schedule" if epoch >= self._share_end() else None
        if self.mode == "leap" and self.ema >= self.threshold:
            return "threshold"
        if gain is not None and gain < self.plateau_tolerance:
            return "plateau"
        if epoch - self.block_start_epoch >= self.max_epochs_per_block:
            return "max_epochs"
        return None

    def _smooth(self, score: float) -> float:
        return self.ema_alpha * score + (1.0 - self.ema_alpha) * self.ema

    def _plateau_gain(self) -> float | None:
        """The relative gain (m2 - m1) / |m1| of the last window over the one before, once there are two."""
        w = self.plateau_window
        self.block_scores = [*self.block_scores, self.ema][-2 * w:]
        if len(self.block_scores) < 2 * w:
            return None
        before, recent = fmean(self.block_scores[:w]), fmean(self.block_scores[w:])
        return (recent - before) / max(abs(before), 1e-12)

    def _share_end(self) -> float:
        """progressive: the epoch at which the current block's share ends."""
        start = self.start_scan.get("start_block", 1)
        return (self.block - start + 1) * (self.block_epochs or 0.0)

    def _advance(self, to_block: int, step: int, epoch: float, reason: LevelUpReason,
                 gain: float | None = None) -> LevelUp:
        event = LevelUp(step, epoch, self.block, to_block, self.ema, reason, gain)
        self.level_ups.append(event)
        self.block, self.ema, self.block_start_epoch, self.block_scores = to_block, 0.0, epoch, []
        return self._maybe_snap(step, epoch) or event

    def _maybe_snap(self, step: int, epoch: float) -> LevelUp | None:
        if self.snap_to_last_at is not None and self.snap_to_last_at <= self.block < self.num_blocks:
            return self._advance(self.num_blocks, step, epoch, "snap")
        return None

    @property
    def blocks_visited(self) -> list[int]:
        start = self.start_scan.get("start_block", self.level_ups[0].from_block if self.level_ups else self.block)
        return [start] + [e.to_block for e in self.level_ups]

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's curriculum state; the scan under its curriculum.json name, ``calibration``."""
        state = asdict(self)
        state["calibration"] = state.pop("start_scan")
        state["level_ups"] = [asdict(e) for e in self.level_ups]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, "start_scan" if key == "calibration" else key, value)
        self.level_ups = [LevelUp(**e) for e in state.get("level_ups", [])]

    def summary(self) -> dict[str, Any]:
        """What curriculum.json records (its ``calibration`` key holds the start-block scan)."""
        return {
            "mode": self.mode,
            "num_blocks": self.num_blocks,
            "threshold": self.threshold,
            "ema_alpha": self.ema_alpha,
            "max_epochs_per_block": self.max_epochs_per_block,
            "plateau_window": self.plateau_window,
            "plateau_tolerance": self.plateau_tolerance,
            "epochs": self.epochs,
            "block_epochs": self.block_epochs,
            "calibration": self.start_scan,  # the file's name for the start-block scan
            "level_ups": [asdict(e) for e in self.level_ups],
            "blocks_visited": self.blocks_visited,
            "final_block": self.block,
        }
