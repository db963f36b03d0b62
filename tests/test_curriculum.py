import json

import pytest
import torch
from helpers import run_cli

from leapkit.config import CurriculumConfig
from leapkit.curriculum import CurriculumController, linear_cka, mean_cosine
from leapkit.flops import StepCosts, train_macs


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


# --- the curricula side by side (issue 23) ---------------------------------------------------------------------------


def test_progressive_gives_every_block_an_equal_share_and_ignores_the_score():
    c = CurriculumController(num_blocks=4, mode="progressive", threshold=0.1, epochs=8)
    c.scan_start_block([0.9, 0.1, 0.1, 0.1])
    assert c.block_epochs == 2.0
    assert c.update(1.0, step=1, epoch=1.99) is None  # a perfect score does not end a share early
    assert c.update(0.0, step=2, epoch=2.0).reason == "schedule" and c.block == 2
    # Shares end at fixed epochs (2, 4, 6), not 2 epochs after the step a level-up landed on.
    assert c.update(0.0, step=3, epoch=3.99) is None
    assert c.update(0.0, step=4, epoch=4.01).to_block == 3
    assert c.update(0.0, step=5, epoch=6.0).to_block == 4
    assert c.update(0.0, step=6, epoch=8.0) is None and c.blocks_visited == [1, 2, 3, 4]
    assert [e.reason for e in c.level_ups] == ["schedule"] * 3


def test_progressive_shares_the_epochs_among_the_blocks_from_the_start_block():
    c = CurriculumController(num_blocks=4, mode="progressive", epochs=6)
    assert c.scan_start_block([0.1, 0.1, 0.9, 0.1]) == 3
    assert c.block_epochs == 3.0
    assert c.update(0.5, step=1, epoch=2.9) is None
    assert c.update(0.5, step=2, epoch=3.0).to_block == 4


def feed(c: CurriculumController, scores: list[float], start_step: int = 0, epoch: float = 0.0):
    """Feed scores one step each (all at ``epoch``); the level-ups they caused."""
    events = [c.update(s, start_step + i + 1, epoch) for i, s in enumerate(scores)]
    return [e for e in events if e is not None]


def test_plateau_waits_while_the_score_improves_and_levels_up_when_it_stops():
    c = CurriculumController(num_blocks=3, mode="plateau", plateau_window=4, plateau_tolerance=0.01,
                             max_epochs_per_block=100)
    c.skip_start_scan()
    rising = [0.5 + 0.02 * i for i in range(12)]  # +0.08 per window, far above 1% of ~0.6
    assert feed(c, rising) == []
    flat = [0.8, 0.8, 0.8, 0.8, 0.801, 0.8, 0.8, 0.8025]  # 4 updates flat after the rise, then 4 more
    events = feed(c, flat, start_step=12)
    assert len(events) == 1 and c.block == 2
    e = events[0]
    assert (e.reason, e.from_block, e.to_block) == ("plateau", 1, 2)
    assert e.step == 20 and e.gain == pytest.approx((0.800875 - 0.8) / 0.8)
    assert c.block_scores == [] and c.ema == 0.0  # the new block starts its own windows


def test_plateau_needs_two_full_windows_on_the_block():
    c = CurriculumController(num_blocks=3, mode="plateau", plateau_window=5, plateau_tolerance=0.5)
    assert feed(c, [0.7] * 9) == []  # flat, but only 9 of the 10 updates
    assert feed(c, [0.7], start_step=9)[0].reason == "plateau"


def test_plateau_keeps_the_epoch_cap_as_safety_net():
    c = CurriculumController(num_blocks=3, mode="plateau", plateau_window=50, max_epochs_per_block=1.0)
    assert c.update(0.1, step=1, epoch=0.5) is None
    event = c.update(0.2, step=2, epoch=1.0)
    assert event.reason == "max_epochs" and event.gain is None  # fewer than 2W updates: no gain yet


def test_plateau_ignores_the_threshold_and_leap_ignores_the_plateau():
    plateau = CurriculumController(num_blocks=3, mode="plateau", threshold=0.1, plateau_window=3)
    assert feed(plateau, [0.05, 0.4, 0.7, 0.95, 0.99]) == []  # above the threshold, still improving
    leap = CurriculumController(num_blocks=3, mode="leap", threshold=0.99, plateau_window=1)
    assert feed(leap, [0.5] * 10) == []  # flat, but leap only reads its threshold and its cap


def test_plateau_resumes_mid_window_with_the_same_decisions():
    def run(scores, resume_at=None):
        c = CurriculumController(num_blocks=4, mode="plateau", plateau_window=3, plateau_tolerance=0.02)
        for i, s in enumerate(scores):
            if i == resume_at:  # a restart: a fresh controller from the checkpoint's state
                fresh = CurriculumController(num_blocks=4, mode="plateau")
                fresh.load_state_dict(c.state_dict())
                c = fresh
            c.update(s, i + 1, i / 10)
        return c.summary()

    scores = [0.3, 0.5, 0.6, 0.66, 0.66, 0.66, 0.66, 0.66, 0.66, 0.4, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    straight = run(scores)
    assert [(e["step"], e["reason"]) for e in straight["level_ups"]] == [(9, "plateau"), (17, "plateau")]
    for cut in (4, 12):  # inside block 1's first window and block 2's second
        assert run(scores, resume_at=cut) == straight


def test_summary_records_the_rule_and_why_each_level_up_happened():
    c = CurriculumController(num_blocks=2, mode="plateau", plateau_window=1, plateau_tolerance=0.0)
    c.skip_start_scan()
    feed(c, [0.5, 0.4])
    s = c.summary()
    assert (s["mode"], s["plateau_window"], s["plateau_tolerance"]) == ("plateau", 1, 0.0)
    assert s["level_ups"][0]["reason"] == "plateau" and s["level_ups"][0]["gain"] == pytest.approx(-0.2)
    assert CurriculumController(num_blocks=8, mode="progressive", epochs=16).summary()["block_epochs"] == 2.0


def test_level_ups_of_older_checkpoints_load():
    c = CurriculumController(num_blocks=3)
    old = {"step": 4, "epoch": 1.0, "from_block": 1, "to_block": 2, "ema": 0.9, "reason": "threshold"}
    c.load_state_dict({"block": 2, "level_ups": [old]})  # written before plateau existed: no gain, no scores
    assert c.level_ups[0].gain is None and c.block_scores == [] and c.blocks_visited == [1, 2]


def test_from_config_carries_every_rule():
    cfg = CurriculumConfig(mode="plateau", threshold=0.7, ema_alpha=0.5, max_epochs_per_block=3, snap_to_last_at=5,
                           plateau_window=7, plateau_tolerance=0.02)
    c = CurriculumController.from_config(6, cfg, epochs=12)
    assert (c.num_blocks, c.mode, c.threshold, c.ema_alpha, c.max_epochs_per_block, c.snap_to_last_at,
            c.plateau_window, c.plateau_tolerance, c.epochs) == (6, "plateau", 0.7, 0.5, 3, 5, 7, 0.02, 12.0)


@pytest.mark.parametrize("window, tolerance", [(0, 0.01), (3, -0.1)])
def test_plateau_rule_out_of_range_is_refused(window, tolerance):
    with pytest.raises(ValueError, match="plateau needs window >= 1 and tolerance >= 0"):
        CurriculumController(num_blocks=3, mode="plateau", plateau_window=window, plateau_tolerance=tolerance)


@pytest.mark.parametrize("args, message", [
    (["--curriculum", "fast"],
     "Invalid value for '--curriculum': 'fast' is not one of 'leap', 'baseline', 'progressive', 'plateau'"),
    (["--curriculum", "plateau", "--plateau-window", "0"],
     "curriculum.plateau_window must be >= 1 score update, got 0"),
    (["--plateau-tolerance", "-0.5"], "curriculum.plateau_tolerance must be a finite number >= 0, got -0.5"),
    (["--set", "curriculum.plateau_tolerance=inf"], "curriculum.plateau_tolerance must be a"),
])
def test_bad_curriculum_options_are_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    code, err = run_cli(["distill", *args, "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("mode, teacher, signal, calibration", [
    ("baseline", [3, 3], 0, 0), ("leap", [1, 2], 1, 1), ("plateau", [1, 2], 1, 1), ("progressive", [1, 2], 0, 1),
])
def test_training_flops_count_what_each_curriculum_runs(mode, teacher, signal, calibration):
    costs = StepCosts(teacher_upto=[0, 10, 20, 30], student_fwd=1, head_fwd=0, signal=5)
    steps = [{"images": 1, "teacher_blocks_run": 1}, {"images": 1, "teacher_blocks_run": 2}]
    parts = train_macs(steps, costs, mode, calibration_images=2).parts
    assert parts.teacher == sum(costs.teacher_upto[k] for k in teacher)
    assert parts.signal == signal * 2 * 5  # the CKA counts where a level-up reads it
    assert (parts.calibration > 0) == bool(calibration)


@pytest.mark.slow
def test_progressive_and_plateau_runs_record_why_each_level_up_happened(tmp_path):
    """End to end on the demo: the trainer feeds each controller and curriculum.json says why it climbed."""
    from leapkit.config import resolve_config
    from leapkit.flops import run_flops
    from leapkit.train import distill

    reasons = {}
    for mode in ("progressive", "plateau"):
        cfg = resolve_config("demo", {
            "curriculum": {"mode": mode, "max_epochs_per_block": 0.5, "plateau_window": 2},
            "train": {"epochs": 2, "eval_at_end": False, "log": "none"},
        })
        distill(cfg, out=tmp_path / mode, show_progress=False)
        cur = json.loads((tmp_path / mode / "curriculum.json").read_text())
        reasons[mode] = [e["reason"] for e in cur["level_ups"]]
        assert cur["mode"] == mode and cur["calibration"]["scores"]  # both climb from the start-block scan
        flops = run_flops(tmp_path / mode, write=False)
        assert flops.train_flops_leap is not None and flops.train_flops_saving_pct > 0
    assert reasons["progressive"] == ["schedule"] * 7  # 8 blocks, a quarter epoch each
    assert "plateau" in reasons["plateau"] and set(reasons["plateau"]) <= {"plateau", "max_epochs"}
