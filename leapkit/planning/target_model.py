"""Which latency model a target gets: its latency-model fit when there is one, else its profile's published
efficiencies; and a prediction for an exported graph or a model with it.

    model_for(profile, calibration=None, runtime=None) -> LatencyModel
    predict_onnx(model.onnx | nn.Module, profile) -> Prediction

The model's maths is :mod:`leapkit.planning.latency_model`; the fit's file, written by ``leapkit
calibrate``, is :mod:`leapkit.planning.fit_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from leapkit.deploy.graph_precision import graph_precision
from leapkit.errors import ConfigError
from leapkit.planning.fit_file import LatencyFit, default_path
from leapkit.planning.latency_model import LatencyModel, Prediction, check_runtime, published_model
from leapkit.planning.shape import of_model, of_onnx
from leapkit.types import Precision

if TYPE_CHECKING:
    from torch import nn

    from leapkit.profiles import TargetProfile


def fitted_model(fitted: LatencyFit) -> LatencyModel:
    """A latency-model fit's efficiencies as a model."""
    host = fitted.environment.get("host") or "unknown host"
    source = f"calibrated on {host}, {fitted.created[:10]}"
    return LatencyModel(fitted.target, dict(fitted.efficiencies), dict(fitted.ranges), True, source,
                        fitted.runtime)


def model_for(profile: TargetProfile, calibration: Path | str | None = None, runtime: str | None = None
              ) -> LatencyModel:
    """The latency model of a target and runtime: its latency-model fit when there is one, else (for the profile's own
    runtime only) the profile's published efficiencies.

    Args:
        profile: the target.
        calibration: a latency-model fit's file (``leapkit calibrate``); default: the user's file for the target
            and runtime
            (:func:`leapkit.planning.fit_file.default_path`), when it exists.
        runtime: one of the target's runtimes (default: the profile's ``runtime``).

    Raises:
        ConfigError: a runtime the target does not deploy with; the given file is missing, for another
            target or another runtime; no calibration for a runtime other than the profile's; the target
            has neither a calibration nor a ``latency_model`` section.
    """
    chosen = check_runtime(profile, runtime)
    own = chosen == profile.runtime
    path = Path(calibration) if calibration is not None else default_path(profile.name, None if own else chosen)
    if calibration is not None or path.is_file():
        cal = LatencyFit.read(path)
        if cal.target != profile.name:
            raise ConfigError(f"{path} calibrates target {cal.target}, not {profile.name}; pass that target or "
                              f"calibrate {profile.name} with leapkit calibrate --target {profile.name}")
        if cal.runtime != chosen:
            raise ConfigError(f"{path} calibrates {cal.runtime} on {profile.name}, not {chosen}; pass --runtime "
                              f"{cal.runtime}, or calibrate {chosen} with leapkit calibrate --target {profile.name} "
                              f"--runtime {chosen}")
        return fitted_model(cal)
    if not own:
        raise ConfigError(f"target {profile.name} has no {chosen} calibration ({path}), and published efficiencies "
                          f"describe {profile.runtime} only; run leapkit calibrate --target {profile.name} --runtime "
                          f"{chosen} on the target")
    published = published_model(profile)
    if published is None:
        raise ConfigError(f"target {profile.name} has no calibration ({path}) and its profile no latency_model "
                          f"section; run leapkit calibrate --target {profile.name} on the device")
    return published


def predict_onnx(
    path_or_model: Path | str | nn.Module,
    profile: TargetProfile | str,
    precision: Precision | None = None,
    *,
    img_size: int | None = None,
    batch: int | None = None,
    calibration: Path | str | None = None,
    runtime: str | None = None,
) -> Prediction:
    """Predict the latency of an exported graph (or a timm ViT) on a target, with its range.

    Args:
        path_or_model: an export's ``model*.onnx`` (fp32, fp16 or int8), or a timm ViT.
        profile: the target (profile or name).
        precision: default: read from the graph (:func:`leapkit.deploy.graph_precision.graph_precision`), the
            profile's precision for a model.
        img_size: for a model, the input size (default: the model's).
        batch: images per inference (default: the profile's batch).
        calibration: a latency-model fit's file (default: the target's, else the profile's published efficiencies).
        runtime: the runtime that runs it, one of the target's (default: the profile's); an OpenVINO IR is
            predicted from the ONNX graph it was converted from, with its precision given (bf16 runs the
            fp32 graph).

    Raises:
        ConfigError: the target has no latency model for the runtime or the precision.
        ModelError: the file or model is not a plain ViT.
    """
    from leapkit.profiles import load_target

    target = load_target(profile)
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        shape = of_onnx(path)
        prec = precision or cast(Precision, graph_precision(path))
    else:
        shape = of_model(path_or_model, img_size)
        prec = precision or target.precision
    return model_for(target, calibration, runtime).predict(shape, prec, batch or target.batch)
