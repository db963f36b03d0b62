"""leapkit.deploy.int8_calibration: the three methods, the cache's keys, reuse by the quantizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leapkit.data import DigitsDataset
from leapkit.deploy import int8_calibration as c
from leapkit.deploy import onnx_int8 as q
from leapkit.deploy.export_data import stack_images
from leapkit.deploy.onnx_graph import export_onnx, quiet_exporters
from leapkit.models import create_student


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("calib") / "model.onnx"
    with quiet_exporters():
        export_onnx(create_student("leapkit_demo_student", 32).eval(), path, 32)
    return path


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return stack_images(DigitsDataset("train", 32, (0.5,) * 3, (0.5,) * 3), 16)[0]


def test_methods_give_their_own_ranges(fp32, images, monkeypatch):
    # TensorRT's 2048 bins make the KL search take ~0.5 s per tensor; 256 test the same path.
    monkeypatch.setitem(c.METHOD_OPTIONS, "entropy", {"num_bins": 256, "num_quantized_bins": 128})
    ranges = {m: c.calibrate(fp32, images, m, q.INT8_OPS) for m in ("minmax", "percentile", "entropy")}
    assert set(ranges["minmax"]) == set(ranges["entropy"]) == set(ranges["percentile"])
    widths = {m: {k: float(np.max(hi - lo)) for k, (lo, hi) in r.items()} for m, r in ranges.items()}
    # minmax spans every value seen; the histogram methods clip and so never reach further.
    assert all(widths["entropy"][k] <= widths["minmax"][k] * 1.0001 for k in widths["minmax"])
    assert any(widths["entropy"][k] < 0.99 * widths["minmax"][k] for k in widths["minmax"])
    assert widths["entropy"] != widths["percentile"]


def test_cache_keys_and_round_trip(tmp_path):
    base = c.CalibrationKey("m" * 64, "entropy", 16, "i" * 64, "tensorrt-fp16")
    others = [c.CalibrationKey("n" * 64, "entropy", 16, "i" * 64, "tensorrt-fp16"),
              c.CalibrationKey("m" * 64, "minmax", 16, "i" * 64, "tensorrt-fp16"),
              c.CalibrationKey("m" * 64, "entropy", 16, "j" * 64, "tensorrt-fp16"),
              c.CalibrationKey("m" * 64, "entropy", 16, "i" * 64, "weight-ops")]
    assert len({base.id, *(k.id for k in others)}) == 5
    ranges = {"x": (np.array(-1.5, np.float32), np.array(2.0, np.float32))}
    cache = c.CalibrationCache()
    cache.put(base, ranges, tool="test")
    cache.write(tmp_path / c.CALIBRATION_CACHE)
    again = c.CalibrationCache.read(tmp_path / c.CALIBRATION_CACHE)
    got = again.get(base)
    assert got is not None and float(got["x"][0]) == -1.5 and float(got["x"][1]) == 2.0
    assert all(again.get(k) is None for k in others)
    entry = json.loads((tmp_path / c.CALIBRATION_CACHE).read_text())["entries"][base.id]
    assert entry["method"] == "entropy" and entry["layout"] == "tensorrt-fp16" and entry["images"] == 16


def test_unreadable_cache_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / c.CALIBRATION_CACHE
    path.write_text("{not json")
    assert c.CalibrationCache.read(path).entries == {}
    assert "ignoring the calibration cache" in caplog.text
    path.write_text(json.dumps({"format": 99, "entries": {}}))
    assert c.CalibrationCache.read(path).entries == {}
    assert c.CalibrationCache.read(tmp_path / "absent.json").entries == {}


def test_quantizer_reuses_cached_ranges(fp32, images, tmp_path, monkeypatch):
    cache = c.CalibrationCache()
    layout = q.int8_layout("tensorrt")
    with q.Int8Quantizer(fp32, layout) as quantizer:
        first, hit = quantizer.calibrate(images, "minmax", cache)
        assert not hit and len(cache.entries) == 1
        monkeypatch.setattr(q, "calibrate", lambda *a, **k: pytest.fail("calibrated again"))
        second, hit = quantizer.calibrate(images, "minmax", cache)
        assert hit and set(first) == set(second)
        # Other images are another key: calibrating again is required.
        with pytest.raises(pytest.fail.Exception, match="calibrated again"):
            quantizer.calibrate(images[:8], "minmax", cache)
    assert not list(fp32.parent.glob(".model.pre*"))  # the pre-processed copy is gone


def test_graph_digest_ignores_the_exporters_stack_traces(fp32, tmp_path):
    """torch.export records the file and line of each op; an edit elsewhere in those sources must not miss the
    cache (an edited docstring of leapkit/runtimes.py made every ViT-S re-export recalibrate for ~7 minutes)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32))
    for node in model.graph.node:
        for prop in node.metadata_props:
            prop.value = prop.value.replace("line ", "line 1")
    moved = tmp_path / "moved.onnx"
    onnx.save(model, str(moved))
    assert c.sha256_bytes(moved.read_bytes()) != c.sha256_bytes(fp32.read_bytes())
    assert c.graph_digest(moved) == c.graph_digest(fp32)
    weight = next(t for t in model.graph.initializer if t.dims)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 1, weight.name))
    onnx.save(model, str(moved))
    assert c.graph_digest(moved) != c.graph_digest(fp32)


def test_cache_keeps_the_newest_entries(tmp_path):
    cache = c.CalibrationCache()
    ranges = {"x": (np.array(0.0, np.float32), np.array(1.0, np.float32))}
    keys = [c.CalibrationKey("m" * 64, "minmax", n, "i" * 64, "weight-ops") for n in range(c.MAX_ENTRIES + 1)]
    for key in keys[:-1]:
        cache.put(key, ranges, tool="test")
    cache.put(keys[0], ranges, tool="test")  # used again: the newest now
    cache.write(tmp_path / c.CALIBRATION_CACHE)
    cache = c.CalibrationCache.read(tmp_path / c.CALIBRATION_CACHE)
    cache.put(keys[-1], ranges, tool="test")
    assert len(cache.entries) == c.MAX_ENTRIES
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[-1]) is not None
