"""The latency-model fit's file: a target's efficiencies fitted to microbenchmarks, the machine, the date.

    ~/.config/leapkit/calibration/<target>.json             the profile's runtime
    ~/.config/leapkit/calibration/<target>-<runtime>.json   another of the target's runtimes (openvino)

(``$XDG_CONFIG_HOME`` respected; ``--out`` for elsewhere.)

The fit is a non-negative least-squares of each microbenchmark's time on its work counts
(:mod:`leapkit.planning.workload`), weighted so that every microbenchmark counts by its relative
error: a fast one weighs as much as a slow one. Its range is the leave-one-out error: each
microbenchmark predicted by a fit to the others, the 90th percentile of the absolute errors.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from leapkit import __version__
from leapkit.errors import ConfigError, RunError
from leapkit.planning import workload
from leapkit.planning.latency_model import Efficiencies
from leapkit.planning.shape import VitShape
from leapkit.records import Record
from leapkit.tables import Table, fmt
from leapkit.types import Precision

MIN_RANGE = 1.05  # timing noise alone moves a CPU latency by a few percent between runs
RANGE_QUANTILE = 90


@dataclass
class Sample(Record):
    """One microbenchmark timed on the target: its shape, precision and median latency.

    Args:
        name: the microbenchmark's name.
        shape: the small ViT's :class:`VitShape` fields.
        precision: the graph's precision.
        measured_ms: median latency.
        fitted_ms: what the fit predicts for it.
        loo_ms: what a fit to the other microbenchmarks predicts for it.
    """

    name: str
    shape: dict[str, Any]
    precision: Precision
    measured_ms: float
    fitted_ms: float | None = None
    loo_ms: float | None = None

    def vit(self) -> VitShape:
        return VitShape(**self.shape)


@dataclass
class LatencyFit(Record):
    """``<target>.json``: the fitted efficiencies of a target and runtime, per precision, and how they were made.

    Args:
        target: the target profile's name.
        created: when (UTC, ISO 8601).
        environment: the machine's fingerprint (:func:`leapkit.latency.machine.environment`).
        runtime: what ran the microbenchmarks (onnxruntime, openvino or tensorrt).
        threads: CPU threads of the runtime (None on a GPU).
        efficiencies: fitted per precision.
        ranges: per precision, the factor either side of a prediction.
        samples: every microbenchmark with its fitted and leave-one-out prediction.
        method: how the microbenchmarks were timed.
        leapkit_version: the leapkit that wrote the file.
    """

    FILE: ClassVar[str] = "calibration.json"

    target: str
    created: str
    environment: dict[str, Any]
    runtime: str
    threads: int | None
    efficiencies: dict[str, Efficiencies]
    ranges: dict[str, float]
    samples: list[Sample] = field(default_factory=list)
    method: str = ""
    leapkit_version: str = __version__

    @classmethod
    def read(cls, path: Path) -> LatencyFit:
        """Load a latency-model fit.

        Raises:
            ConfigError: the file is missing or is not a latency-model fit.
        """
        if not Path(path).is_file():
            raise ConfigError(f"calibration file {path} not found; run leapkit calibrate --target TARGET")
        try:
            return cls.load(Path(path))
        except RunError as e:
            raise ConfigError(f"{path} is not a leapkit calibration ({e}); run leapkit calibrate again") from e


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/leapkit`` (default ``~/.config/leapkit``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "leapkit"


def default_path(target: str, runtime: str | None = None) -> Path:
    """Where ``leapkit calibrate --target T`` writes and every prediction for T looks.

    Args:
        target: the target's name.
        runtime: another of the target's runtimes than its profile's ``runtime``: ``calibration/<T>-<runtime>.json``;
            None (the profile's own): ``calibration/<T>.json``.
    """
    return config_dir() / "calibration" / (f"{target}.json" if runtime is None else f"{target}-{runtime}.json")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _design(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """The work counts (rows) and measured seconds of the samples."""
    rows = np.array([workload.total(s.vit()).vector() for s in samples], dtype=np.float64)
    return rows, np.array([s.measured_ms * 1e-3 for s in samples], dtype=np.float64)


def _solve(rows: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the relative error of every row."""
    from scipy.optimize import nnls

    weighted = rows / seconds[:, None]
    scale = np.abs(weighted).max(axis=0)
    scale[scale == 0] = 1.0
    theta, _ = nnls(weighted / scale, np.ones(len(seconds)), maxiter=1000)
    return theta / scale


def fit(samples: list[Sample], precision: Precision) -> tuple[Efficiencies, float]:
    """Efficiencies fitted to ``samples`` of one precision, and the range factor from leave-one-out errors.

    Fills each sample's ``fitted_ms`` and ``loo_ms``.

    Raises:
        ConfigError: fewer microbenchmarks than the model has coefficients.
    """
    rows, seconds = _design(samples)
    if len(samples) < rows.shape[1]:
        raise ConfigError(f"{len(samples)} {precision} microbenchmarks cannot fit {rows.shape[1]} coefficients; "
                          f"time at least {rows.shape[1]} (the default grid has enough)")
    theta = _solve(rows, seconds)
    errors = []
    for i, s in enumerate(samples):
        s.fitted_ms = float(rows[i] @ theta * 1e3)
        keep = np.arange(len(samples)) != i
        s.loo_ms = float(rows[i] @ _solve(rows[keep], seconds[keep]) * 1e3)
        errors.append(abs(math.log(s.loo_ms / s.measured_ms)) if s.loo_ms > 0 else math.inf)
    spread = float(np.percentile([e for e in errors if math.isfinite(e)] or [0.0], RANGE_QUANTILE))
    return Efficiencies.from_coefficients(tuple(theta), precision), max(MIN_RANGE, math.exp(spread))


def fit_table(fitted: LatencyFit) -> Table:
    """Per precision: the fitted rates and fixed costs, and how well they reproduce the microbenchmarks."""
    env = fitted.environment
    table = Table.of(
        "precision", "GEMM GFLOP/s", "attention GFLOP/s", "weights GB/s", "ns / element (token, hidden, score)",
        "us / block", "us / inference", "leave-one-out error (median, max)", "range",
        title=f"latency-model fit of {fitted.target} ({fitted.runtime}) on {env.get('host') or 'the device'} "
              f"({fitted.created[:10]})",
        caption=f"{len(fitted.samples)} microbenchmark timings; {fitted.method}. Range: the leave-one-out "
                f"error's {RANGE_QUANTILE}th percentile, as a factor either side of a prediction.",
        right=("GEMM GFLOP/s", "attention GFLOP/s", "weights GB/s", "ns / element (token, hidden, score)",
               "us / block", "us / inference", "range"),
    )
    for precision, e in fitted.efficiencies.items():
        errors = [abs(s.loo_ms / s.measured_ms - 1) for s in fitted.samples
                  if s.precision == precision and s.loo_ms is not None and s.measured_ms > 0]
        spread = f"{100 * np.median(errors):.0f} %, {100 * max(errors):.0f} %" if errors else "-"
        table.add(precision, fmt(e.gemm_gflops, ".1f"), fmt(e.attention_gflops, ".1f"), fmt(e.weight_gbs, ".1f"),
                  f"{e.token_ns:.3g}, {e.hidden_ns:.3g}, {e.score_ns:.3g}", f"{e.block_us:.1f}",
                  f"{e.inference_us:.1f}", spread, f"x{fitted.ranges.get(precision, 0):.2f}")
    return table
