"""The Runner protocol every runtime answers, the exported graph's tensor names, and batching over a runner.

Every runner answers two questions about the same exported backbone:

    runner(x) -> {"tokens": ..., "cls": ..., "patch_tokens": ...}   outputs of one batch, as numpy
    runner.timed(x) -> fn                                            fn() runs one inference on x,
                                                                      staged once, for the timer

Export uses the first (parity, accuracy), bench the second (latency).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from leapkit.types import Runtime

INPUT_NAME = "images"
OUTPUT_NAMES = ("tokens", "cls", "patch_tokens")

Outputs = dict[str, np.ndarray]


class Runner(Protocol):
    """A loaded model ready to run batches of (B, 3, H, W) float32 images."""

    runtime: Runtime
    device: str
    providers: list[str]

    def __call__(self, x: np.ndarray) -> Outputs: ...

    def timed(self, x: np.ndarray) -> Callable[[], None]: ...

    def close(self) -> None: ...


def batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``images`` cut into consecutive batches of ``batch_size`` (the last one shorter)."""
    return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


def run_batched(runner: Callable[[np.ndarray], Outputs], images: np.ndarray, batch_size: int = 32) -> Outputs:
    """The outputs of ``images`` run ``batch_size`` at a time, concatenated."""
    parts = [runner(x) for x in batches(images, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
