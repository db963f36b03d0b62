"""What a trtexec run was asked to do, from its command line and printed options: version, precision, batch.

    tensorrt_version("8502") -> "8.5.2"          the banner's vNNNN (or 8.0's "TensorRT version: 8003")
    precision_of(command) -> "fp16" | None        the build flags; never the engine's file name
    batch_of(command, options) -> (4, "--shapes") the images per query and where the log says it

The precision comes only from what built the engine: the command line's ``--int8``/``--best``/``--fp16``
(or a build from a model without them: fp32), else the ``Precision:`` build option of a log that
built its engine. A loaded engine's file name says what its author meant, not what it holds
(``model-FP32.plan`` built with ``--fp16``), so a run that loads an engine has no precision here;
the engine's sidecar or device.json may give it (:mod:`leapkit.trtexec.read`).
"""

from __future__ import annotations

import re
import shlex
from typing import cast

from leapkit.types import Precision

# a trtexec command line pasted on its own (a README's code block): a path ending in trtexec, then flags
COMMAND = re.compile(r"^(?:[$#>] )?(?P<cmd>\S*\btrtexec(?:\.exe)?\s+--.*?)\s*\\?$")
_BUILDS = ("--onnx", "--deploy", "--uff", "--model")


def tensorrt_version(banner: str) -> str:
    """The dotted version of a banner's vNNNN: major*1000+minor*100+patch in 8.x, major*10000+... from 10."""
    n = int(banner)
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}" if n >= 100000 else f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def version_line(value: str) -> str:
    """``TensorRT version:``'s value, dotted: 8.0 prints an integer (``8003``), later releases ``8.6.3``."""
    return tensorrt_version(value) if value.isdigit() else value


def flags(command: str) -> dict[str, str]:
    """A command line's ``--flag[=value]`` words as a dict (``""`` for a flag without a value)."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote in a pasted command line
        words = command.split()
    return {w.split("=", 1)[0]: w.split("=", 1)[1] if "=" in w else "" for w in words if w.startswith("--")}


def precision_of(command: str) -> Precision | None:
    """The precision a trtexec command line builds at; None when it loads an engine (see the module docstring)."""
    given = flags(command)
    if "--int8" in given or "--best" in given:
        return "int8"
    if "--fp16" in given:
        return "fp16"
    if "--bf16" in given:
        return "bf16"
    builds = any(k in given for k in _BUILDS)
    return "fp32" if builds and "--stronglyTyped" not in given and "--loadEngine" not in given else None


def precision_option(value: str) -> Precision | None:
    """The precision of a ``Precision:`` build option (``FP32+FP16``, ``FP32+INT8``); None when strongly typed."""
    upper = value.upper()
    if "STRONGLY" in upper:
        return None
    for tag in ("INT8", "FP16", "BF16", "FP32"):
        if tag in upper:
            return cast(Precision, tag.lower())
    return None


def shape_batch(shapes: str) -> int | None:
    """The first dimension of the first input of a ``--shapes``-style list (``x:0:4x1x28x28``, ``in=8x3x224x224``)."""
    first = shapes.split(",")[0].strip().strip("'\"")
    dims = re.split(r"[:=]", first)[-1]
    m = re.match(r"(\d+)(?:x|$)", dims)
    return int(m.group(1)) if m else None


def batch_of(command: str | None, options: dict[str, str]) -> tuple[int | None, str | None, bool]:
    """The images per query a run states, where it states it, and whether the batch is implicit.

    In order: ``--shapes``, ``--batch`` (implicit batch), the printed ``Batch: N`` option (implicit),
    the printed ``Input inference shape``, ``--optShapes`` (trtexec infers at the optimisation shape when
    ``--shapes`` is not given). (None, None, False) when none of them is there.
    """
    given = flags(command or "")
    if (shapes := given.get("--shapes")) and (n := shape_batch(shapes)):
        return n, "--shapes", False
    if given.get("--batch", "").isdigit():
        return int(given["--batch"]), "--batch", True
    if options.get("Batch", "").isdigit():
        return int(options["Batch"]), "--batch", True
    for key in ("Input inference shape", "Input inference shapes"):
        if (shape := options.get(key)) and (n := shape_batch(shape)):
            return n, "input inference shape", False
    if (shapes := given.get("--optShapes")) and (n := shape_batch(shapes)):
        return n, "--optShapes", False
    return None, None, False
