"""Option aliases shared by several commands, typed with the vocabulary of :mod:`leapkit.types`.

A ``Literal`` annotation makes click check the choice and list it in ``--help``. Repeatable options
that also accept comma-separated values or ``all`` (``--precision fp16,int8``) are plain string
lists; :func:`split_choices` checks them against their Literal's members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

import typer

from leapkit.errors import ConfigError
from leapkit.types import CalibMethod, Mode, Precision, Stat

T = TypeVar("T", bound=str)

RunArg = Annotated[str | None, typer.Argument(help="Run directory (default: runs/latest).", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output.")]

_TARGET_HELP = "Target profile name, a family such as 'jetson', or a .yaml file."
TargetOpt = Annotated[str, typer.Option("--target", "-t", help=_TARGET_HELP)]
OptionalTargetOpt = Annotated[
    str | None,
    typer.Option("--target", "-t", help=_TARGET_HELP + " Default: the export's target.", show_default=False),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where it runs: cpu, cuda, cuda:N or auto.")]

PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="Numeric precision (fp32, fp16, bf16 or int8).")]
PrecisionsOpt = Annotated[
    list[str] | None,
    typer.Option("--precision", "-p", help="fp32, fp16, bf16 (OpenVINO on CPUs with AVX512-BF16 or AMX), int8 or all; "
                 "repeatable or comma-separated.", show_default=False),
]
RuntimesOpt = Annotated[
    list[str] | None,
    typer.Option("--runtime", "-r", help="torch|onnxruntime|openvino|tensorrt, repeatable or comma-separated, or "
                 "'all'.", show_default=False),
]
StatOpt = Annotated[
    Stat | None,
    typer.Option("--stat", help="Statistic judged against the budget (default: the target's, p99).",
                 show_default=False),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option("--budget-ms", help="Latency budget in ms (default: the target's).", show_default=False),
]
CalibMethodOpt = Annotated[
    CalibMethod,
    typer.Option("--calib-method", help="INT8 activation ranges: percentile (robust to outliers), entropy (KL "
                 "divergence, TensorRT's) or minmax."),
]
ModeOpt = Annotated[
    Mode | None, typer.Option("--curriculum", help="leap, or baseline (fixed last block, no early exit).")
]


def split_choices(values: Sequence[str] | None, allowed: Sequence[T], flag: str) -> list[T] | None:
    """The members named by a repeatable, comma-separable option; ``all`` means every member.

    Args:
        values: the option's raw values (None or empty: not given).
        allowed: the valid members, in canonical order (e.g. ``leapkit.types.PRECISIONS``).
        flag: the option's name, for the error message.

    Returns:
        The chosen members in the order given, without repeats; None when the option was not given.

    Raises:
        ConfigError: a value is not a member, or ``all`` is combined with other values.
    """
    items = [v.strip() for raw in values or () for v in raw.split(",") if v.strip()]
    if not items:
        return None
    if "all" in items:
        if len(items) > 1:
            raise ConfigError(f"{flag} all cannot be combined with other {flag} values")
        return list(allowed)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ConfigError(f"unknown {flag} {', '.join(repr(b) for b in bad)}; use {', '.join(allowed)} or all")
    return list(dict.fromkeys(items))  # type: ignore[arg-type]
