"""`leapkit export [RUN] --target T`: ONNX (+ fp16/int8), parity and accuracy checks, deploy bundle or engine."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from leapkit.cli.options import Overwrite, RunArg

PrecisionOpt = Annotated[
    Optional[list[str]],
    typer.Option("--precision", "-p", help="fp32, fp16, int8 or all; repeatable or comma-separated (default: the target's). fp32 is always exported."),
]


def export_command(
    run: RunArg = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target profile name, a family such as 'jetson', or a .yaml file.")] = "x86-cpu",
    precision: PrecisionOpt = None,
    overwrite: Overwrite = False,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Training images for INT8 calibration.", min=1)] = 256,
    calib_method: Annotated[str, typer.Option("--calib-method", help="INT8 activation ranges: percentile (robust to outliers) or minmax.")] = "percentile",
    parity_images: Annotated[int, typer.Option("--parity-images", help="Validation images for the parity check.", min=1)] = 64,
    probe_images: Annotated[int, typer.Option("--probe-images", help="Cap on train images for the linear probe (0: all).", min=0)] = 5000,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch the engine is tuned for and accepts at most (default: the target's).", min=1)] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Image size to export at (default: the target's, else the run's).", min=8)] = None,
    slim: Annotated[bool, typer.Option("--slim", help="Simplify the graph with onnxslim (pip install 'leapkit[slim]').")] = False,
    build_engine: Annotated[
        Optional[bool],
        typer.Option("--build-engine/--no-build-engine", help="Build TensorRT engines here (default: when TensorRT and a GPU exist).", show_default=False),
    ] = None,
) -> None:
    """Export the run's student for a target and check every artefact against PyTorch; writes RUN/export/<target>/."""
    from rich.console import Console
    from rich.markup import escape

    from leapkit.errors import CheckFailed, ConfigError
    from leapkit.export import export, summary_table

    if calib_method not in ("percentile", "minmax"):
        raise ConfigError(f"--calib-method must be percentile or minmax, got '{calib_method}'")
    precisions = [p.strip() for item in precision or [] for p in item.split(",") if p.strip()] or None
    result = export(
        run, target=target, precision=precisions, overwrite=overwrite, calib_images=calib_images, calib_method=calib_method,
        parity_images=parity_images, probe_images=probe_images or None, batch=batch, input_size=input_size, slim=slim,
        build_engine=build_engine, check=False, progress=True,
    )
    console = Console()
    console.print(summary_table(result))
    for item in result.not_run:
        console.print(f"[yellow]not run:[/yellow] {escape(item)}")
    if not result.passed:
        raise CheckFailed(f"export for {result.target} failed its checks: {', '.join(result.failures())}; see {result.out_dir / 'manifest.json'}")
