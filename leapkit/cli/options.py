"""Option aliases shared by several commands, typed with the vocabulary of :mod:`leapkit.types`.

A ``Literal`` annotation makes click check the choice and list it in ``--help``. Repeatable options
that also accept comma-separated values or ``all`` (``--precision fp16,int8``) are plain string
lists; :func:`split_choices` checks them against their Literal's members. Millisecond budgets,
durations and thresholds are parsed by :class:`FiniteFloat`, so that ``nan`` and ``inf`` are usage
errors in every command (exit 2, one line), never a value that reaches a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, TypeVar

import typer

from leapkit.errors import ConfigError
from leapkit.types import CalibMethod, Mode, Precision, Stat

T = TypeVar("T", bound=str)


class FiniteFloat:
    """A typer ``parser``: a finite float above ``low`` (and at most ``high``); anything else is a usage error.

    click's FloatRange lets ``nan`` through (every comparison with it is false) and ``inf`` through an open top.

    Args:
        low: the lower bound.
        low_open: ``low`` itself is refused (``> low``) rather than allowed (``>= low``).
        high: the upper bound, allowed; None: none.
        what: what the value is, for the message (``number of ms``, ``percentage``).
    """

    def __init__(self, low: float = 0.0, *, low_open: bool = True, high: float | None = None, what: str = "number"):
        self.low, self.low_open, self.high = low, low_open, high
        self.bounds = f"{'>' if low_open else '>='} {low:g}" if high is None else \
            f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        self.what = what
        self.__name__ = "float"  # typer names the parameter type after its parser

    def __call__(self, value: str | float) -> float:
        """The value as a float.

        Raises:
            ValueError: not a number, not finite, or out of range (click makes it a one-line usage error).
        """
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be {self.bounds}, got {value!r}: pass a finite {self.what}") from None
        above = number > self.low if self.low_open else number >= self.low
        if not (math.isfinite(number) and above and (self.high is None or number <= self.high)):
            raise ValueError(f"must be {self.bounds}, got {number}: pass a finite {self.what}")
        return number


POSITIVE_MS = FiniteFloat(what="number of ms")
POSITIVE_SECONDS = FiniteFloat(what="number of seconds")
NON_NEGATIVE_SECONDS = FiniteFloat(low_open=False, what="number of seconds")
NON_NEGATIVE_PCT = FiniteFloat(low_open=False, what="percentage")
FRACTION = FiniteFloat(high=1.0)

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
    typer.Option("--budget-ms", parser=POSITIVE_MS, metavar="MS", help="Latency budget in ms, a finite number > 0 "
                 "(default: the target's).", show_default=False),
]
CalibMethodOpt = Annotated[
    CalibMethod,
    typer.Option("--calib-method", help="INT8 activation ranges: percentile (robust to outliers), entropy (KL "
                 "divergence, TensorRT's) or minmax."),
]
ModeOpt = Annotated[
    Mode | None, typer.Option(
        "--curriculum",
        help="leap (CKA threshold, epoch cap), progressive (equal epochs per block, no gate), plateau (level up "
        "when the score stops improving, epoch cap), or baseline (fixed last block, no early exit).",
    )
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
