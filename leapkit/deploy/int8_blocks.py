"""Where INT8 loses accuracy: each ViT block's output compared between the fp32 and the INT8 graph.

    units = graph_units(onnx.load("model.onnx"))        # patch_embed, blocks.0, ..., with their nodes
    errors = block_errors(fp32, int8, units, images)      # one BlockError per unit and final output

Both graphs run in ONNX Runtime with each block's output marked as an extra graph output (as
Polygraphy's ``--onnx-outputs mark all`` does, for these tensors only), a few images at a time,
so only per-image cosines are kept. A block's output carries the error of every block before it;
what a block adds is the rise of ``1 - cosine`` over the unit before it, and the fallback moves the
units that add the most first.

A unit's nodes come from the exporter's scopes: torch.export records each node's module path
(``pkg.torch.onnx.name_scopes``: ``model.blocks.3.attn.qkv``); the TorchScript exporter names
nodes after it (``/model/blocks.3/attn/qkv/MatMul``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leapkit.deploy.int8_report import BlockError
from leapkit.runtimes.base import OUTPUT_NAMES, batches

if TYPE_CHECKING:
    import onnx

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_UNIT = re.compile(r"(?:^|[./'\s])(patch_embed|blocks\.\d+)(?=[./'\s]|$)")
WEIGHTED_OPS = ("MatMul", "Conv", "Gemm")


@dataclass(frozen=True)
class Unit:
    """A part of the ViT that the fallback can move out of INT8 as a whole.

    Args:
        name: ``patch_embed`` or ``blocks.N``.
        nodes: the names of its nodes.
        int8_nodes: its MatMul/Conv/Gemm nodes (what Q/DQ pairs feed).
        output: the tensor the unit hands on (a block's last residual Add), when there is one.
    """

    name: str
    nodes: tuple[str, ...]
    int8_nodes: tuple[str, ...]
    output: str | None


def unit_of(node: onnx.NodeProto) -> str | None:
    """``patch_embed`` or ``blocks.N`` from the node's recorded scope, else from its name; None outside them."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            found = _UNIT.search(prop.value)
            return found.group(1) if found else None
    found = _UNIT.search(node.name)
    return found.group(1) if found else None


def _order(name: str) -> tuple[int, int]:
    return (0, 0) if name == "patch_embed" else (1, int(name.split(".")[1]))


def graph_units(model: onnx.ModelProto) -> list[Unit]:
    """The patch embedding and each block of an exported ViT, in order.

    A unit's output is the last tensor its nodes produce that a node outside it (or the graph's
    output) reads.
    """
    members: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        unit = unit_of(node)
        if unit is not None:
            members.setdefault(unit, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    units = []
    for name in sorted(members, key=_order):
        inside = {n.name for n in members[name]}
        read_outside = graph_outputs | {i for n in model.graph.node if n.name not in inside for i in n.input}
        handed_on = [o for n in members[name] for o in n.output if o in read_outside]
        units.append(Unit(
            name=name, nodes=tuple(sorted(inside)),
            int8_nodes=tuple(n.name for n in members[name] if n.op_type in WEIGHTED_OPS),
            output=handed_on[-1] if handed_on else None,
        ))
    return units


def _with_outputs(path: Path, names: Sequence[str]) -> bytes:
    """The model at ``path`` with ``names`` added to its graph outputs (types from shape inference)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(helper.make_tensor_value_info(name, elem.get(name, onnx.TensorProto.FLOAT), None))
    return model.SerializeToString()


def _per_image(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image cosine and relative L2 distance of two batches."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    return cos, np.linalg.norm(a - b, axis=1) / np.maximum(na, 1e-30)


def block_errors(
    fp32: Path, int8: Path, units: Sequence[Unit], images: np.ndarray, threads: int | None = None, batch_size: int = 8
) -> list[BlockError]:
    """Compare every unit's output and the final outputs of the two graphs on ``images``.

    Args:
        fp32: the fp32 graph.
        int8: the Q/DQ graph derived from it (same tensor names).
        units: :func:`graph_units` of the fp32 graph.
        images: (N, 3, H, W) float32 real images; a few suffice, and only cosines are kept.
        threads: ONNX Runtime's intra-op threads.
        batch_size: images per run.

    Returns:
        One entry per unit with an output present in both graphs, in graph order, then one per final output.
    """
    import onnx
    import onnxruntime as ort

    present = {o for n in onnx.load(str(int8), load_external_data=False).graph.node for o in n.output}
    compared = [(u.name, u.output) for u in units if u.output and u.output in present]
    compared += [(name, name) for name in OUTPUT_NAMES]
    tensors = [t for _, t in compared]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 0
    so.log_severity_level = 3
    sessions = [ort.InferenceSession(_with_outputs(p, tensors), so, providers=["CPUExecutionProvider"])
                for p in (fp32, int8)]
    cos: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    rel: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    input_name = sessions[0].get_inputs()[0].name
    for x in batches(images, batch_size):
        ref, got = (s.run(tensors, {input_name: x}) for s in sessions)
        for t, a, b in zip(tensors, ref, got, strict=True):
            c, r = _per_image(a, b)
            cos[t].append(c)
            rel[t].append(r)
    out: list[BlockError] = []
    previous = 0.0
    for name, t in compared:
        c, r = np.concatenate(cos[t]), np.concatenate(rel[t])
        final = name in OUTPUT_NAMES
        loss = 1.0 - float(c.mean())
        out.append(BlockError(name=name, tensor=t, cosine_min=float(c.min()), cosine_mean=float(c.mean()),
                              rel_l2=float(r.mean()), added=None if final else loss - previous, images=len(c)))
        if not final:
            previous = loss
    return out
