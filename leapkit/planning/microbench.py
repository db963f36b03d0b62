"""The microbenchmarks a target's latency model is fitted to: small ViTs of one to four blocks, exported and timed.

Each microbenchmark is a timm VisionTransformer (random weights) exported by leapkit's own export
pieces (:func:`leapkit.deploy.onnx_graph.export_onnx`, :func:`leapkit.deploy.onnx_fp16.convert_fp16`,
:func:`leapkit.deploy.onnx_int8.quantize_int8` in the target runtime's layout, and for OpenVINO
:func:`leapkit.deploy.openvino_ir.write_ir`), so that the graphs hold the ops, fusions and layouts of a
real export. The grid spans widths 64-1024, 5-785 tokens, one to four blocks, patch 14 and 16, with
and without LayerScale; it leaves out the widths of ViT-Ti/S/B (192, 384, 768), so a fit never
sees the models it is judged on.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leapkit.planning.shape import HEAD_DIM, VitShape
from leapkit.types import Precision, TargetRuntime

if TYPE_CHECKING:
    from leapkit.runtimes.base import Runner

log = logging.getLogger(__name__)

RANGE_IMAGES = 4  # Q/DQ ranges only; a graph's speed does not depend on them


@dataclass(frozen=True)
class Micro:
    """One microbenchmark: a small ViT.

    Args:
        dim: token width (heads of 64, at least one).
        depth: blocks.
        img_size: input size.
        patch_size: patch side.
        layer_scale: DINOv2's LayerScale in every block.
    """

    dim: int
    depth: int
    img_size: int
    patch_size: int
    layer_scale: bool = False

    @property
    def name(self) -> str:
        return f"d{self.dim}x{self.depth}-p{self.patch_size}-{self.img_size}px{'-ls' if self.layer_scale else ''}"

    @property
    def shape(self) -> VitShape:
        return VitShape(img_size=self.img_size, patch_size=self.patch_size, dim=self.dim, depth=self.depth,
                        heads=max(1, self.dim // HEAD_DIM), mlp_hidden=4 * self.dim, layer_scale=self.layer_scale,
                        name=self.name)

    def build(self) -> object:
        """The model, random weights, in eval mode."""
        import torch
        from timm.models.vision_transformer import VisionTransformer

        torch.manual_seed(0)
        s = self.shape
        return VisionTransformer(
            img_size=s.img_size, patch_size=s.patch_size, embed_dim=s.dim, depth=s.depth, num_heads=s.heads,
            num_classes=0, init_values=1e-5 if s.layer_scale else None,
        ).eval()


GRID: tuple[Micro, ...] = (
    Micro(64, 1, 32, 16),  # 5 tokens: the fixed costs
    Micro(64, 4, 64, 16),
    Micro(128, 1, 112, 16, True),
    Micro(128, 3, 256, 16),
    Micro(128, 1, 448, 16),
    Micro(160, 2, 336, 16),
    Micro(256, 1, 160, 16),
    Micro(256, 2, 308, 14, True),
    Micro(320, 1, 224, 14, True),
    Micro(320, 2, 126, 14),
    Micro(448, 1, 308, 14, True),
    Micro(512, 1, 224, 16, True),
    Micro(512, 2, 160, 16),
    Micro(576, 1, 364, 14),
    Micro(640, 1, 196, 14),
    Micro(640, 2, 112, 16, True),
    Micro(896, 1, 224, 16, True),
    Micro(896, 1, 140, 14),
    Micro(1024, 1, 160, 16),
    Micro(1024, 1, 252, 14, True),
)
"""The default grid: 20 small ViTs."""

QUICK_GRID: tuple[Micro, ...] = (
    Micro(32, 1, 16, 8),
    Micro(32, 3, 32, 8),
    Micro(64, 1, 48, 8, True),
    Micro(64, 2, 24, 8),
    Micro(96, 1, 32, 8),
    Micro(128, 1, 40, 8, True),
    Micro(128, 2, 16, 8),
    Micro(160, 1, 56, 8),
    Micro(64, 1, 64, 16),
)
"""A grid that fits in seconds, for trying the command (its fit is rough)."""


def export_graphs(micro: Micro, precisions: Sequence[Precision], folder: Path,
                  runtime: TargetRuntime = "onnxruntime") -> dict[Precision, Path]:
    """The microbenchmark's graph at each precision, as ``leapkit export`` writes them for ``runtime``.

    ONNX files for ONNX Runtime and TensorRT; for OpenVINO, the IRs converted from them
    (:func:`leapkit.deploy.openvino_ir.write_ir`), bf16 being the fp32 IR (run with the bf16 hint).

    Args:
        micro: the microbenchmark.
        precisions: which variants.
        folder: where the files go (``<name>.onnx``, ``<name>_fp16.onnx``, ``<name>_int8.onnx``, and for
            OpenVINO ``<name>_openvino_fp32.xml``, ``<name>_openvino_int8.xml``).
        runtime: the target's runtime, for the INT8 layout and the file format.

    Raises:
        MissingDependency: OpenVINO IRs without openvino.
    """
    import onnx

    from leapkit.deploy.onnx_fp16 import convert_fp16
    from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
    from leapkit.deploy.onnx_int8 import quantize_int8

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / f"{micro.name}.onnx"
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), quiet_exporters():
        export_onnx(micro.build(), fp32, micro.img_size)
        out: dict[Precision, Path] = {}
        for precision in precisions:
            if precision in ("fp32", "bf16"):  # bf16 is OpenVINO's hint on the fp32 graph
                out[precision] = fp32
            elif precision == "fp16":
                out[precision] = folder / f"{micro.name}_fp16.onnx"
                onnx.save(convert_fp16(onnx.load(str(fp32))), str(out[precision]))
            else:
                out[precision] = folder / f"{micro.name}_int8.onnx"
                images = np.random.default_rng(0).standard_normal(
                    (RANGE_IMAGES, 3, micro.img_size, micro.img_size)).astype(np.float32)
                quantize_int8(fp32, out[precision], images, method="minmax", runtime=runtime)
        return openvino_irs(micro.name, out, folder) if runtime == "openvino" else out


def openvino_irs(name: str, graphs: dict[Precision, Path], folder: Path) -> dict[Precision, Path]:
    """The OpenVINO IR of each precision's ONNX graph, converted as the export converts it and named as it names
    them with ``name`` for ``model`` (``<name>_openvino_fp32.xml``, one IR for fp32 and bf16).

    Raises:
        MissingDependency: openvino is not installed.
    """
    from leapkit.deploy.openvino_ir import OPENVINO_FILES, OPENVINO_HINTS, OWN_IR, write_ir

    irs: dict[Precision, Path] = {}
    for precision, graph in graphs.items():
        own = precision if precision in OWN_IR else "fp32"
        xml = folder / OPENVINO_FILES[own].replace("model", name, 1)
        if xml not in irs.values():
            write_ir(graph, xml, OPENVINO_HINTS[own])
        irs[precision] = xml
    return irs


def open_runner(path: Path, runtime: TargetRuntime, precision: Precision, threads: int | None) -> Runner:
    """A runner of one graph on this CPU as ``leapkit bench`` runs it: ONNX Runtime, or OpenVINO with the
    precision's inference precision hint (:data:`leapkit.deploy.openvino_ir.OPENVINO_HINTS`)."""
    if runtime == "openvino":
        from leapkit.deploy.openvino_ir import OPENVINO_HINTS
        from leapkit.runtimes.openvino_runner import OpenVINORunner

        return OpenVINORunner(path, threads, OPENVINO_HINTS[precision])
    from leapkit.runtimes.ort_runner import OrtRunner

    return OrtRunner(path, threads)


def time_graph(path: Path, img_size: int, threads: int | None, warmup_s: float, duration_s: float,
               runtime: TargetRuntime = "onnxruntime", precision: Precision = "fp32") -> float:
    """Median latency in ms of one graph on this CPU, batch 1, as ``leapkit bench`` times it.

    Args:
        path: the graph (an ONNX file, or an OpenVINO IR).
        img_size: its input size.
        threads: the runtime's threads.
        warmup_s: warm-up seconds.
        duration_s: timed seconds.
        runtime: onnxruntime or openvino.
        precision: the graph's precision (for OpenVINO, its inference precision hint).
    """
    from leapkit.latency.timing import time_runner

    runner = open_runner(path, runtime, precision, threads)
    try:
        x = np.random.default_rng(0).standard_normal((1, 3, img_size, img_size)).astype(np.float32)
        return float(np.median(time_runner(runner.timed(x), warmup_s, None, duration_s)))
    finally:
        runner.close()
