"""What the training loop obeys besides the model: the order of the images in an epoch, and a request to stop.

:class:`EpochSampler` makes each epoch's order a pure function of (seed, epoch), sharded over the ranks,
so that a resumed run and every process agree on it; :class:`StopRequested` turns SIGTERM/SIGINT into a
flag the trainer checks after each step, so that a stop ends with a checkpoint, not a torn file.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A permutation that is a pure function of (seed, epoch), sharded over ranks.

    ``skip`` drops the first indices of this rank's share, to continue an interrupted epoch. The
    length is arithmetic: only iterating draws the permutation.
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
        return max(0, self.n // self.world - self.skip)


class StopRequested:
    """Turns SIGTERM/SIGINT into a flag checked after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
