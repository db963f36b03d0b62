"""leapkit.deploy.int8_blocks and int8_report: units of an exported ViT, error per block, the ranked table."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch

from leapkit.data import DigitsDataset
from leapkit.deploy import int8_blocks as b
from leapkit.deploy.export_data import stack_images
from leapkit.deploy.int8_report import BlockError, Int8Report, ranked
from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.deploy.onnx_int8 import quantize_int8
from leapkit.models import Backbone, create_student
from leapkit.runtimes.base import INPUT_NAME, OUTPUT_NAMES

BLOCKS = 4


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("blocks")
    fp32 = folder / "model.onnx"
    calib = stack_images(DigitsDataset("train", 32, (0.5,) * 3, (0.5,) * 3), 16)[0]
    with quiet_exporters():
        export_onnx(create_student("leapkit_demo_student", 32).eval(), fp32, 32)
        quantize_int8(fp32, folder / "model_int8.onnx", calib, method="minmax", runtime="tensorrt")
    return fp32, folder / "model_int8.onnx"


@pytest.fixture(scope="module")
def val():
    return stack_images(DigitsDataset("val", 32, (0.5,) * 3, (0.5,) * 3), 8)[0]


def test_units_of_a_torch_export_graph(graphs):
    units = b.graph_units(onnx.load(str(graphs[0])))
    assert [u.name for u in units] == ["patch_embed", *(f"blocks.{i}" for i in range(BLOCKS))]
    assert len(units[0].int8_nodes) == 1 and all(len(u.int8_nodes) == 6 for u in units[1:])
    # A block hands on its last residual Add, which the next block's LayerNorm and Add read.
    model = onnx.load(str(graphs[0]))
    producer = {o: n for n in model.graph.node for o in n.output}
    assert all(producer[u.output].op_type == "Add" for u in units[1:])
    readers = {u.output: {n.op_type for n in model.graph.node if u.output in n.input} for u in units[1:-1]}
    assert all(ops == {"LayerNormalization", "Add"} for ops in readers.values())


def test_units_of_a_torchscript_graph(tmp_path):
    """The TorchScript exporter records no scopes; its node names carry them (/model/blocks.0/attn/qkv/MatMul)."""
    torch.manual_seed(0)
    model = create_student("leapkit_demo_student", 32).eval()
    path = tmp_path / "ts.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Backbone(model), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=18,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
    units = b.graph_units(onnx.load(str(path)))
    assert [u.name for u in units] == ["patch_embed", *(f"blocks.{i}" for i in range(BLOCKS))]
    assert all(len(u.int8_nodes) == 6 for u in units[1:]) and all(u.output for u in units)


def test_block_errors_of_a_graph_against_itself_are_nil(graphs, val):
    units = b.graph_units(onnx.load(str(graphs[0])))
    errors = b.block_errors(graphs[0], graphs[0], units, val, threads=1)
    assert [e.name for e in errors] == [u.name for u in units] + list(OUTPUT_NAMES)
    assert all(e.cosine_min == pytest.approx(1.0, abs=1e-9) and e.rel_l2 < 1e-6 for e in errors)
    assert all(abs(e.added) < 1e-9 for e in errors if not e.final) and all(e.images == len(val) for e in errors)


def test_block_errors_of_the_int8_graph_are_ranked_worst_first(graphs, val):
    units = b.graph_units(onnx.load(str(graphs[0])))
    errors = b.block_errors(graphs[0], graphs[1], units, val, threads=1, batch_size=3)  # streamed: 3, 3, 2
    blocks = [e for e in errors if not e.final]
    assert len(blocks) == len(units) and all(0.99 < e.cosine_min < 1.0 for e in errors)
    # Each unit's share adds up to the error of the last unit's output.
    assert sum(e.added for e in blocks) == pytest.approx(1 - blocks[-1].cosine_mean, rel=1e-6)
    order = ranked(errors)
    assert [e.added for e in order] == sorted((e.added for e in blocks), reverse=True)
    report = Int8Report(layout="tensorrt-fp16", high_precision="fp16", fallback=True, blocks=errors, steps=[],
                        moved=[order[0].name])
    markdown = report.blocks_table().to_markdown()
    rows = [line for line in markdown.splitlines() if line.startswith("| 1 |")]
    assert rows and f"| {order[0].name} |" in rows[0] and rows[0].rstrip().endswith("| moved |")
    assert all(f"output {name}" in markdown for name in OUTPUT_NAMES)
    # The record reads back what it wrote.
    assert Int8Report.from_dict(report.to_dict()) == report
    assert isinstance(Int8Report.from_dict(report.to_dict()).blocks[0], BlockError)
