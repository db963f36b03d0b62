"""The learning-rate schedule, the scaling rule, LARS and the weight-decay groups, against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from leapkit.config import OptimConfig
from leapkit.optim import LARS, build_optimizer, lr_at, param_groups, scaled_lr

BASE, MIN = 1e-3, 1e-5


def test_warmup_is_linear_from_the_first_step():
    assert [lr_at(s, 100, 4, BASE, MIN) for s in range(4)] == pytest.approx([BASE / 4, BASE / 2, 3 * BASE / 4, BASE])
    assert lr_at(4, 100, 4, BASE, MIN) == pytest.approx(BASE)  # the cosine starts at the peak


def test_cosine_decays_to_min_lr_at_the_end():
    lrs = [lr_at(s, 100, 0, BASE, MIN) for s in range(101)]
    assert lrs[0] == pytest.approx(BASE)
    assert lrs[50] == pytest.approx((BASE + MIN) / 2)
    assert lrs[100] == pytest.approx(MIN) and lr_at(150, 100, 0, BASE, MIN) == pytest.approx(MIN)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lr_at(25, 100, 0, BASE, MIN) == pytest.approx(MIN + 0.5 * (BASE - MIN) * (1 + math.cos(math.pi / 4)))


def test_restart_starts_a_fresh_cosine_segment_at_the_level_up():
    assert lr_at(59, 100, 10, BASE, MIN, restart_step=0) < BASE / 2
    assert lr_at(60, 100, 10, BASE, MIN, restart_step=60) == pytest.approx(BASE)
    assert lr_at(80, 100, 10, BASE, MIN, restart_step=60) == pytest.approx((BASE + MIN) / 2)
    assert lr_at(100, 100, 10, BASE, MIN, restart_step=60) == pytest.approx(MIN)
    # a level-up during warm-up does not cut the warm-up short
    assert lr_at(2, 100, 10, BASE, MIN, restart_step=2) == pytest.approx(3 * BASE / 10)


def test_linear_scaling_rule():
    assert scaled_lr(5e-4, 256, scale=True) == pytest.approx(5e-4)
    assert scaled_lr(5e-4, 64, scale=True) == pytest.approx(1.25e-4)
    assert scaled_lr(5e-4, 1024, scale=True) == pytest.approx(2e-3)
    assert scaled_lr(5e-4, 64, scale=False) == 5e-4


def test_lars_step_matches_a_hand_computed_step():
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ||w|| = 5
    g = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    b, gb = torch.tensor([1.0, 2.0]), torch.tensor([0.1, -0.2])
    pw, pb = nn.Parameter(w.clone()), nn.Parameter(b.clone())
    pw.grad, pb.grad = g.clone(), gb.clone()
    lr, wd, coef = 0.1, 0.01, 0.02
    opt = LARS([{"params": [pw], "weight_decay": wd}, {"params": [pb], "weight_decay": 0.0}], lr=lr, trust_coef=coef)
    opt.step()
    decayed = g + wd * w  # [[0.53, 0], [0, 0.04]]
    trust = coef * 5.0 / math.sqrt(0.53**2 + 0.04**2)
    torch.testing.assert_close(pw.detach(), w - lr * trust * decayed)
    torch.testing.assert_close(pb.detach(), b - lr * gb)  # vectors: no decay, no trust ratio
    # the second step adds momentum 0.9 times the first update's direction
    pw.grad, pb.grad = g.clone(), torch.zeros(2)
    before = pw.detach().clone()
    opt.step()
    decayed2 = g + wd * before
    trust2 = coef * before.norm() / decayed2.norm()
    torch.testing.assert_close(pw.detach(), before - lr * (0.9 * trust * decayed + trust2 * decayed2))


def test_zero_weights_take_a_plain_step():
    p = nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.ones(2, 2)
    LARS([p], lr=0.1).step()
    torch.testing.assert_close(p.detach(), torch.full((2, 2), -0.1))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_weight_decay_on_matrices_only():
    m = Tiny()
    decay, no_decay = param_groups([m], weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(m.fc.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(m.cls_token), id(m.pos_embed), id(m.fc.bias), id(m.norm.weight),
                                                   id(m.norm.bias)}


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer(name, cls):
    opt = build_optimizer(OptimConfig(name=name, lr=0.01, weight_decay=0.1), [Tiny()])
    assert type(opt) is cls and [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
