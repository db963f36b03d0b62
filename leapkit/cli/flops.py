"""`leapkit flops [RUN]`: training FLOPs of a run against the fixed-target baseline, and inference cost."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from leapkit.cli.options import RunArg


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _tables(r: dict[str, Any]) -> list:
    from rich.table import Table

    mode = r["curriculum"]
    train = Table(title=f"training cost ({r['steps']} steps, {r['images']} images, {r['img_size']} px)", caption=r["units"])
    train.add_column("component")
    train.add_column(f"this run ({mode}) FLOPs", justify="right")
    train.add_column("fixed-target baseline FLOPs", justify="right")
    run_parts, base_parts = r["train_flops_breakdown"]["run"], r["train_flops_breakdown"]["baseline"]
    labels = {
        "teacher": "teacher forward",
        "student": "student forward + backward",
        "head": "head forward + backward",
        "signal": f"curriculum {r['metric']}",
        "calibration": "calibration scan",
    }
    for part in run_parts:
        train.add_row(labels.get(part, part), _si(run_parts[part]), _si(base_parts[part]))
    train.add_row("total", _si(r["train_flops_run"]), _si(r["train_flops_baseline"]), style="bold")
    saving = r["train_flops_saving_pct"]
    train.add_row("saving", f"{saving:.1f} %" if saving is not None else "- (baseline run)", "", style="bold")

    infer = Table(title="inference cost (forward_features)")
    infer.add_column("model")
    infer.add_column("params", justify="right")
    infer.add_column("MACs / image", justify="right")
    infer.add_column("FLOPs / image", justify="right")
    infer.add_column("activations", justify="right")
    mem = ", ".join(f"{_si(v, 'B')} @ batch {b}" for b, v in r["student_activation_bytes"].items())
    infer.add_row("student", _si(r["student_params"]), _si(r["student_inference_macs"]), _si(r["student_inference_flops"]), mem)
    t = r["teacher"]
    infer.add_row(f"teacher {t['name']}", _si(t["params"]), _si(t["inference_macs"]), _si(t["inference_flops"]), "")
    blocks = t["block_macs"]
    infer.caption = (
        f"teacher MACs per image: embedding {_si(t['embed_macs'])}, {len(blocks)} blocks of "
        + (f"{_si(blocks[0])} each" if len(set(blocks)) == 1 else ", ".join(_si(b) for b in blocks))
        + f", final norm {_si(t['norm_macs'])}"
    )
    return [train, infer]


def flops_command(
    run: RunArg = None,
    export_batch: Annotated[int, typer.Option("--export-batch", help="Batch the student is deployed at (activation memory).")] = 1,
) -> None:
    """Training FLOPs of the run and of the fixed-target baseline, and the student's inference cost; writes RUN/flops.json."""
    from rich.console import Console

    from leapkit.errors import ConfigError
    from leapkit.flops import run_flops

    if export_batch < 1:
        raise ConfigError(f"--export-batch must be >= 1, got {export_batch}")
    result = run_flops(run, export_batch=export_batch)
    console = Console()
    for table in _tables(result):
        console.print(table)
