import pytest
import torch

from leapkit.curriculum import CurriculumController, linear_cka, mean_cosine


def gram_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """The textbook definition: HSIC of centred linear Gram matrices."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    gx, gy = h @ x @ x.T @ h, h @ y @ y.T @ h
    return ((gx * gy).sum() / (gx.norm() * gy.norm())).item()


@pytest.mark.parametrize("dims", [(16, 16), (8, 32)])
def test_cka_matches_gram_definition(dims):
    torch.manual_seed(0)
    x = torch.randn(4, 10, dims[0])
    y = x[..., :1].repeat(1, 1, dims[1]) + 0.5 * torch.randn(4, 10, dims[1])
    assert linear_cka(x, y) == pytest.approx(gram_cka(x.reshape(40, -1), y.reshape(40, -1)), abs=1e-5)


def test_cka_invariances():
    torch.manual_seed(0)
    x = torch.randn(64, 12)
    q, _ = torch.linalg.qr(torch.randn(12, 12))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-5)
    assert linear_cka(x, torch.randn(64, 12)) < 0.5
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(x, torch.randn(63, 12))


def test_cosine_metric():
    x = torch.randn(2, 5, 8)
    assert mean_cosine(x, 2 * x) == pytest.approx(1.0, abs=1e-6)
    assert mean_cosine(x, -x) == pytest.approx(-1.0, abs=1e-6)


def test_start_block_scan_starts_at_best_block():
    c = CurriculumController(num_blocks=4)
    assert c.scan_start_block([0.1, 0.7, 0.3, 0.2], images=8) == 2
    assert c.start_scan == {"scores": [0.1, 0.7, 0.3, 0.2], "start_block": 2, "images": 8}
    assert c.summary()["calibration"] == c.start_scan  # curriculum.json keeps its key


def test_level_up_on_threshold_resets_ema():
    c = CurriculumController(num_blocks=4, threshold=0.8, ema_alpha=0.5)
    assert c.update(0.9, step=1, epoch=0.1) is None  # ema 0.45
    event = c.update(0.9, step=2, epoch=0.2)  # ema 0.675 -> no
    assert event is None
    event = c.update(1.0, step=3, epoch=0.3)  # ema 0.8375 -> level up
    assert event is not None and (event.from_block, event.to_block, event.reason) == (1, 2, "threshold")
    assert c.block == 2 and c.ema == 0.0 and c.block_start_epoch == 0.3


def test_level_up_on_max_epochs():
    c = CurriculumController(num_blocks=3, threshold=0.99, max_epochs_per_block=2)
    assert c.update(0.1, step=1, epoch=1.5) is None
    event = c.update(0.1, step=2, epoch=2.0)
    assert event.reason == "max_epochs" and c.block == 2
    assert c.update(0.1, step=3, epoch=3.9) is None
    assert c.update(0.1, step=4, epoch=4.0).to_block == 3


def test_never_past_last_block():
    c = CurriculumController(num_blocks=2, threshold=0.5)
    c.update(0.9, 1, 0.1)
    assert c.block == 2
    for step in range(2, 10):
        assert c.update(0.99, step, step * 10.0) is None
    assert c.block == 2 and c.blocks_visited == [1, 2]


def test_snap_to_last():
    c = CurriculumController(num_blocks=6, threshold=0.5, snap_to_last_at=3)
    c.update(0.9, 1, 0.1)
    assert c.block == 2
    event = c.update(0.9, 2, 0.2)
    assert c.block == 6 and event.reason == "snap"
    assert [e.to_block for e in c.level_ups] == [2, 3, 6]


def test_snap_at_the_start_block_scan():
    c = CurriculumController(num_blocks=6, snap_to_last_at=3)
    assert c.scan_start_block([0, 0, 0, 1, 0, 0]) == 6


def test_baseline_targets_last_block():
    c = CurriculumController(num_blocks=5, mode="baseline", threshold=0.1)
    c.scan_start_block([1, 0, 0, 0, 0])
    assert c.block == 5
    assert c.update(1.0, 1, 10.0) is None and c.block == 5


def test_state_round_trip():
    c = CurriculumController(num_blocks=4, threshold=0.6, ema_alpha=0.3)
    c.scan_start_block([0.5, 0.1, 0.1, 0.1])
    for i in range(8):
        c.update(0.95, i, i / 4)
    d = CurriculumController(num_blocks=4)
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == c.state_dict()
    assert d.start_scan == c.start_scan and "calibration" in c.state_dict()  # the checkpoints' key, kept
    assert d.update(0.95, 9, 2.5) == c.update(0.95, 9, 2.5)
