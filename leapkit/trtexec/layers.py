"""trtexec's per-layer profile (``--exportProfile`` JSON or the ``--dumpProfile`` table), per ViT block and op type.

The JSON is one ``{"count": N}`` object (N profiled iterations) and then one object per engine
layer with ``timeMs`` (total), ``averageMs``, ``medianMs`` (TensorRT 8.4 and later) and
``percentage``. trtexec writes layer names without JSON escaping and non-finite numbers as bare
tokens, so each line is read with a pattern first and the file as JSON only when the lines do not
follow trtexec's layout. The printed table puts the name first up to TensorRT 8.5 and last from 8.6.

Engine layer names are the ONNX node names, joined when TensorRT fuses layers
(``A + B``, ``PWN(A, B)``, ``{ForeignNode[A...B]}`` for a Myelin region, ``Reformatting CopyNode
for Input Tensor 0 to A``). The block of a layer comes, in this order of preference, from the ONNX
model's node metadata (:func:`onnx_nodes`: torch's dynamo exporter records each node's module path
such as ``model.blocks.3``), or from a ``blocks.N``/``layers.N`` path segment in the name (the
TorchScript exporter's ``/blocks.3/attn/qkv/MatMul``). leapkit's default exporter names nodes
``node_<Op>_<n>`` or after the traced value (``node_layer_norm_3``): those names carry no block, so
without the ONNX model a layer's block is "unknown". The op type is ``fused`` for a Myelin region,
``reformat``, ``copy`` or ``pointwise`` for TensorRT's own layers, else the ONNX op type of the
layer's first node (TensorRT names a fused layer after its main op first).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leapkit.errors import TrtexecError
from leapkit.records import Record
from leapkit.tables import Table
from leapkit.trtexec.exported import load_json_values

NUM = r"[-+]?(?:nan(?:\([a-z]*\))?|inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_COUNT_LINE = re.compile(r'^,?\s*\{\s*"count"\s*:\s*(\d+)\s*\}\s*,?$')
_LAYER_LINE = re.compile(
    rf'^,?\s*\{{\s*"name"\s*:\s*"(?P<name>.*)"\s*,\s*"timeMs"\s*:\s*(?P<total>{NUM})\s*,\s*"averageMs"\s*:\s*'
    rf'(?P<avg>{NUM})\s*(?:,\s*"medianMs"\s*:\s*(?P<median>{NUM})\s*)?,\s*"percentage"\s*:\s*(?P<pct>{NUM})\s*\}},?$',
    re.IGNORECASE,
)
_TABLE_HEAD = re.compile(r"^=== Profile \((\d+) iterations ?\) ===$")
_BLOCK = re.compile(r"(?:^|[^A-Za-z0-9])(?:blocks|block|layers|layer)[._/](\d+)(?![0-9])")
_FOREIGN = re.compile(r"\{ForeignNode\[(.*)\]\}")
_ALIASES = {"conv2d": "Conv", "linear": "MatMul", "matmul": "MatMul", "bmm": "MatMul", "addmm": "Gemm",
            "layer_norm": "LayerNormalization", "softmax": "Softmax", "gelu": "Gelu", "add": "Add", "mul": "Mul",
            "div": "Div", "cat": "Concat", "permute": "Transpose", "transpose": "Transpose", "view": "Reshape",
            "reshape": "Reshape", "select": "Gather", "slice": "Slice", "expand": "Expand",
            "scaled_dot_product_attention": "Attention"}


def number(token: str | None) -> float | None:
    """A number as trtexec printed it; None for a missing or non-finite one (``nan``, ``-nan``, ``inf``)."""
    if token is None:
        return None
    value = float(re.sub(r"\(.*\)$", "", token))
    return value if math.isfinite(value) else None


@dataclass
class LayerTime(Record):
    """One engine layer: total time over the profiled iterations, its mean, median and share (None if not given)."""

    name: str
    total_ms: float | None
    avg_ms: float | None
    median_ms: float | None = None
    percent: float | None = None


@dataclass
class LayerProfile(Record):
    """trtexec's per-layer profile.

    Args:
        source: the file it was read from.
        iterations: profiled iterations (the JSON's ``count``; the table's heading).
        layers: one entry per engine layer, in engine order.
        total: the table's ``Total`` row (the JSON has none).
    """

    source: str
    iterations: int | None
    layers: list[LayerTime] = field(default_factory=list)
    total: LayerTime | None = None

    def per_iteration_ms(self, layer: LayerTime) -> float:
        """A layer's mean time per iteration (0 where trtexec printed nothing finite)."""
        if layer.avg_ms is not None:
            return layer.avg_ms
        if layer.total_ms is not None and self.iterations:
            return layer.total_ms / self.iterations
        return 0.0


def is_profile(value: object) -> bool:
    """Whether a JSON value is an ``--exportProfile`` array (it starts with ``{"count": N}``)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "count" in value[0]


def _layer(name: str, total: str | None, avg: str | None, median: str | None, pct: str | None) -> LayerTime:
    return LayerTime(name=name, total_ms=number(total), avg_ms=number(avg), median_ms=number(median),
                     percent=number(pct))


def _profiles_by_line(lines: Iterable[str], source: str) -> list[LayerProfile] | None:
    profiles: list[LayerProfile] = []
    for raw in lines:
        line = raw.strip()
        if line in ("", "]"):
            continue
        if line == "[":
            profiles.append(LayerProfile(source=source, iterations=None))
        elif profiles and (m := _COUNT_LINE.match(line)):
            profiles[-1].iterations = int(m.group(1))
        elif profiles and (m := _LAYER_LINE.match(line)):
            profiles[-1].layers.append(_layer(*m.group("name", "total", "avg", "median", "pct")))
        else:
            return None
    return profiles


def read_profile_json(text: str, source: str) -> list[LayerProfile]:
    """Every profile in an ``--exportProfile`` file (scripts sometimes append one array per run).

    Raises:
        TrtexecError: the file is neither trtexec's layout nor JSON of that shape.
    """
    profiles = _profiles_by_line(text.splitlines(), source)
    if profiles:
        return profiles
    out = []
    for value in load_json_values(text, source):
        if not is_profile(value) or not all(isinstance(v, dict) for v in value):
            raise TrtexecError(f"{source} is not an --exportProfile file (it must start with {{\"count\": N}})")
        layers = [LayerTime(name=str(v.get("name", "")), total_ms=_finite(v.get("timeMs")),
                            avg_ms=_finite(v.get("averageMs")), median_ms=_finite(v.get("medianMs")),
                            percent=_finite(v.get("percentage"))) for v in value[1:]]
        out.append(LayerProfile(source=source, iterations=int(value[0]["count"]), layers=layers))
    return out


def _finite(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def read_profile_table(messages: list[str], source: str) -> LayerProfile | None:
    """The ``=== Profile (N iterations ) ===`` table among a log's messages (prefixes removed), or None."""
    start = next((i for i, m in enumerate(messages) if _TABLE_HEAD.match(m.strip())), None)
    if start is None or start + 1 >= len(messages):
        return None
    header = messages[start + 1].strip()
    median = r"\s+(?P<median>" + NUM + ")" if "Median" in header else "(?P<median>)"
    numbers = rf"(?P<total>{NUM})\s+(?P<avg>{NUM}){median}\s+(?P<pct>{NUM})"
    row = re.compile(rf"^\s*{numbers}\s+(?P<name>.+?)\s*$" if header.endswith("Layer")
                     else rf"^\s*(?P<name>.+?)\s+{numbers}\s*$", re.IGNORECASE)
    profile = LayerProfile(source=source, iterations=int(_TABLE_HEAD.match(messages[start].strip()).group(1)))
    for message in messages[start + 2:]:
        m = row.match(message)
        if not m:
            break
        layer = _layer(m["name"], m["total"], m["avg"], m["median"] or None, m["pct"])
        if layer.name == "Total":
            profile.total = layer
            break
        profile.layers.append(layer)
    return profile


@dataclass(frozen=True)
class OnnxNode:
    """What an ONNX node tells about the engine layers made from it: its op type and ViT block (None: none)."""

    op_type: str
    block: int | None
    scoped: bool = True  # the node's module path is known, so block None means "outside the blocks"


def block_index(text: str) -> int | None:
    """The N of a ``blocks.N`` (or ``layers.N``) segment of a module path or node name."""
    m = _BLOCK.search(text)
    return int(m.group(1)) if m else None


def onnx_nodes(path: Path) -> dict[str, OnnxNode]:
    """Node name -> op type and block, from an ONNX model's node metadata (the module path torch recorded).

    Raises:
        TrtexecError: the file is not an ONNX model.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError and more for a bad file
        raise TrtexecError(f"{path} is not a readable ONNX model ({type(e).__name__}); pass the bundle's model.onnx")\
            from e
    nodes: dict[str, OnnxNode] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scope = meta.get("namespace") or meta.get("pkg.torch.onnx.name_scopes")
        nodes[node.name] = OnnxNode(node.op_type, block_index(scope or node.name), scoped=scope is not None)
    # the FP16 pass's casts carry no metadata; "cast_X__to_fp16" sits beside the node of value X
    for name, node in list(nodes.items()):
        m = re.match(r"cast_(.+?)__to_", name)
        source = nodes.get(f"node_{m.group(1)}") if m and not node.scoped else None
        if source is not None:
            nodes[name] = OnnxNode(node.op_type, source.block, scoped=source.scoped)
    return nodes


def layer_parts(name: str) -> list[str]:
    """The ONNX node names an engine layer was made from (the two ends of a Myelin region)."""
    if m := _FOREIGN.search(name):
        return [p for p in m.group(1).split("...") if p]
    name = re.sub(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to ", "", name)
    name = re.sub(r" (?:input|output) reformatter \d+$", "", name).replace("PWN(", "").replace(")", "")
    return [p.strip() for p in re.split(r" \+ |, ", name) if p.strip()]


def op_from_name(node: str) -> str:
    """An op type from a node name alone: ``/blocks.3/attn/qkv/MatMul`` -> MatMul, ``node_layer_norm_3`` -> ..."""
    stem = re.split(r"[/:]", node)[-1] or node
    stem = re.sub(r"^node_", "", stem)
    stem = re.sub(r"(?:_output_\d+|_clone_\d+|_+\d+)+$", "", stem)
    return _ALIASES.get(stem.lower(), stem) or "other"


def classify(name: str, nodes: Mapping[str, OnnxNode] | None = None) -> tuple[str, str]:
    """The (block label, op type) of an engine layer; see the module docstring for the rules."""
    parts = layer_parts(name)
    known = [nodes[p] for p in parts if nodes and p in nodes]
    blocks = sorted({n.block for n in known if n.block is not None} if known
                    else {b for p in parts if (b := block_index(p)) is not None})
    if blocks:
        block = f"block {blocks[0]}" if len(blocks) == 1 else f"blocks {blocks[0]}-{blocks[-1]}"
    else:
        block = "outside blocks" if known and all(n.scoped for n in known) else "unknown"
    if _FOREIGN.search(name) or name.startswith("__myl_"):
        op = "fused"
    elif "Reformatting CopyNode" in name or " reformatter " in name:
        op = "reformat"
    elif name.startswith(("[HostToDevice", "[DeviceToHost")) or re.search(r"(?: |_)copy(?:_input|_output)?$", name):
        op = "copy"
    elif name.startswith("PWN("):
        op = "pointwise"
    else:
        ops = [nodes[p].op_type if nodes and p in nodes else op_from_name(p) for p in parts]
        # weight constants (quantized layers) and casts (the FP16 variant) come first; the op is what they feed
        op = next((o for o in ops if o not in ("Constant", "Cast")), ops[0] if ops else "other")
    return block, op


@dataclass
class GroupTime:
    """The layers of one group and their summed mean time per iteration."""

    layers: int = 0
    ms: float = 0.0


def layer_groups(profile: LayerProfile, nodes: Mapping[str, OnnxNode] | None = None
                 ) -> tuple[dict[str, GroupTime], dict[str, GroupTime]]:
    """Time per iteration summed per block label and per op type."""
    blocks: dict[str, GroupTime] = {}
    ops: dict[str, GroupTime] = {}
    for layer in profile.layers:
        block, op = classify(layer.name, nodes)
        ms = profile.per_iteration_ms(layer)
        for groups, key in ((blocks, block), (ops, op)):
            g = groups.setdefault(key, GroupTime())
            g.layers += 1
            g.ms += ms
    return blocks, ops


def _block_order(label: str) -> tuple[int, int]:
    m = re.match(r"blocks? (\d+)", label)
    return (0, int(m.group(1))) if m else (1, 0 if label == "outside blocks" else 1)


def aggregate_profile(profile: LayerProfile, nodes: Mapping[str, OnnxNode] | None = None) -> tuple[Table, Table]:
    """Two tables: the profile's time per ViT block (in block order) and per op type (slowest first).

    Args:
        profile: the per-layer profile.
        nodes: :func:`onnx_nodes` of the model the engine was built from; without it the block comes
            from the layer names, which leapkit's exporter does not number.
    """
    blocks, ops = layer_groups(profile, nodes)
    total = sum(g.ms for g in ops.values())
    source = "the ONNX model's node metadata" if nodes else "the layer names"
    tables = (
        Table.of("block", "layers", "ms / iteration", "share", right=("layers", "ms / iteration", "share"),
                 title=f"Engine time per block ({profile.iterations or '?'} profiled iterations)",
                 caption=f"block from {source}; unknown: the name carries no block index"),
        Table.of("op type", "layers", "ms / iteration", "share", right=("layers", "ms / iteration", "share"),
                 title="Engine time per op type",
                 caption="fused: a Myelin region; reformat/copy/pointwise: layers TensorRT added or merged"),
    )
    for table, groups, keys in ((tables[0], blocks, sorted(blocks, key=_block_order)),
                                (tables[1], ops, sorted(ops, key=lambda k: -ops[k].ms))):
        for key in keys:
            g = groups[key]
            table.add(key, g.layers, f"{g.ms:.4f}", f"{100 * g.ms / total:.1f}%" if total > 0 else "-")
    return tables
