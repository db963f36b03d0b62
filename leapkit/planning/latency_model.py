"""Latency of a ViT on a target, predicted from its layers with per-target efficiencies, with a range.

    time = gemm_flops / gemm rate + weights x width / weight bandwidth + attention_flops / attention rate
         + scores x score_ns + token_elements x token_ns + hidden_elements x hidden_ns
         + blocks x block_us + inference_us

(the counts are :mod:`leapkit.planning.workload`'s). The efficiencies (:class:`Efficiencies`) come from
one of two places, and every prediction says which:

- a calibration of the target (``leapkit calibrate --target T``, :mod:`leapkit.planning.fit`): fitted to
  microbenchmarks of small ViTs timed on the target itself, never to the models being predicted (the nn-Meter
  approach);
- else the profile's ``latency_model`` section: fractions of the profile's peaks set from published
  measurements on that device, each cited there.

Which of the two a target gets is :func:`leapkit.planning.target_model.model_for`'s choice.

A model describes one runtime: the profile's ``runtime`` by default; another of the target's runtimes
(OpenVINO on a CPU target) has its own calibration (``leapkit calibrate --target T --runtime openvino``)
and no published fallback.

The range is the fit's leave-one-out error on its microbenchmarks, or the profile's stated
factor; it is the spread a prediction is expected to land within, not a bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from leapkit.errors import ConfigError
from leapkit.planning import workload
from leapkit.planning.shape import VitShape
from leapkit.records import Record
from leapkit.types import BYTES_PER_ELEMENT, PRECISIONS, Precision, TargetRuntime

if TYPE_CHECKING:
    from leapkit.profiles import PublishedEfficiency, TargetProfile


@dataclass
class Efficiencies(Record):
    """Rates and fixed costs of one target at one precision; None leaves that kind of work uncounted.

    Args:
        gemm_gflops: GFLOP/s the weight GEMMs reach.
        attention_gflops: GFLOP/s of Q K^T and attn V.
        weight_gbs: GB/s at which weights stream (at the precision's width).
        score_ns: nanoseconds per attention score.
        token_ns: nanoseconds per element of each token-wide elementwise op.
        hidden_ns: nanoseconds per MLP hidden element.
        block_us: microseconds per block.
        inference_us: microseconds per inference.
    """

    gemm_gflops: float | None
    attention_gflops: float | None
    weight_gbs: float | None
    score_ns: float = 0.0
    token_ns: float = 0.0
    hidden_ns: float = 0.0
    block_us: float = 0.0
    inference_us: float = 0.0

    def coefficients(self, precision: Precision) -> tuple[float, ...]:
        """Seconds per unit of each :data:`leapkit.planning.workload.FEATURES` count."""

        def per(rate: float | None, scale: float) -> float:
            return scale / rate if rate else 0.0

        width = BYTES_PER_ELEMENT[precision]
        return (per(self.gemm_gflops, 1e-9), per(self.weight_gbs, width * 1e-9), per(self.attention_gflops, 1e-9),
                self.score_ns * 1e-9, self.token_ns * 1e-9, self.hidden_ns * 1e-9, self.block_us * 1e-6,
                self.inference_us * 1e-6)

    @classmethod
    def from_coefficients(cls, theta: tuple[float, ...] | list[float], precision: Precision) -> Efficiencies:
        """The inverse of :meth:`coefficients` (a zero coefficient leaves that work uncounted)."""
        gemm, weight, attention, score, token, hidden, block, inference = (float(t) for t in theta)
        width = BYTES_PER_ELEMENT[precision]

        def rate(coef: float, scale: float) -> float | None:
            return scale / coef if coef > 0 else None

        return cls(rate(gemm, 1e-9), rate(attention, 1e-9), rate(weight, width * 1e-9), score * 1e9, token * 1e9,
                   hidden * 1e9, block * 1e6, inference * 1e6)

    def seconds(self, work: workload.Work, precision: Precision) -> float:
        return sum(c * x for c, x in zip(self.coefficients(precision), work.vector(), strict=True))


def published_efficiencies(e: PublishedEfficiency, profile: TargetProfile, precision: Precision) -> Efficiencies:
    """A profile's published fractions of its peaks as rates (see :class:`leapkit.profiles.PublishedEfficiency`).

    Raises:
        ConfigError: the profile has no peak for ``precision``.
    """
    peak = profile.bound_ops(precision)
    if not peak:
        raise ConfigError(f"target {profile.name} has no peak_tops.{precision}; the latency model cannot use "
                          f"its latency_model.{precision} efficiencies")
    width = BYTES_PER_ELEMENT[precision]
    bandwidth = e.memory * profile.memory_bandwidth_gbs  # GB/s
    ns = width / bandwidth  # ns per element crossing memory once
    return Efficiencies(
        gemm_gflops=e.gemm * peak / 1e9, attention_gflops=e.attention * peak / 1e9, weight_gbs=bandwidth,
        score_ns=e.score_passes * ns, token_ns=e.token_passes * ns, hidden_ns=e.hidden_passes * ns,
        block_us=e.block_us, inference_us=e.inference_us,
    )


@dataclass
class Prediction(Record):
    """A predicted latency and its range.

    Args:
        ms: the prediction.
        low_ms: the low end of the range.
        high_ms: the high end.
        calibrated: from a latency-model fit on the target (else from the profile's published efficiencies).
        source: where the efficiencies come from, in one line.
        target: the target profile's name.
        precision: the precision predicted for.
        model: the model, as named or read.
        img_size: its input size.
        batch: images per inference.
        parts_ms: the prediction split by part of the model (:data:`leapkit.planning.workload.PARTS`).
    """

    ms: float
    low_ms: float
    high_ms: float
    calibrated: bool
    source: str
    target: str
    precision: Precision
    model: str
    img_size: int
    batch: int = 1
    parts_ms: dict[str, float] = field(default_factory=dict)

    @property
    def range_ms(self) -> tuple[float, float]:
        return self.low_ms, self.high_ms

    def describe(self) -> str:
        """``12.3 ms (9.8-15.1, calibrated on host, 2026-05-01)`` for tables and logs."""
        return f"{self.ms:.3g} ms ({self.low_ms:.3g}-{self.high_ms:.3g}, {self.source})"


@dataclass(frozen=True)
class LatencyModel:
    """The efficiencies of one target, per precision, and where they come from.

    Args:
        target: the target profile's name.
        efficiencies: per precision.
        ranges: per precision, the factor either side of a prediction.
        calibrated: fitted on the target (else published).
        source: one line: the latency-model fit (host, date) or the profile's published measurements.
        runtime: the runtime whose timings the efficiencies describe (None: not recorded).
        sources: per precision, a line that replaces ``source`` for its predictions (a published precision
            that no measurement checks says it is unvalidated).
    """

    target: str
    efficiencies: dict[Precision, Efficiencies]
    ranges: dict[Precision, float]
    calibrated: bool
    source: str
    runtime: str | None = None
    sources: dict[Precision, str] = field(default_factory=dict)

    def source_of(self, precision: Precision) -> str:
        """Where the efficiencies of ``precision`` come from, in one line."""
        return self.sources.get(precision, self.source)

    @property
    def precisions(self) -> tuple[Precision, ...]:
        return tuple(p for p in PRECISIONS if p in self.efficiencies)

    def predict(self, shape: VitShape, precision: Precision, batch: int = 1) -> Prediction:
        """The latency of ``shape`` at ``precision`` and ``batch``, split by part, with its range.

        Raises:
            ConfigError: the model has no efficiencies for ``precision``.
        """
        if precision not in self.efficiencies:
            have = ", ".join(self.precisions) or "none"
            raise ConfigError(f"the latency model of {self.target} has no {precision} efficiencies ({self.source}; "
                              f"it has {have}); pick one of those or calibrate {precision} with leapkit calibrate")
        eff = self.efficiencies[precision]
        parts = {name: 1e3 * eff.seconds(w, precision) for name, w in workload.parts(shape, batch).items()}
        ms = sum(parts.values())
        factor = self.ranges.get(precision, 1.5)
        return Prediction(
            ms=ms, low_ms=ms / factor, high_ms=ms * factor, calibrated=self.calibrated,
            source=self.source_of(precision),
            target=self.target, precision=precision, model=shape.label, img_size=shape.img_size, batch=batch,
            parts_ms=parts,
        )


def published_model(profile: TargetProfile) -> LatencyModel | None:
    """The profile's ``latency_model`` section as a model, or None when it has none.

    A precision that no published measurement on the device sets or checks (``fit`` or ``check`` at that
    precision) is unvalidated, and every prediction at it says so in its source: its efficiencies are
    derived from the peaks (or another precision's fractions), with the wider range the profile states.
    """
    section = profile.latency_model
    if section is None:
        return None
    effs = {p: published_efficiencies(e, profile, p) for p, e in section.precisions.items()
            if profile.bound_ops(p)}
    cited = sorted({m.source for m in section.measurements if m.use == "fit"})
    source = (f"not calibrated: efficiencies from published measurements in the {profile.name} profile"
              + (f" ({len(cited)} source{'s' if len(cited) != 1 else ''})" if cited else ""))
    checked = {m.precision for m in section.measurements if m.use in ("fit", "check")}
    sources: dict[Precision, str] = {
        p: (f"not calibrated, unvalidated: no published {p} ViT measurement on {profile.name}; efficiencies "
            f"derived from its peaks in the profile")
        for p in effs if p not in checked
    }
    return LatencyModel(profile.name, effs, {p: e.range for p, e in section.precisions.items()}, False, source,
                        profile.runtime, sources)


def check_runtime(profile: TargetProfile, runtime: str | None) -> TargetRuntime:
    """``runtime`` (default: the profile's ``runtime``), one the target deploys with.

    Raises:
        ConfigError: a runtime that is not among the profile's ``deploy_runtimes``.
    """
    if runtime is None:
        return profile.runtime
    if runtime not in profile.deploy_runtimes:
        raise ConfigError(f"target {profile.name} deploys with {', '.join(profile.deploy_runtimes)}, not '{runtime}'; "
                          f"pass --runtime {' or '.join(profile.deploy_runtimes)}")
    return cast(TargetRuntime, runtime)
