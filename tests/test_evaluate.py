"""Evaluation protocols on synthetic features, the data splits, a synthetic run and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from leapkit.config import Config, save_config
from leapkit.errors import DataError, RunError
from leapkit.eval.features import extract_features, labelled_splits
from leapkit.eval.metrics import knn, linear_probe, retrieval_map
from leapkit.eval.record import EvalReport
from leapkit.eval.stage import evaluate_model, evaluate_run
from leapkit.models import create_student, create_teacher


def blobs(n: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    y = torch.arange(n) % classes
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


# --- protocols -----------------------------------------------------------------------------------


def test_probe_and_knn_separate_separable_classes():
    tx, ty = blobs(600, 10, 32, 1.0, seed=0)
    vx, vy = blobs(200, 10, 32, 1.0, seed=1)
    probe = linear_probe(tx, ty, vx, vy)
    assert probe["top1"] > 95 and probe["top5"] >= probe["top1"]
    assert knn(tx, ty, vx, vy)["top1"] > 95
    assert retrieval_map(tx, ty, vx, vy)["map"] > 90


def test_probe_and_knn_are_near_chance_on_random_labels():
    g = torch.Generator().manual_seed(0)
    tx, vx = torch.randn(1000, 32, generator=g), torch.randn(500, 32, generator=g)
    ty, vy = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (500,), generator=g)
    assert linear_probe(tx, ty, vx, vy)["top1"] < 20
    assert knn(tx, ty, vx, vy)["top1"] < 20
    assert retrieval_map(tx, ty, vx, vy)["map"] < 15


def test_linear_probe_is_deterministic_for_a_seed():
    tx, ty = blobs(300, 5, 16, 4.0, seed=0)
    vx, vy = blobs(100, 5, 16, 4.0, seed=1)
    assert linear_probe(tx, ty, vx, vy, seed=3) == linear_probe(tx, ty, vx, vy, seed=3)


def test_single_class_train_split_is_refused():
    x = torch.randn(10, 4)
    with pytest.raises(DataError, match="single class"):
        linear_probe(x, torch.zeros(10, dtype=torch.long), x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(DataError, match="single class"):
        knn(x, torch.zeros(10, dtype=torch.long), x, torch.zeros(10, dtype=torch.long))


def test_retrieval_map_matches_a_hand_computed_case():
    # Cosine order from query [1, 0]: g0, g1, g2, g3 -> relevance 1, 0, 1, 0 -> AP = (1/1 + 2/3) / 2.
    gallery = torch.tensor([[1.0, 0.1], [1.0, 0.3], [0.5, 1.0], [0.0, 1.0]])
    gy = torch.tensor([0, 1, 0, 1])
    # Second query [0, 1] (class 1): order g3, g2, g1, g0 -> relevance 1, 0, 1, 0 as well.
    res = retrieval_map(gallery, gy, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert res["map"] == pytest.approx(100 * (1 + 2 / 3) / 2, abs=1e-4)
    res = retrieval_map(gallery, gy, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 2]))
    assert res["queries"] == 1 and res["skipped_queries"] == 1


def demo_config(tmp_path: Path | None = None) -> Config:
    cfg = Config(recipe="test")
    cfg.data.source = "digits"
    cfg.model.teacher, cfg.model.student, cfg.model.img_size = "leapkit_demo_teacher", "leapkit_demo_student", 32
    return cfg


def image_folder(root: Path, classes: dict[str, list[str]], per_class: int = 4) -> Path:
    colours = {"a": (250, 20, 20), "b": (20, 250, 20), "c": (20, 20, 250)}
    for split, names in classes.items():
        for c in names:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = tuple(max(0, v - 10 * i) for v in colours[c])
                Image.new("RGB", (36, 36), colour).save(root / split / c / f"{i}.png")
    return root


def test_digit_splits():
    train, val = labelled_splits(demo_config())
    assert (len(train), len(val)) == (1437, 360)
    assert train[0][0].shape == (3, 32, 32)


def test_folder_splits_share_the_train_label_space(tmp_path):
    root = image_folder(tmp_path, {"train": ["a", "b", "c"], "val": ["b", "c"]})
    train, val = labelled_splits(demo_config(), root=root)
    assert train.classes == ["a", "b", "c"]
    assert sorted(set(val.labels)) == [1, 2]
    assert val[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"train": ["a", "b"]}, "has no val/ folder"),
        ({"train": ["a", "b"], "val": ["c", "a"]}, "classes missing from train/: c"),
        ({"train": ["a"], "val": ["a"]}, "needs at least two class folders"),
    ],
)
def test_bad_folder_splits(tmp_path, layout, message):
    root = image_folder(tmp_path, layout)
    with pytest.raises(DataError, match=message):
        labelled_splits(demo_config(), root=root)


def test_folder_without_class_folders(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / split / "x.png")
    with pytest.raises(DataError, match="needs at least two class folders"):
        labelled_splits(demo_config(), root=tmp_path)


def test_extract_features_pools(tmp_path):
    root = image_folder(tmp_path, {"train": ["a", "b"], "val": ["a", "b"]})
    train, _ = labelled_splits(demo_config(), root=root)
    model = create_student("leapkit_demo_student", 32)
    cls_x, y = extract_features(model, train, pool="cls", batch_size=3)
    avg_x, _ = extract_features(model, train, pool="avg")
    assert cls_x.shape == avg_x.shape == (8, 32) and y.tolist() == [0] * 4 + [1] * 4
    assert not torch.allclose(cls_x, avg_x)
    res = evaluate_model(model, train, train)
    assert set(res) >= {"linear_probe_top1", "linear_probe_top5", "knn_top1", "retrieval_map", "n_train", "n_val"}


# --- runs ----------------------------------------------------------------------------------------


def make_run(root: Path, with_student: bool = True) -> Path:
    torch.manual_seed(0)
    root.mkdir(parents=True)
    teacher = create_teacher("leapkit_demo_teacher", 32, pretrained=False)
    save_file(teacher.state_dict(), str(root / "teacher.safetensors"))
    cfg = demo_config()
    cfg.model.teacher_weights = str(root / "teacher.safetensors")
    save_config(cfg, root / "config.yaml")
    if with_student:
        save_file(create_student("leapkit_demo_student", 32).state_dict(), str(root / "student.safetensors"))
    return root


def test_evaluate_run_writes_eval_json(tmp_path):
    run = make_run(tmp_path / "run")
    data = image_folder(tmp_path / "data", {"train": ["a", "b", "c"], "val": ["a", "b", "c"]}, per_class=3)
    out = evaluate_run(run, data=data)
    saved = json.loads((run / "eval.json").read_text())
    assert saved == out.to_dict() and EvalReport.load(run) == out
    assert out.teacher is not None and out.gap is not None and set(out.gap) == {
        "linear_probe_top1", "linear_probe_top5", "knn_top1", "retrieval_map"
    }
    for key in ("linear_probe_top1", "knn_top1", "retrieval_map"):
        assert 0 <= saved[key] <= 100 and 0 <= saved["teacher"][key] <= 100
        assert saved["gap"][key] == pytest.approx(saved["teacher"][key] - saved[key], abs=1e-3)
    assert saved["n_val"] == 9 and saved["feature_dim"] == 32 and saved["teacher"]["feature_dim"] == 96


def test_bad_runs(tmp_path):
    (tmp_path / "notarun").mkdir()
    with pytest.raises(RunError, match="is not a leapkit run"):
        evaluate_run(tmp_path / "notarun")
    with pytest.raises(RunError, match="has no student.safetensors"):
        evaluate_run(make_run(tmp_path / "unfinished", with_student=False))


def leapkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leapkit", *args], capture_output=True, text=True)


def test_cli_eval_end_to_end(tmp_path):
    run = make_run(tmp_path / "run")
    data = image_folder(tmp_path / "data", {"train": ["a", "b"], "val": ["a", "b"]})
    proc = leapkit("eval", str(run), "--data", str(data), "--no-teacher", "--pool", "avg")
    assert proc.returncode == 0, proc.stderr
    assert "linear probe top-1" in proc.stdout
    saved = json.loads((run / "eval.json").read_text())
    assert saved["n_train"] == 8 and saved["pool"] == "avg" and "teacher" not in saved


def test_cli_eval_bad_run_is_one_line_exit_2(tmp_path):
    proc = leapkit("eval", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a leapkit run" in lines[0]


def test_cli_eval_bad_data_folder(tmp_path):
    from typer.testing import CliRunner

    from leapkit.cli.main import app

    run = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["eval", str(run), "--data", str(tmp_path / "nodata")])
    assert isinstance(result.exception, DataError) and "evaluation data folder not found" in str(result.exception)


def test_cli_eval_bad_pool_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from leapkit.cli.main import app

    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--pool", "max"])
    assert result.exit_code == 2 and "'max' is not one of 'cls', 'avg'" in result.output


def test_eval_report_keeps_the_eval_json_keys():
    """A student-only report writes no teacher, gap or revisitop keys; an unknown key survives a round trip."""
    raw = {
        "linear_probe_top1": 90.0, "linear_probe_top5": 99.0, "knn_top1": 89.0, "knn_top5": 98.0, "retrieval_map": 70.0,
        "n_train": 10, "n_val": 5, "feature_dim": 32, "pool": "cls", "data": "digits", "newer_key": 1,
    }
    report = EvalReport.from_dict(raw)
    assert report.to_dict() == raw and report.teacher is None
    table = report.table()
    assert [c.title for c in table.columns] == ["metric", "student"]
    assert table.rows[0] == ["linear probe top-1 (%)", "90.00"]
    with_teacher = EvalReport.from_dict({**raw, "teacher": {**raw, "linear_probe_top1": 95.0}})
    assert with_teacher.table().rows[0] == ["linear probe top-1 (%)", "90.00", "95.00", "+5.00"]
