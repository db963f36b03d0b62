"""What MODEL names: a run directory, an export folder, an ONNX file, an OpenVINO IR or a TensorRT engine.

    resolve_model(model, target) -> ModelSource(kind, artifacts, out_dir, run_dir, export_dir, ...)

A run contributes its PyTorch student and the files of its export for the target (or its newest
export). An export folder is read through its manifest (:class:`ExportManifest`), which gives
each file's precision, status and probe accuracy (one artefact per variant: the fp32 OpenVINO IR
is benched twice when the export checked a bf16 variant of it, once with each precision hint); a
folder without a manifest is scanned for model files. Engines built on the device with the
bundle's build_engine.sh are not in the manifest: every export folder is also scanned for them,
their precision read from the ``.json`` beside each engine, else from the file name, else ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leapkit.deploy.bundle import CHECK, RESULTS
from leapkit.deploy.graph_precision import graph_precision, precision_from_name
from leapkit.deploy.manifest import MANIFEST, ExportManifest, Variant
from leapkit.errors import ModelError, RunError
from leapkit.records import read_json
from leapkit.run import CONFIG, STUDENT, read_run_config, resolve_run
from leapkit.types import PRECISIONS, Format, OpenVINOHint, Runtime

ONNX_SUFFIXES = (".onnx",)
OPENVINO_SUFFIXES = (".xml",)  # an OpenVINO IR: the graph, its weights in the .bin beside it
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MODEL_SUFFIXES = ONNX_SUFFIXES + OPENVINO_SUFFIXES + ENGINE_SUFFIXES
RUNTIME_OF: dict[Format, Runtime] = {
    "pytorch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "engine": "tensorrt",
}
EVAL = "eval.json"


def export_failed(status: str) -> bool:
    """Whether an artefact status (``ok``, ``unchecked``, ``failed: <why>``) says the export failed it."""
    return status.startswith("failed")


@dataclass
class Artifact:
    """One model file, or the in-memory PyTorch student, to benchmark.

    Args:
        format: pytorch, onnx, openvino (an IR) or engine.
        precision: fp32, fp16 or int8; ``unknown`` for an engine without a hint.
        path: the file (None for the PyTorch student).
        size_mb: file size in MB (external ONNX data included).
        accuracy: linear-probe top-1 (%) when the run's evaluation or the export recorded it.
        status: ``ok``, ``unchecked``, or ``failed: <why>`` as the export recorded it.
        hint: the OpenVINO inference precision to run an IR with (``f32``, ``bf16``); None: the one the
            IR records.
    """

    format: Format
    precision: str
    path: Path | None = None
    size_mb: float | None = None
    accuracy: float | None = None
    status: str = "ok"
    hint: OpenVINOHint | None = None

    @property
    def runtime(self) -> Runtime:
        return RUNTIME_OF[self.format]

    @property
    def name(self) -> str:
        return self.path.name if self.path else "the PyTorch student"


@dataclass
class ModelSource:
    """A resolved MODEL argument: what can be benched and where the report goes.

    Args:
        kind: what MODEL named.
        artifacts: what can be benched, the PyTorch student first.
        out_dir: where bench/<target>.* is written (the run, else the folder of the model).
        run_dir: the run, when MODEL is one or an export names its source run.
        export_dir: the export folder, when there is one.
        img_size: input size: the run's training resolution, else the export's input size.
        manifest: the export's manifest, when it has one.
    """

    kind: Literal["run", "export", "onnx", "openvino", "engine"]
    artifacts: list[Artifact]
    out_dir: Path
    run_dir: Path | None = None
    export_dir: Path | None = None
    img_size: int | None = None
    manifest: ExportManifest | None = field(default=None, repr=False)

    @property
    def target(self) -> str | None:
        """The target the export was made for, when its manifest says."""
        return self.manifest.target.name if self.manifest else None

    def has(self, runtime: Runtime) -> bool:
        """Whether something here runs in ``runtime`` (torch needs the run's student)."""
        if runtime == "torch" and self.run_dir is None:
            return False
        return any(a.runtime == runtime for a in self.artifacts)


def _file_mb(path: Path) -> float:
    size = path.stat().st_size
    # ONNX external data saved next to the model; an OpenVINO IR's weights
    for data in (path.with_name(path.name + ".data"), path.with_suffix(".bin") if path.suffix == ".xml" else None):
        if data is not None and data.is_file():
            size += data.stat().st_size
    return size / 1e6


def _status(variant: Variant | None) -> str:
    if variant is None or variant.status == "ok":
        return "ok"
    if variant.failed:
        return "failed" + (f": {'; '.join(variant.notes)}" if variant.notes else "")
    return variant.status


def file_artifacts(path: Path, manifest: ExportManifest | None = None) -> list[Artifact]:
    """One artefact per variant the manifest records for ``path`` (the fp32 IR may back fp32 and bf16), else one."""
    variants = manifest.variants_of(path.name) if manifest else []
    return [file_artifact(path, manifest, v.precision) for v in variants] or [file_artifact(path, manifest)]


def file_artifact(path: Path, manifest: ExportManifest | None = None, precision: str | None = None) -> Artifact:
    """One ONNX file, IR or engine, with what the export recorded about it when there is a manifest.

    Args:
        path: the file.
        manifest: the export's manifest, if any.
        precision: which of the file's variants (the fp32 IR also backs bf16); None: its first.
    """
    variant = manifest.variant(path.name, precision) if manifest else None
    if path.suffix in ONNX_SUFFIXES:
        fmt: Format = "onnx"
        precision = graph_precision(path)  # also refuses a file that is not ONNX
        precision = variant.precision if variant else precision
    elif path.suffix in OPENVINO_SUFFIXES:
        fmt = "openvino"
        precision = (variant.precision if variant else None) or precision_from_name(path.name) or "unknown"
    else:
        fmt = "engine"
        precision = (variant.precision if variant else None) or engine_precision(path)
    accuracy = variant.probe_top1 if variant else None
    status = _status(variant) if variant or fmt != "engine" else device_check_status(path, precision)
    hint = variant.inference_precision if variant else None
    return Artifact(fmt, precision, path, _file_mb(path), accuracy, status, hint)


def engine_precision(path: Path) -> str:
    """An engine's precision: from the ``<engine>.json`` beside it, else from its file name, else ``unknown``.

    build_engine.sh and leapkit's engine builder write that ``.json``.
    """
    meta = path.with_name(path.name + ".json")
    try:
        built = read_json(meta) if meta.is_file() else {}
    except (OSError, RunError):
        built = {}
    precision = built.get("precision") if isinstance(built, dict) else None
    return precision if precision in PRECISIONS else precision_from_name(path.name) or "unknown"


def device_check_status(engine: Path, precision: str) -> str:
    """``failed: ...`` when check_engine.sh on the device recorded a failed check for this engine's precision."""
    check = engine.parent / RESULTS / precision / CHECK
    try:
        record = read_json(check) if check.is_file() else {}
    except (OSError, RunError):
        return f"failed: {check} is unreadable; rerun check_engine.sh {precision}"
    if record.get("passed", True):
        return "ok"
    problems = "; ".join(record.get("problems", [])) or "outputs differ from the reference"
    return f"failed: check_engine.sh {precision} on the device: {problems}"


def export_artifacts(export_dir: Path) -> tuple[list[Artifact], ExportManifest | None]:
    """The model files of an export folder: its manifest's files (else every model file in it) and its engines.

    Raises:
        RunError: the manifest is not one that ``leapkit export`` writes.
    """
    try:
        manifest = ExportManifest.load_optional(export_dir / MANIFEST)
    except RunError as e:
        raise RunError(f"{export_dir / MANIFEST}: {e}") from e
    names = list(manifest.files) if manifest else []
    if not names:
        names = sorted(p.name for p in export_dir.iterdir() if p.suffix in MODEL_SUFFIXES)
    names += sorted(p.name for p in export_dir.iterdir() if p.suffix in ENGINE_SUFFIXES and p.name not in names)
    paths = [export_dir / n for n in names if Path(n).suffix in MODEL_SUFFIXES and (export_dir / n).is_file()]
    return [art for p in paths for art in file_artifacts(p, manifest)], manifest


def _run_export_dir(run_dir: Path, target: str | None) -> Path | None:
    """The run's export for ``target`` when there is one, else its newest export (export/latest)."""
    root = run_dir / "export"
    for candidate in ([root / target] if target else []) + [root / "latest"]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def resolve_model(model: str | Path | None, target: str | None = None) -> ModelSource:
    """Work out what MODEL names: a run directory, an export folder, an ONNX file or an engine.

    Args:
        model: the path; None means runs/latest.
        target: the profile name whose export a run contributes (else its newest export).

    Raises:
        RunError: no run at runs/latest.
        ModelError: the path does not exist or is not ONNX, an engine, an export or a run.
    """
    if model is None:
        return _from_run(resolve_run(None), target)
    path = Path(model)
    if not path.exists():
        raise ModelError(
            f"model not found: {path}; pass an .onnx file, a TensorRT engine, an export folder or a run directory"
        )
    if path.is_file():
        if path.suffix not in MODEL_SUFFIXES:
            raise ModelError(
                f"{path.name} is not a model leapkit can bench; pass an .onnx file, an OpenVINO IR (.xml), a "
                f"TensorRT engine ({'/'.join(ENGINE_SUFFIXES)}), an export folder or a run directory"
            )
        art = file_artifact(path)
        kind = "engine" if art.format == "engine" else art.format
        return ModelSource(kind, [art], out_dir=path.parent.resolve())
    if (path / CONFIG).is_file():
        return _from_run(resolve_run(path, need=(CONFIG,)), target)
    if (path / MANIFEST).is_file() or any(p.suffix in MODEL_SUFFIXES for p in path.iterdir()):
        export_dir = path.resolve()
        artifacts, manifest = export_artifacts(export_dir)
        source = Path(manifest.source_run) if manifest else None
        run_dir = source if source and (source / CONFIG).is_file() and (source / STUDENT).is_file() else None
        img_size = manifest.input.img_size if manifest else None
        return ModelSource("export", artifacts, out_dir=run_dir or export_dir, run_dir=run_dir, export_dir=export_dir,
                           img_size=img_size, manifest=manifest)
    raise ModelError(f"{path} holds no run ({CONFIG}), export ({MANIFEST}) or model file; pass one of those")


def _from_run(run_dir: Path, target: str | None) -> ModelSource:
    cfg = read_run_config(run_dir)
    artifacts: list[Artifact] = []
    export_dir = _run_export_dir(run_dir, target)
    files, manifest = export_artifacts(export_dir) if export_dir is not None else ([], None)
    if (run_dir / STUDENT).is_file():
        evaluated = read_json(run_dir / EVAL).get("linear_probe_top1") if (run_dir / EVAL).is_file() else None
        # the export probes the PyTorch student on the same split as its ONNX files
        accuracy = evaluated if evaluated is not None else manifest.pytorch_top1 if manifest else None
        artifacts.append(Artifact("pytorch", "fp32", None, (run_dir / STUDENT).stat().st_size / 1e6, accuracy))
    artifacts += files
    if not artifacts:
        raise ModelError(
            f"{run_dir} has no {STUDENT} and no export; finish `leapkit distill` or run `leapkit export` first"
        )
    return ModelSource("run", artifacts, out_dir=run_dir, run_dir=run_dir, export_dir=export_dir,
                       img_size=cfg.model.img_size, manifest=manifest)


def require_export(src: ModelSource, target: str) -> None:
    """Refuse a run that has no export to bench (timing the PyTorch student alone needs ``--runtime torch``).

    Without this, the run's PyTorch student would be timed alone and judged against a budget meant for
    the exported model: a missing export would read as a missed budget.

    Raises:
        RunError: MODEL is a run without an export (none was made, or the export was killed before it finished).
    """
    if src.kind == "run" and src.export_dir is None:
        raise RunError(
            f"{src.run_dir} has no export for {target}: run `leapkit export {src.run_dir} --target {target}` first "
            f"(or pass --runtime torch to time the PyTorch student alone)"
        )
