"""Export a run's student for a target: ONNX (fp32, fp16, int8 Q/DQ), checked against PyTorch, bundled.

    leapkit.export(run, target="jetson") -> RUN/export/<target>/ and RUN/export/latest

:func:`export` validates the request into an :class:`ExportPlan` before anything is written, then
runs it: the fp32 graph (onnx_graph), its fp16 and int8 variants (onnx_fp16; onnx_int8 through
int8_fallback, which calibrates, measures the error per block and moves the worst blocks out of
INT8 when the variant fails), parity of each with ONNX Runtime against the PyTorch student on real
images and the linear-probe accuracy of its CLS features (parity), OpenVINO IRs for targets that
deploy with OpenVINO (openvino_ir, checked with OpenVINO; bf16 is the fp32 IR with the bf16 hint,
where the CPU has bf16), TensorRT engines where TensorRT and a GPU exist
(trt_build), the deploy bundle and README (bundle), and manifest.json (manifest). A variant that
misses its threshold is kept, marked ``failed`` in manifest.json, and the export raises CheckFailed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leapkit import __version__
from leapkit.deploy.bundle import engine_file, readme, reference_image_count, write_reference, write_scripts
from leapkit.deploy.check_outputs import check as check_engine_outputs
from leapkit.deploy.export_data import ExportData, export_data, stack_images
from leapkit.deploy.folder import build_folder, swap_in
from leapkit.deploy.int8_calibration import CALIBRATION_CACHE
from leapkit.deploy.int8_fallback import BLOCK_ERROR_IMAGES, Int8Plan, build_int8
from leapkit.deploy.int8_report import Int8Report
from leapkit.deploy.manifest import MANIFEST, ExportManifest, InputSpec, TargetInfo, Variant
from leapkit.deploy.onnx_fp16 import convert_fp16
from leapkit.deploy.onnx_graph import (
    FILE_NAMES,
    OPSET,
    check_graph,
    default_opset,
    export_onnx,
    input_shape,
    output_descriptions,
    output_shapes,
    quiet_exporters,
    require_onnxslim,
    simplify,
    target_opset,
)
from leapkit.deploy.onnx_int8 import int8_layout
from leapkit.deploy.openvino_ir import OPENVINO_FILES, OPENVINO_HINTS, OWN_IR, weights_file, write_ir
from leapkit.deploy.parity import (
    MAX_TOP1_DROP,
    MIN_COSINE,
    Probe,
    check_parity,
    device_tolerances,
    overall_status,
)
from leapkit.deploy.plan import ExportPlan, export_student, resolve_precisions, resolve_runtimes
from leapkit.deploy.progress import Steps
from leapkit.deploy.request import ExportRequest
from leapkit.deploy.trt_build import build_engine, engines_wanted, timing_cache_name
from leapkit.errors import ROOM_ERRNOS, CheckFailed, ExportError, Interrupted, ModelError, RunError
from leapkit.host import cpu_bf16, import_cudart
from leapkit.models import normalization
from leapkit.paths import require_writable
from leapkit.planning.shape import of_model
from leapkit.profiles import load_target
from leapkit.run import CONFIG, STUDENT, point_latest, read_run_config, resolve_run
from leapkit.runtimes.base import INPUT_NAME, OUTPUT_NAMES, Outputs, Runner, run_batched
from leapkit.runtimes.openvino_runner import OpenVINORunner, openvino_version
from leapkit.runtimes.ort_runner import OrtRunner
from leapkit.runtimes.tensorrt_runner import TensorRTRunner, tensorrt_installed
from leapkit.runtimes.torch_runner import TorchRunner
from leapkit.trtexec.flags import DEFAULT_TENSORRT, BatchRange
from leapkit.types import Precision

if TYPE_CHECKING:
    from torch import nn

    from leapkit.profiles import TargetProfile

log = logging.getLogger(__name__)

FP16_ON_CPU_NOTE = (
    "checked on ONNX Runtime's CPU provider, which has no fp16 kernels for this graph's arithmetic: it casts "
    "to fp32 around each op and rounds the results to fp16, so parity covers fp16 storage, not TensorRT's fp16 kernels"
)


@dataclass
class ExportResult:
    """What :func:`export` produced; ``passed`` is False when any variant failed its checks."""

    target: str
    out_dir: Path
    manifest: ExportManifest

    @property
    def variants(self) -> list[Variant]:
        return self.manifest.variants

    @property
    def not_run(self) -> list[str]:
        return self.manifest.not_run

    @property
    def passed(self) -> bool:
        return self.manifest.passed

    def failures(self) -> list[str]:
        return self.manifest.failures()


def export(run: str | Path | None = None, target: str | TargetProfile = "x86-cpu", request: ExportRequest | None = None,
           **options: Any) -> ExportResult:
    """Export a run's student for a target and check every artefact against PyTorch.

    Writes ``RUN/export/<target>/`` (model.onnx and its fp16/int8 variants, manifest.json,
    README.md, the reference input, OpenVINO IRs for targets that deploy with OpenVINO when it is
    installed, and for TensorRT targets build/bench/check scripts or, where TensorRT and a GPU exist,
    engines) and points ``RUN/export/latest`` at it. The folder is built
    aside and swapped in when complete, so an existing export survives a failed attempt.

    Args:
        run: the run directory (default ``runs/latest``).
        target: target profile name, family (``jetson``), YAML path or a loaded profile.
        request: the options (:class:`~leapkit.deploy.request.ExportRequest`); default: its defaults.
        **options: fields of :class:`~leapkit.deploy.request.ExportRequest` (``precision="int8"``,
            ``calib_images=64``, ...), over ``request``.

    Raises:
        ConfigError: unknown target.
        ExportError: a precision the target cannot take (bf16 named on a CPU without it), an input size the
            patch size does not divide, a bad option value.
        RunError: no run, a run without weights, an existing export without ``overwrite``.
        NotWritable: the run's export folder is not writable (checked before any work).
        Interrupted: Ctrl-C; the old export is untouched and the partial one removed.
        MissingDependency: --slim without onnxslim, --build-engine without tensorrt, tensorrt without
            cuda-python for a TensorRT target, an OpenVINO target or bf16 named without openvino.
        CheckFailed: a variant failed parity or accuracy (only with ``check``).
    """
    request = replace(request or ExportRequest(), **options)
    profile = load_target(target)
    if profile.runtime == "tensorrt" and request.build_engine is not False and tensorrt_installed():
        # engines are built at the end, after the ONNX and INT8 work: find a missing cuda-python before it
        import_cudart("building this export's TensorRT engines (tensorrt is installed; --no-build-engine skips them)")
    precisions = resolve_precisions(request.precision, profile)
    runtimes, precisions = resolve_runtimes(profile, precisions, "bf16" in request.named)
    run_dir = resolve_run(run, need=(CONFIG, STUDENT))
    cfg = read_run_config(run_dir)
    batch_size = request.batch if request.batch is not None else profile.batch
    engines, no_engine = engines_wanted(request.build_engine) if profile.runtime == "tensorrt" else (False, None)
    plan = ExportPlan(
        run_dir=run_dir, cfg=cfg, profile=profile, precisions=precisions,
        input_size=request.input_size or profile.resolve_input_size(cfg.model.img_size),
        batch=BatchRange(1, batch_size, batch_size), request=request, build_engine=engines,
        no_engine_reason=no_engine, runtimes=runtimes,
    )
    return export_plan(plan)


def export_plan(plan: ExportPlan) -> ExportResult:
    """Run a validated plan: build the export aside, swap it in, point ``export/latest`` at it.

    What leapkit did not write in the export it replaces (the device's ``results/``) is moved aside,
    not deleted (:func:`leapkit.deploy.folder.swap_in`).

    Raises:
        RunError: the export exists and ``plan.request.overwrite`` is not set.
        NotWritable: the run's export folder is not writable (checked before any work).
        Interrupted: Ctrl-C; the old export is untouched and the partial one removed.
        ExportError: the student cannot be exported at the plan's input size.
        MissingDependency: ``plan.request.slim`` without onnxslim.
        CheckFailed: a variant failed its checks and ``plan.request.check`` is set.
    """
    final = plan.out_dir
    if final.exists() and not plan.request.overwrite:
        raise RunError(
            f"{final} already exists; pass --overwrite to replace it "
            f"(the old export stays until the new one is complete)"
        )
    # The new export is built beside the old one, which is then emptied: both folders must take writes.
    for folder in (final.parent, final) if final.is_dir() else (final.parent,):
        require_writable(folder, "the export", "export a run you can write to (copy the run folder somewhere writable)")
    tmp: Path | None = None
    try:
        student = export_student(plan)
        if plan.request.slim:
            require_onnxslim()
        tmp = build_folder(final)
        with Steps(plan.total_steps, plan.request.progress) as steps, quiet_exporters():
            manifest = _Export(plan, student, tmp, steps).run()
            manifest.save(tmp / MANIFEST)
    except BaseException as e:  # the partial export goes; the old one, if any, is untouched
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        before = "is as it was" if final.exists() else "was not made"
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(f"export for {plan.profile.name} interrupted: nothing was replaced ({final} {before}); "
                              f"run the export again to finish it") from None
        if isinstance(e, OSError) and e.errno in ROOM_ERRNOS:
            raise ExportError(
                f"the export for {plan.profile.name} ran out of space in {final.parent} ({e.strerror}): nothing was "
                f"replaced ({final} {before}); free space there (df -h {final.parent}) and export again"
            ) from e
        raise
    swap_in(tmp, final)
    point_latest(final)
    log.info("export for %s written to %s", plan.profile.name, final)
    result = ExportResult(target=plan.profile.name, out_dir=final, manifest=manifest)
    if plan.request.check and not result.passed:
        raise CheckFailed(
            f"export for {result.target} failed its checks: {', '.join(result.failures())}; see {final / MANIFEST}"
        )
    return result


class _Export:
    """One export into a fresh folder: the steps in order, and the evidence they gather."""

    def __init__(self, plan: ExportPlan, student: nn.Module, out: Path, steps: Steps) -> None:
        self.plan, self.student, self.out, self.steps = plan, student, out, steps
        self.shape = of_model(student, plan.input_size, plan.cfg.model.student)
        self.mean, self.std = normalization(plan.cfg.model.teacher)
        self.torch = TorchRunner(student)
        self.variants: list[Variant] = []
        self.ort: dict[Precision, OrtRunner] = {}
        self.ov: dict[Precision, Runner] = {}
        self.not_run: list[str] = []
        self.calibration: dict[str, Any] | None = None
        self.int8: Int8Report | None = None
        self.probe: Probe | None = None
        self.engines: list[dict[str, Any]] = []
        self.reference: dict[str, Any] = {}  # the device check's reference (TensorRT targets)
        self.reference_x: np.ndarray | None = None

    def run(self) -> ExportManifest:
        exporter = self.fp32_graph()
        self.steps.step("loading parity and calibration images")
        data = export_data(self.plan.cfg, self.plan.input_size, self.mean, self.std)
        parity_x, _ = stack_images(data.parity, self.plan.request.parity_images)
        reference = run_batched(self.torch, parity_x)
        self.probe = Probe(data, self.plan.request.probe_images, self.plan.cfg.train.seed, self.torch)
        self.steps.done()
        for precision in self.plan.onnx_precisions:
            if precision == "int8":
                self.int8_variant(data, parity_x, reference)
            else:
                self.onnx_variant(precision, parity_x, reference)
        for precision in self.plan.openvino_precisions:
            self.openvino_variant(precision, parity_x, reference)
        self.steps.step("linear probe of the exported models")
        self.probe.judge([v for v in self.variants if v.accuracy is None and v.format == "onnx"], self.ort)
        self.probe.judge([v for v in self.variants if v.accuracy is None and v.format == "openvino"], self.ov)
        if self.probe.unavailable:
            self.not_run.append(self.probe.unavailable)
        self.steps.done()
        if self.plan.tensorrt:
            self.reference_files(data, parity_x, reference)
        if self.plan.build_engine:
            self.tensorrt_engines(parity_x, reference)
        elif self.plan.tensorrt:
            self.not_run += [
                f"TensorRT engine build and parity: {self.plan.no_engine_reason}; "
                f"build on the device with build_engine.sh",
                f"build_engine.sh, check_engine.sh and bench_engine.sh: generated for TensorRT "
                f"{self.plan.profile.tensorrt or DEFAULT_TENSORRT}, not executed here",
                "engine latency: time it on the device with bench_engine.sh or `leapkit bench`",
            ]
        self.steps.step("writing the bundle")
        manifest = self.bundle(exporter, data)
        self.steps.done()
        return manifest

    def fp32_graph(self) -> str:
        """Export and check model.onnx; returns the exporter that wrote it."""
        self.steps.step("exporting the fp32 ONNX graph")
        path = self.out / FILE_NAMES["fp32"]
        exporter = export_onnx(self.student, path, self.plan.input_size, opset=target_opset(self.plan.profile))
        if self.plan.request.slim:
            simplify(path)
            exporter += ", simplified with onnxslim"
        check_graph(path, output_shapes(self.shape))
        self.steps.done()
        return exporter

    def onnx_variant(self, precision: Precision, parity_x: np.ndarray, reference: Outputs) -> None:
        """Derive the ``precision`` graph from fp32 (fp16) and check its parity with ONNX Runtime."""
        import onnx

        fp32, path = self.out / FILE_NAMES["fp32"], self.out / FILE_NAMES[precision]
        if precision == "fp16":
            self.steps.step("converting to fp16 (normalisations and softmax kept in fp32)")
            onnx.save(convert_fp16(onnx.load(str(fp32))), str(path))
            self.steps.done()
        self.steps.step(f"parity of {path.name} on {len(parity_x)} images")
        variant = self.judge(precision, path, parity_x, reference)
        if precision == "fp16" and variant.parity:
            variant.notes.append(FP16_ON_CPU_NOTE)
        self.variants.append(variant)
        self.steps.done()

    def judge(self, precision: Precision, path: Path, parity_x: np.ndarray, reference: Outputs) -> Variant:
        """Check the graph at ``path`` (ONNX checker, output shapes) and its parity with ONNX Runtime."""
        import onnxruntime as ort

        check_graph(path, output_shapes(self.shape))
        variant = Variant(precision=precision, format="onnx", file=path.name, size_bytes=path.stat().st_size,
                          checked_with=f"onnxruntime {ort.__version__} CPUExecutionProvider")
        old = self.ort.pop(precision, None)
        if old is not None:
            old.close()
        try:
            runner = OrtRunner(path, self.plan.profile.threads)
        except ModelError as e:  # ORT reports missing kernels as a generic runtime error
            cause = str(e.__cause__ or e).splitlines()[0][:160]
            variant.notes.append(f"ONNX Runtime's CPU provider cannot run it ({cause}); parity not run")
            variant.checked_with = None
            self.not_run.append(f"parity of {path.name}: ONNX Runtime CPU could not load it")
        else:
            self.ort[precision] = runner
            check_parity(variant, runner, reference, parity_x)
        return variant

    def int8_variant(self, data: ExportData, parity_x: np.ndarray, reference: Outputs) -> None:
        """Calibrate (or reuse the cache), quantize, check, and fall back block by block when the variant fails."""
        plan, options = self.plan, self.plan.request
        self.steps.step(f"calibrating INT8 on {options.calib_images} training images ({options.calib_method})")
        calib_x, _ = stack_images(data.calib, options.calib_images)
        previous = plan.out_dir / CALIBRATION_CACHE
        int8_plan = Int8Plan(
            fp32=self.out / FILE_NAMES["fp32"], dst=self.out / FILE_NAMES["int8"],
            layout=int8_layout(plan.profile.runtime, plan.profile.tensorrt_major), method=options.calib_method,
            calib_images=calib_x, cache_from=previous if previous.is_file() else None,
            cache_to=self.out / CALIBRATION_CACHE, fallback=options.int8_fallback,
            error_images=parity_x[:BLOCK_ERROR_IMAGES], threads=plan.profile.threads,
        )

        def judge(path: Path, always_probe: bool) -> Variant:
            variant = self.judge("int8", path, parity_x, reference)
            if self.probe is not None and "int8" in self.ort and (always_probe or not variant.failed):
                self.probe.judge([variant], self.ort)
            return variant

        variant, calibration, self.int8 = build_int8(int8_plan, judge, self.steps)
        self.calibration = {**calibration, "runtime": plan.profile.runtime, "split": "train"}
        self.variants.append(variant)
        self.steps.done()
        self.steps.done()  # the parity step of the plan's count ran inside build_int8

    def openvino_variant(self, precision: Precision, parity_x: np.ndarray, reference: Outputs) -> None:
        """Convert the ``precision`` ONNX graph to an OpenVINO IR (bf16: reuse the fp32 one) and check its parity
        with OpenVINO on this CPU, run with the variant's inference precision hint."""
        xml = self.out / OPENVINO_FILES[precision]
        hint = OPENVINO_HINTS[precision]
        if precision in OWN_IR:
            self.steps.step(f"converting {FILE_NAMES[precision]} to the OpenVINO IR {xml.name}")
            write_ir(self.out / FILE_NAMES[precision], xml, hint)
            self.steps.done()
        self.steps.step(f"parity of {xml.name} ({hint}) with OpenVINO on {len(parity_x)} images")
        runner = OpenVINORunner(xml, self.plan.profile.threads, hint=hint)
        variant = Variant(precision=precision, format="openvino", file=xml.name,
                          size_bytes=xml.stat().st_size + weights_file(xml).stat().st_size,
                          checked_with=f"OpenVINO {openvino_version()} CPU, inference precision {hint}",
                          inference_precision=hint)
        bf16 = cpu_bf16()
        if precision == "bf16":
            variant.notes.append(f"the fp32 IR run with the bf16 inference precision hint ({bf16})")
        elif hint == "bf16":
            variant.notes.append(
                f"non-INT8 layers ran in bf16 here ({bf16})" if bf16 else
                "this CPU has no bf16 (AVX512-BF16 or AMX): non-INT8 layers ran in fp32 here; check on the target"
            )
        self.ov[precision] = runner
        check_parity(variant, runner, reference, parity_x)
        self.variants.append(variant)
        self.steps.done()

    def tensorrt_engines(self, parity_x: np.ndarray, reference: Outputs) -> None:
        """Build an engine per ONNX variant on this machine's GPU and check its parity."""
        plan, size = self.plan, self.plan.input_size
        cache = plan.run_dir / "export" / timing_cache_name()
        for v in [v for v in self.variants if v.format == "onnx"]:
            engine = engine_file(v.file)
            self.steps.step(f"building the TensorRT engine for {v.file}")
            info = build_engine(
                self.out / v.file, self.out / engine, input_name=INPUT_NAME, chw=(3, size, size), batch=plan.batch,
                precision=v.precision, workspace_mb=plan.profile.workspace_mb, timing_cache=cache,
            )
            self.steps.done()
            self.steps.step(f"parity of {engine}")
            ev = Variant(precision=v.precision, format="tensorrt", file=engine,
                         size_bytes=(self.out / engine).stat().st_size,
                         checked_with=f"TensorRT {info.tensorrt_version} on {info.gpu}")
            ev.notes.append(f"built for {info.gpu} (compute {info.compute_capability}); rebuild on the target device "
                            f"with build_engine.sh")
            runner = TensorRTRunner(self.out / engine)
            try:
                check_parity(ev, runner, reference, parity_x, batch_size=plan.batch.max)
                self.engine_check(ev, runner)
            finally:
                runner.close()
            self.variants.append(ev)
            self.engines.append(info.to_dict())
            self.steps.done()

    def reference_files(self, data: ExportData, parity_x: np.ndarray, reference: Outputs) -> None:
        """The device check's reference: the first parity images (real, held out: int8 ranges are calibrated for
        real data), PyTorch's outputs for them, the probe, and each precision's tolerance."""
        count = reference_image_count(self.plan.batch.opt)
        pick = np.arange(count) % len(parity_x)  # repeats images only when the split has fewer
        self.reference_x = np.ascontiguousarray(parity_x[pick])
        outputs = {name: values[pick] for name, values in reference.items()}
        probe = self.probe.classifier() if self.probe is not None else None
        self.reference = write_reference(self.out, self.reference_x, outputs, self.plan.batch.opt, probe)
        self.reference["description"] = (f"the first {len(set(pick.tolist()))} parity images (val split of "
                                         f"{data.source}), already normalised")
        self.reference["tolerance"] = device_tolerances(outputs, self.ort, self.reference_x, probe)

    def engine_check(self, variant: Variant, runner: Runner) -> None:
        """The device's check (check_outputs.py) on an engine built here: every output of the reference runs."""
        assert self.reference_x is not None
        got = {run["name"]: runner(self.reference_x[run["images"]]) for run in self.reference["runs"]}
        report = check_engine_outputs(str(self.out), {"reference": self.reference}, variant.precision, got)
        variant.check = {k: report[k] for k in ("passed", "outputs", "probe", "problems")}
        if not report["passed"]:
            variant.status = "failed"
            variant.notes.append(f"reference check: {report['problems'][0]}")

    def bundle(self, exporter: str, data: ExportData) -> ExportManifest:
        """The manifest, the scripts (TensorRT targets) and the README."""
        manifest = self.manifest(exporter, data, self.reference)
        if self.plan.tensorrt:
            write_scripts(self.out, manifest, self.plan.profile)
        (self.out / "README.md").write_text(readme(manifest, self.plan.profile))
        manifest.record_files(self.out)
        return manifest

    def manifest(self, exporter: str, data: ExportData, reference: dict[str, Any]) -> ExportManifest:
        plan, shape, profile = self.plan, self.shape, self.plan.profile
        opsets = {v.file: default_opset(self.out / v.file) for v in self.variants if v.format == "onnx"}
        shapes, descriptions = output_shapes(shape), output_descriptions(shape)
        return ExportManifest(
            format_version=1,
            leapkit_version=__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            status=overall_status(self.variants),
            source_run=str(plan.run_dir),
            target=TargetInfo(
                name=profile.name, family=profile.family, runtime=profile.runtime, precision=profile.precision,
                tensorrt=profile.tensorrt, jetpack=profile.jetpack, latency_budget_ms=profile.latency_budget_ms,
            ),
            student={
                "model": plan.cfg.model.student, "trained_img_size": plan.cfg.model.img_size,
                "img_size": shape.img_size, "patch_size": shape.patch_size, "embed_dim": shape.dim,
                "num_prefix_tokens": shape.prefix_tokens, "num_patches": shape.patches,
                "params": int(sum(p.numel() for p in self.student.parameters())),
            },
            exporter=exporter,
            opset=opsets.get(FILE_NAMES["fp32"], OPSET),
            opsets=opsets,
            input=InputSpec(
                name=INPUT_NAME, shape=input_shape(shape), dtype="float32", mean=[float(m) for m in self.mean],
                std=[float(s) for s in self.std], layout="NCHW",
                preprocessing="RGB scaled to [0, 1], then (x - mean) / std per channel",
            ),
            outputs=[{"name": n, "shape": shapes[n], "dtype": "float32", "description": descriptions[n]}
                     for n in OUTPUT_NAMES],
            batch=asdict(plan.batch),
            variants=self.variants,
            engines=self.engines,
            calibration=self.calibration,
            int8=self.int8,
            parity_data={"source": data.source, "split": "val"},
            thresholds={"min_cosine": MIN_COSINE, "max_top1_drop": MAX_TOP1_DROP},
            reference=reference,
            not_run=self.not_run,
        )
