"""The vocabulary shared by every stage: precisions, runtimes, statistics, curriculum modes.

Each name is defined here once; modules import it rather than spelling the Literal again. The
tuples list the members in their canonical order (for help texts, loops and validation).
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["fp32", "fp16", "bf16", "int8"]
"""Numeric precision of an exported artefact or a target's fast path (bf16: OpenVINO's inference precision on CPUs
with AVX512-BF16 or AMX; it runs the fp32 graph)."""

Runtime = Literal["torch", "onnxruntime", "openvino", "tensorrt"]
"""What runs a model: PyTorch eager, ONNX Runtime, OpenVINO (CPU) or a TensorRT engine."""

TargetRuntime = Literal["onnxruntime", "openvino", "tensorrt"]
"""The runtimes a deployment target may name in its profile (PyTorch is never deployed)."""

Format = Literal["pytorch", "onnx", "openvino", "engine"]
"""The file format of a benchmarked artefact."""

Stat = Literal["min", "mean", "p50", "p90", "p95", "p99", "max"]
"""A latency statistic a budget can be judged on."""

Family = Literal["jetson", "cpu", "gpu"]
"""A target family; its name resolves to the family's default profile."""

Mode = Literal["leap", "baseline", "progressive", "plateau"]
"""Curriculum mode: the target block rises when the score reaches a threshold (``leap``), at fixed equal shares of
the epochs (``progressive``) or when the score stops improving (``plateau``); or the fixed last block (``baseline``).
See :mod:`leapkit.curriculum`."""

Metric = Literal["cka", "cosine"]
"""The similarity score that drives the curriculum."""

Amp = Literal["auto", "bf16", "fp16", "off"]
"""Mixed precision of the student on CUDA."""

CalibMethod = Literal["percentile", "entropy", "minmax"]
"""How INT8 activation ranges are chosen from the calibration images."""

OpenVINOHint = Literal["f32", "bf16"]
"""OpenVINO's inference precision for what is not INT8: strict fp32, or bf16 where the CPU has it."""

Choice = Literal["profile", "fastest"]
"""Which benched variant a target's verdict judges: the profile's runtime and precision, or the fastest one whose
export checks passed, among the target's runtimes and precisions."""

Switch = Literal["on", "off"]
"""An on/off command-line choice (``--int8-fallback on``)."""

Status = Literal["ok", "failed", "unchecked"]
"""The state of an exported artefact after its checks."""

Verdict = Literal["PASS", "FAIL", "UNCONFIRMED"]
"""A budget verdict."""

Evidence = Literal["measured", "imported", "estimated"]
"""Where a bench report's figures come from: timed on the target itself, read from the target's own
tool output (trtexec), or neither (another machine's timings and the lower bound)."""

OrtProvider = Literal["auto", "cpu", "cuda", "tensorrt"]
"""ONNX Runtime execution provider choice; auto picks CUDA for GPU targets when the build has it."""

Pool = Literal["cls", "avg"]
"""Which features evaluation reads: the CLS token or the mean of the patch tokens."""

PRECISIONS: tuple[Precision, ...] = get_args(Precision)
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)
TARGET_RUNTIMES: tuple[TargetRuntime, ...] = get_args(TargetRuntime)
FORMATS: tuple[Format, ...] = get_args(Format)
STATS: tuple[Stat, ...] = get_args(Stat)
FAMILIES: tuple[Family, ...] = get_args(Family)
MODES: tuple[Mode, ...] = get_args(Mode)
METRICS: tuple[Metric, ...] = get_args(Metric)
AMPS: tuple[Amp, ...] = get_args(Amp)
CALIB_METHODS: tuple[CalibMethod, ...] = get_args(CalibMethod)
ORT_PROVIDERS: tuple[OrtProvider, ...] = get_args(OrtProvider)
EVIDENCES: tuple[Evidence, ...] = get_args(Evidence)
SWITCHES: tuple[Switch, ...] = get_args(Switch)
CHOICES: tuple[Choice, ...] = get_args(Choice)

BYTES_PER_ELEMENT: dict[Precision, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
