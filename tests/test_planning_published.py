"""The published efficiencies of the target profiles against the published measurements they cite.

Every profile's ``latency_model.measurements`` is checked here: a figure the efficiencies were set from
(``fit``) or held out to test them (``check``) must fall within the prediction's range (1.5x for fp16 on
the Jetsons); a figure that timed the backbone and more (``bound``: a depth network around a DINOv2 ViT) must
not be below the backbone's prediction. The Orin family shares its fractions of the peaks, so the AGX Orin's
held-out ViT-B/16 also tests the Orin Nano's fit of the fixed costs. A throughput figure (timm's RTX 4090
benchmark) is the time of its whole batch and is predicted at that batch.
"""

from __future__ import annotations

import pytest

from leapkit.planning.latency_model import published_model
from leapkit.planning.shape import of_timm
from leapkit.profiles import list_targets, load_target

CHECK_FACTOR = 1.5  # the bar for models the efficiencies were not set from

MEASUREMENTS = [
    pytest.param(name, m, id=f"{name}-{m.model}-{m.img_size}-{m.precision}-{m.use}")
    for name in list_targets()
    if load_target(name).latency_model is not None
    for m in load_target(name).latency_model.measurements
]


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_every_jetson_profile_has_a_published_model_that_says_it_is_not_calibrated():
    for name in list_targets():
        profile = load_target(name)
        if profile.family == "jetson":
            model = published_model(profile)
            assert model is not None and set(model.efficiencies) == set(profile.precisions), name
            assert not model.calibrated and "not calibrated" in model.source


def test_every_shipped_profile_has_a_published_model_and_an_unchecked_precision_says_unvalidated():
    for name in list_targets():
        profile = load_target(name)
        model = published_model(profile)
        assert model is not None and not model.calibrated, name
        checked = {m.precision for m in profile.latency_model.measurements if m.use in ("fit", "check")}
        for precision in model.precisions:
            p = model.predict(of_timm("vit_small_patch14_dinov2", 224), precision)
            assert p.low_ms < p.ms < p.high_ms, (name, precision)
            assert ("unvalidated" in p.source) == (precision not in checked), (name, precision, p.source)


def test_the_pi_has_no_published_figure_so_every_prediction_is_unvalidated_with_a_wider_range():
    model = published_model(load_target("raspberry-pi-5"))
    for precision in model.precisions:
        p = model.predict(of_timm("vit_tiny_patch16_224", 224), precision)
        assert "unvalidated" in p.source and p.high_ms / p.ms >= 2.5


def test_held_out_measurements_exist_and_every_one_is_cited():
    uses = {m.use for _, m in (p.values for p in MEASUREMENTS)}
    assert {"fit", "check", "bound"} <= uses
    for _, m in (p.values for p in MEASUREMENTS):
        assert m.source.startswith(("https://github.com/", "benchmarks/results/")) and m.what, m


@pytest.mark.parametrize("target, m", MEASUREMENTS)
def test_the_prediction_against_the_published_figure(target, m):
    profile = load_target(target)
    p = published_model(profile).predict(of_timm(m.model, m.img_size), m.precision, m.batch)
    if m.use == "bound":
        assert p.ms <= m.ms, (m.what, p.ms, m.ms)
    else:
        factor = CHECK_FACTOR if m.use == "check" else p.high_ms / p.ms
        assert m.ms / factor <= p.ms <= m.ms * factor, (m.what, p.ms, m.ms)
        assert p.low_ms <= m.ms <= p.high_ms
