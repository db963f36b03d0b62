"""The latency model's forecast for each benched result, and the forecast against the target's measurement.

    Forecaster.of(profile).attach(result, shape)      predicted_ms, predicted_range_ms, prediction_source
    forecasts(plan, student, reports) -> [Forecast]   each prediction with the target's p50, and
    comparison_table(forecasts) -> Table              them as report.md's "Prediction against measurement"

Each result gets the target's prediction (:mod:`leapkit.planning.latency_model`) at the result's
precision and batch, read from its model: an ONNX file from its graph, an OpenVINO IR or a TensorRT
engine from the export's ``model.onnx`` beside it (the same graph, compiled), the PyTorch student
from the model itself. The target has a model for its profile's runtime (calibrated or published) and
one for each other runtime it deploys with that has a calibration (``leapkit calibrate --runtime
openvino``); a result is predicted with its own runtime's model. Like the lower bound, the prediction
is for the target, whatever machine timed the result: away from the target (evidence ``estimated``)
it is the best figure there is, the profile runtime's model standing in for a runtime without one. It
never changes the verdict. A target without a latency model for the precision, or a graph that is not
a plain ViT, leaves the result without a prediction (one debug line says why).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from leapkit.deploy.onnx_graph import FILE_NAMES
from leapkit.errors import ConfigError
from leapkit.latency.artifacts import Artifact
from leapkit.latency.records import BenchReport, BenchResult
from leapkit.planning.latency_model import LatencyModel, Prediction
from leapkit.planning.shape import VitShape, of_model, of_onnx
from leapkit.planning.target_model import model_for
from leapkit.tables import Table, fmt
from leapkit.types import Precision

if TYPE_CHECKING:
    from torch import nn

    from leapkit.config import PlanConfig
    from leapkit.profiles import TargetProfile

log = logging.getLogger(__name__)

GRAPH = FILE_NAMES["fp32"]  # the export's fp32 graph: every variant of an export has its shape


def graph_of(art: Artifact) -> Path | None:
    """The ONNX graph the latency model reads for ``art``: the file itself, or the export's graph beside an
    OpenVINO IR or an engine; None for the PyTorch student or when there is none."""
    if art.path is None:
        return None
    if art.format == "onnx":
        return art.path
    graph = art.path.parent / GRAPH
    return graph if graph.is_file() else None


@dataclass
class Forecaster:
    """The target's latency models, one per runtime, and the shapes read so far, each graph read once.

    Args:
        models: per runtime (none: the target has no model).
        target: the target's name, for log lines.
        runtime: the profile's runtime, whose model stands in for a runtime without one away from the target.
    """

    models: dict[str, LatencyModel]
    target: str
    runtime: str
    shapes: dict[Path, VitShape | None] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> LatencyModel | None:
        """The model of the profile's runtime (None: it has none)."""
        return self.models.get(self.runtime)

    @classmethod
    def of(cls, profile: TargetProfile, calibration: Path | None = None) -> Forecaster:
        """The profile runtime's model (its calibration, else the published efficiencies) and every other runtime's
        calibration found.

        Args:
            profile: the target.
            calibration: a calibration file for the profile's runtime (default: the target's own).
        """
        from leapkit.planning.fit_file import default_path

        models: dict[str, LatencyModel] = {}
        try:
            models[profile.runtime] = model_for(profile, calibration)
        except ConfigError as e:
            unreadable = calibration is not None or default_path(profile.name).is_file()  # the user meant one
            log.log(logging.WARNING if unreadable else logging.DEBUG, "no latency prediction for %s: %s",
                    profile.name, e)
        for runtime in profile.deploy_runtimes:
            if runtime != profile.runtime and default_path(profile.name, runtime).is_file():
                try:
                    models[runtime] = model_for(profile, runtime=runtime)
                except ConfigError as e:  # a file the user wrote: say so, and bench on without it
                    log.warning("no %s latency prediction for %s: %s", runtime, profile.name, e)
        return cls(models, profile.name, profile.runtime)

    def graph_shape(self, path: Path) -> VitShape | None:
        """The ViT shape of an exported graph; None (one debug line) when it is not a plain ViT."""
        if path not in self.shapes:
            try:
                self.shapes[path] = of_onnx(path)
            except Exception as e:  # a prediction is an extra: a graph it cannot read must not stop a bench
                log.debug("no latency prediction for %s: %s", path.name, e)
                self.shapes[path] = None
        return self.shapes[path]

    def shape_for(self, art: Artifact, student: nn.Module | None = None, img_size: int | None = None
                  ) -> VitShape | None:
        """The shape of what ``art`` runs: the student at ``img_size`` for ``pytorch``, else its graph's; None
        without a latency model to use it."""
        if not self.models:
            return None
        if art.format == "pytorch":
            if student is None:
                return None
            try:
                return of_model(student, img_size, "the PyTorch student")
            except Exception as e:  # as for a graph: no prediction, never a failed bench
                log.debug("no latency prediction for the PyTorch student: %s", e)
                return None
        graph = graph_of(art)
        if graph is None:
            log.debug("no latency prediction for %s: no %s beside it to read its shape from", art.name, GRAPH)
            return None
        return self.graph_shape(graph)

    def predict(self, shape: VitShape | None, precision: str, batch: int, runtime: str | None = None
                ) -> Prediction | None:
        """The target's prediction for ``shape`` with the model of ``runtime`` (default: the profile's); None without
        that model, a shape, or efficiencies at ``precision``."""
        model = self.models.get(runtime or self.runtime)
        if model is None or shape is None:
            return None
        if precision not in model.efficiencies:
            log.debug("no latency prediction for %s %s: the %s latency model of %s has %s efficiencies only",
                      shape.label, precision, model.runtime, self.target, ", ".join(model.precisions) or "no")
            return None
        return model.predict(shape, cast(Precision, precision), batch)

    def attach(self, result: BenchResult, shape: VitShape | None, measured_here: bool = False) -> Prediction | None:
        """Set ``result``'s prediction fields from :meth:`predict` at its precision and batch; return it.

        The source of a prediction by another model than the profile runtime's starts with its runtime
        (``openvino: calibrated on host, 2026-05-01``).

        Args:
            result: the result.
            shape: what it runs.
            measured_here: this host is the target. Its results in a runtime no model's timings describe
                (OpenVINO without an OpenVINO calibration, the PyTorch student) get no prediction: the
                forecast is not of what they ran. Away from the target every result gets the target's
                forecast for its model and precision, from its runtime's model where there is one.
        """
        runtime = result.runtime if result.runtime in self.models else self.runtime
        if measured_here and self.models and runtime != result.runtime:
            log.debug("no latency prediction for %s: the latency models of %s describe %s, not %s", result.label,
                      self.target, ", ".join(self.models), result.runtime)
            return None
        p = self.predict(shape, result.precision, result.batch, runtime)
        if p is not None:
            result.predicted_ms, result.predicted_range_ms = p.ms, [p.low_ms, p.high_ms]
            result.prediction_source = p.source if runtime == self.runtime else f"{runtime}: {p.source}"
        return p


# --- against the measurement ------------------------------------------------------------------------------------------

COMPARISON_COLUMNS = ("predicted by", "target", "model", "precision", "predicted ms (range)", "measured p50 ms",
                      "measured / predicted", "in range")


@dataclass
class Forecast:
    """One prediction and the target's measurement it is checked against (None: ``why`` says what is missing)."""

    by: str
    target: str
    model: str
    precision: str
    ms: float
    low_ms: float
    high_ms: float
    measured_ms: float | None
    why: str = ""

    @property
    def ratio(self) -> float | None:
        return self.measured_ms / self.ms if self.measured_ms is not None and self.ms > 0 else None

    def landed(self) -> str:
        """``yes``, ``no, above``/``no, below`` the range, or why there is no measurement."""
        if self.measured_ms is None:
            return self.why or f"not measured on {self.target}"
        if self.measured_ms > self.high_ms:
            return "no, above"
        return "no, below" if self.measured_ms < self.low_ms else "yes"


def plan_match(plan: PlanConfig, report: BenchReport) -> BenchResult | None:
    """The result of ``report`` that measured what the plan predicted: its precision, the judged format
    first, a deployed format before the PyTorch student."""
    ran = [r for r in report.results if r.precision == plan.precision and r.p50_ms is not None]
    return min(ran, key=lambda r: (r.label != report.gated, r.format == "pytorch"), default=None)


def forecasts(plan: PlanConfig | None, student: str, reports: Sequence[BenchReport]) -> list[Forecast]:
    """The plan's prediction (``--student auto``) and every bench result's, each with the target's p50.

    A p50 counts only from a report of the target's own figures (evidence measured or imported); a
    result of such a report that did not run is left out.
    """
    out = []
    if plan is not None and plan.target and plan.predicted_ms is not None and plan.predicted_range_ms:
        report = next((b for b in reports if b.target == plan.target), None)
        match = plan_match(plan, report) if report is not None and report.judged_here else None
        why = (f"not benched for {plan.target}" if report is None else "" if report.judged_here
               else f"not measured on {plan.target}")
        low, high = plan.predicted_range_ms
        out.append(Forecast("distill --student auto", plan.target, student, plan.precision or "-", plan.predicted_ms,
                            low, high, match.p50_ms if match else None,
                            why or f"no {plan.precision} result in bench/{plan.target}.json"))
    for b in reports:
        for r in b.results:
            if r.predicted_ms is None or not r.predicted_range_ms or (b.judged_here and r.p50_ms is None):
                continue
            low, high = r.predicted_range_ms
            out.append(Forecast("bench", b.target, r.label, r.precision, r.predicted_ms, low, high,
                                r.p50_ms if b.judged_here else None))
    return out


def comparison_table(rows: Sequence[Forecast]) -> Table:
    """The forecasts against the target's measurements, one row each."""
    table = Table.of(*COMPARISON_COLUMNS, right=("predicted ms (range)", "measured p50 ms", "measured / predicted"))
    for f in rows:
        landed = f.landed()
        table.add(f.by, f.target, f.model, f.precision, f"{f.ms:.3g} ({f.low_ms:.3g}-{f.high_ms:.3g})",
                  fmt(f.measured_ms, ".3f"), fmt(f.ratio, ".2f"), landed,
                  style={"yes": "green", "no, above": "red", "no, below": "yellow"}.get(landed))
    return table
