"""`leapkit export [RUN] --target T`: ONNX (+ fp16/int8), parity and accuracy checks, deploy bundle or engine."""

from __future__ import annotations

from typing import Annotated

import typer

from leapkit.cli.options import Overwrite, PrecisionsOpt, RunArg, TargetOpt
from leapkit.deploy.request import ExportRequest
from leapkit.types import CalibMethod, Switch

DEFAULT = ExportRequest()

CalibrationOpt = Annotated[
    CalibMethod,
    typer.Option("--calibration", "--calib-method", help="How INT8 activation ranges are read off the calibration "
                 "images: percentile (99.999th, clips rare outliers), entropy (KL divergence, TensorRT's) or minmax."),
]
CalibImagesOpt = Annotated[
    int, typer.Option("--calibration-images", "--calib-images", help="Training images for INT8 calibration.", min=1)
]
Int8FallbackOpt = Annotated[
    Switch,
    typer.Option("--int8-fallback", help="When INT8 fails its checks, move the blocks that lose the most accuracy "
                 "out of INT8 one at a time until it passes (off: fail it as it is)."),
]
ParityImagesOpt = Annotated[int, typer.Option("--parity-images", help="Validation images for the parity check.", min=1)]
ProbeImagesOpt = Annotated[
    int, typer.Option("--probe-images", help="Cap on train images for the linear probe (0: all).", min=0)
]
BatchOpt = Annotated[
    int | None,
    typer.Option("--batch", help="Batch the engine is tuned for and accepts at most (default: the target's).", min=1,
                 show_default=False),
]
InputSizeOpt = Annotated[
    int | None,
    typer.Option("--input-size", help="Image size to export at (default: the target's, else the run's).", min=8,
                 show_default=False),
]
SlimOpt = Annotated[
    bool, typer.Option("--slim", help="Simplify the graph with onnxslim (pip install 'leapkit\\[slim]').")
]
BuildEngineOpt = Annotated[
    bool | None,
    typer.Option("--build-engine/--no-build-engine", help="Build TensorRT engines here (default: when TensorRT and "
                 "a GPU exist).", show_default=False),
]


def export_command(
    run: RunArg = None,
    target: TargetOpt = "x86-cpu",
    precision: PrecisionsOpt = None,
    overwrite: Overwrite = DEFAULT.overwrite,
    calib_images: CalibImagesOpt = DEFAULT.calib_images,
    calib_method: CalibrationOpt = DEFAULT.calib_method,
    int8_fallback: Int8FallbackOpt = "on" if DEFAULT.int8_fallback else "off",
    parity_images: ParityImagesOpt = DEFAULT.parity_images,
    probe_images: ProbeImagesOpt = DEFAULT.probe_images or 0,
    batch: BatchOpt = DEFAULT.batch,
    input_size: InputSizeOpt = DEFAULT.input_size,
    slim: SlimOpt = DEFAULT.slim,
    build_engine: BuildEngineOpt = DEFAULT.build_engine,
) -> None:
    """Export the run's student for a target and check every artefact against PyTorch; writes RUN/export/<target>/.

    fp32 is always exported (the other precisions derive from it); --precision defaults to the
    target's (every precision it takes when it chooses the fastest variant, as x86-cpu does) and 'all'
    means every precision the target takes. Targets that deploy with OpenVINO also get OpenVINO IRs
    when it is installed (bf16: the fp32 IR with the bf16 hint, on a CPU with bf16). INT8 ranges are
    cached in the export folder (calibration_cache.json), so a re-export with --overwrite and other
    options reuses them.
    """
    from rich.console import Console
    from rich.markup import escape

    from leapkit.ci_report import append_step_summary
    from leapkit.deploy.export import export
    from leapkit.deploy.summary import int8_blocks_table, int8_steps_table, variants_table
    from leapkit.errors import CheckFailed

    # 'all' and the target's precisions are resolved by the export itself (the Python API takes them too).
    precisions = [p.strip() for item in precision or [] for p in item.split(",") if p.strip()] or None
    request = ExportRequest(
        precision=precisions, overwrite=overwrite, calib_images=calib_images, calib_method=calib_method,
        int8_fallback=int8_fallback == "on", parity_images=parity_images, probe_images=probe_images or None,
        batch=batch, input_size=input_size, slim=slim, build_engine=build_engine, check=False, progress=True,
    )
    result = export(run, target, request)
    console = Console()
    tables = [variants_table(result.manifest, title=f"export for {result.target} -> {result.out_dir}"),
              int8_blocks_table(result.manifest), int8_steps_table(result.manifest)]
    tables = [t for t in tables if t is not None]
    for table in tables:
        console.print(table.to_rich())
    append_step_summary("\n\n".join(t.to_markdown() for t in tables))
    for item in result.not_run:
        console.print(f"[yellow]not run:[/yellow] {escape(item)}")
    if not result.passed:
        raise CheckFailed(
            f"export for {result.target} failed its checks: {', '.join(result.failures())}; "
            f"see {result.out_dir / 'manifest.json'}"
        )
