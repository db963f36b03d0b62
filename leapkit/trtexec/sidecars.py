"""What the files beside trtexec's timing figures say of the run: its batch, precision and device.

    sidecar_facts(value, source) -> RunFacts | None     an --exportLayerInfo, a trex metadata file or device.json
    engine_sidecar(command, log) -> RunFacts | None     the ``ENGINE.json`` build_engine.sh writes beside an engine
    trex_siblings(times_file) -> [Path]                 the files trex keeps beside ``X.engine.timing.json``

An ``--exportTimes`` file holds no batch, and a log that loads an engine holds no precision; these
files do:

- ``--exportLayerInfo`` at detailed verbosity: the input binding's dimensions (``[32, 224, 224, 3]``).
- NVIDIA's trt-engine-explorer (trex) keeps its parse of the trtexec logs beside the exported JSON:
  ``X.profile.metadata.json`` (``inference_options["Input inference shape"]``, ``"Batch"`` and
  ``device_information["Selected Device"]``) and ``X.build.metadata.json``
  (``build_options["Precision"]``, e.g. ``FP32+FP16``).
- ``device.json`` (leapkit's ``bench_engine.sh``): ``run.precision``, ``run.batch`` and ``run.engine``.
- ``ENGINE.json`` (leapkit's ``build_engine.sh``): the ``precision`` the engine was built at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from leapkit.trtexec.context import flags, precision_option, shape_batch
from leapkit.types import PRECISIONS, Precision

TREX_SUFFIXES = (".profile.metadata.json", ".build.metadata.json", ".graph.json")


@dataclass
class RunFacts:
    """What one file says of a run (None: it does not say).

    Args:
        source: the file, as the report names where the batch or precision was read.
        batch: images per query.
        implicit: the batch is an implicit batch (trtexec then counts images).
        precision: the precision the engine was built at.
        device: the device's name.
        engine: the engine file it describes (device.json), to match a log's ``--loadEngine``.
    """

    source: str
    batch: int | None = None
    implicit: bool = False
    precision: Precision | None = None
    device: str | None = None
    engine: str | None = None


def _layer_info(value: dict[str, Any], source: str) -> RunFacts | None:
    """An --exportLayerInfo file's batch: the first dimension of the first input binding, as a layer's input."""
    bindings = value.get("Bindings") or []
    for layer in value.get("Layers") or []:
        if not isinstance(layer, dict):
            return None  # the names-only format holds no dimensions
        for tensor in layer.get("Inputs") or []:
            dims = tensor.get("Dimensions") if isinstance(tensor, dict) else None
            if tensor.get("Name") in bindings[:1] and dims and isinstance(dims[0], int) and dims[0] > 0:
                return RunFacts(source=f"{source} (input binding)", batch=dims[0])
    return None


def _trex_metadata(value: dict[str, Any], source: str) -> RunFacts | None:
    """A trex ``*.metadata.json``: the inference shape and batch mode, the build precision, the device."""
    options = value.get("inference_options") or {}
    build = value.get("build_options") or {}
    device = (value.get("device_information") or {}).get("Selected Device")
    batch, implicit = None, False
    if str(options.get("Batch", "")).isdigit():
        batch, implicit = int(options["Batch"]), True
    elif shape := options.get("Input inference shape"):
        batch = shape_batch(str(shape))
    precision = precision_option(str(build.get("Precision", ""))) if build else None
    if batch is None and precision is None and device is None:
        return None
    return RunFacts(source=source, batch=batch, implicit=implicit, precision=precision, device=device)


def _device_json(value: dict[str, Any], source: str) -> RunFacts | None:
    run = value.get("run") or {}
    precision = run.get("precision") if run.get("precision") in PRECISIONS else None
    batch = run.get("batch") if isinstance(run.get("batch"), int) and run["batch"] > 0 else None
    if batch is None and precision is None:
        return None
    return RunFacts(source=source, batch=batch, precision=cast(Precision | None, precision), engine=run.get("engine"))


def sidecar_facts(value: Any, source: str) -> RunFacts | None:
    """What a JSON value beside the timing figures says (see the module docstring); None for another file."""
    if not isinstance(value, dict):
        return None
    if "Layers" in value:
        return _layer_info(value, source)
    if any(k in value for k in ("inference_options", "build_options", "device_information")):
        return _trex_metadata(value, source)
    if "run" in value:
        return _device_json(value, source)
    return None


def is_sidecar(value: Any) -> bool:
    """Whether a JSON value is one of the files :func:`sidecar_facts` reads (it may still say nothing)."""
    return isinstance(value, dict) and any(k in value for k in ("Layers", "inference_options", "build_options"))


def trex_siblings(times_file: Path) -> list[Path]:
    """The files trex keeps beside ``X.timing.json`` (see :data:`TREX_SUFFIXES`) that exist."""
    name = times_file.name
    if not name.endswith(".timing.json"):
        return []
    base = name.removesuffix(".timing.json")
    return [p for p in (times_file.with_name(base + s) for s in TREX_SUFFIXES) if p.is_file()]


def engine_sidecar(command: str | None, log: Path) -> RunFacts | None:
    """The precision build_engine.sh recorded in ``ENGINE.json`` for the engine a log's command loads.

    The engine path is tried as given, then from the log's folder and the two above it (the bundle
    holds the engine; ``results/<precision>/`` the log).
    """
    engine = flags(command or "").get("--loadEngine")
    if not engine:
        return None
    name = Path(engine + ".json")
    folders = [log.parent, *list(log.parent.parents)[:2]]
    for candidate in [name, *(folder / name for folder in folders), *(folder / name.name for folder in folders)]:
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("precision") in PRECISIONS:
            return RunFacts(source=str(candidate), precision=cast(Precision, data["precision"]))
    return None
