"""The LEAP curriculum: progress metrics, the start-block scan's choice and the level-up controller.

The controller is a plain object: it sees the start-block scan's scores (the untrained student
against every teacher block), then one similarity score per step and the fractional epoch, decides
the teacher block to imitate, and knows nothing of optimizers or data loaders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

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


@dataclass
class LevelUp:
    step: int
    epoch: float
    from_block: int
    to_block: int
    ema: float
    reason: Literal["threshold", "max_epochs", "snap"]


@dataclass
class CurriculumController:
    """Chooses the teacher block (1-indexed) the student imitates.

    Args:
        num_blocks: number of teacher blocks L.
        mode: 'leap' climbs blocks; 'baseline' targets block L from the first step.
        threshold: level up once the smoothed score reaches it.
        ema_alpha: smoothing weight of the newest score (1 = no smoothing).
        max_epochs_per_block: level up after this many epochs on one block regardless.
        snap_to_last_at: once this block is reached, jump straight to block L.
    """

    num_blocks: int
    mode: Mode = "leap"
    threshold: float = 0.85
    ema_alpha: float = 1.0
    max_epochs_per_block: float = 5.0
    snap_to_last_at: int | None = None
    block: int = 1
    ema: float = 0.0
    block_start_epoch: float = 0.0
    start_scan: dict[str, Any] = field(default_factory=dict)
    """The start-block scan: ``scores`` (one per teacher block), ``start_block`` and the ``images`` scanned."""
    level_ups: list[LevelUp] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.mode == "baseline":
            self.block = self.num_blocks

    @property
    def at_last(self) -> bool:
        return self.block == self.num_blocks

    def scan_start_block(self, scores: list[float], images: int = 0) -> int:
        """Start at the teacher block the untrained student already matches best (layer skipping).

        Args:
            scores: the start-block scan's score of each teacher block, in block order.
            images: the images the scan ran on (over all ranks), for the FLOPs account.
        """
        if len(scores) != self.num_blocks:
            raise ValueError(f"expected {self.num_blocks} start-block scan scores, got {len(scores)}")
        if self.mode == "leap":
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
        if self.ema >= self.threshold:
            reason = "threshold"
        elif epoch - self.block_start_epoch >= self.max_epochs_per_block:
            reason = "max_epochs"
        else:
            return None
        return self._advance(self.block + 1, step, epoch, reason)

    def _smooth(self, score: float) -> float:
        return self.ema_alpha * score + (1.0 - self.ema_alpha) * self.ema

    def _advance(self, to_block: int, step: int, epoch: float, reason: str) -> LevelUp:
        event = LevelUp(step, epoch, self.block, to_block, self.ema, reason)
        self.level_ups.append(event)
        self.block, self.ema, self.block_start_epoch = to_block, 0.0, epoch
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
            "calibration": self.start_scan,  # the file's name for the start-block scan
            "level_ups": [asdict(e) for e in self.level_ups],
            "blocks_visited": self.blocks_visited,
            "final_block": self.block,
        }
