"""lr_at, scaled_lr and the weight-decay parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dvfl_train.schedule import build_optimizer, lr_at, param_groups, scaled_lr, set_lr

SCHED = {"total_steps": 1200, "warmup_steps": 200, "base_lr": 0.1, "warmup_lr": 0.001,
         "min_lr": 1e-4}


def test_anchor_points():
    assert lr_at(0, **SCHED) == 0.001
    assert lr_at(200, **SCHED) == 0.1
    assert lr_at(1200, **SCHED) == pytest.approx(1e-4, abs=1e-15)
    assert lr_at(5000, **SCHED) == 1e-4  # past the end: stays at the minimum
    # warm-up is linear: halfway is the mean
    assert lr_at(100, **SCHED) == pytest.approx((0.001 + 0.1) / 2, rel=1e-12)
    # cosine midpoint is the mean of base and min, quarter point (1 + cos(pi/4)) / 2 of the way
    assert lr_at(700, **SCHED) == pytest.approx((0.1 + 1e-4) / 2, rel=1e-12)
    assert lr_at(450, **SCHED) == pytest.approx(
        1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi / 4)) / 2, rel=1e-12)


def test_default_min_lr_is_zero():
    kw = {k: v for k, v in SCHED.items() if k != "min_lr"}
    assert lr_at(1200, **kw) == pytest.approx(0.0, abs=1e-15)


def test_monotone_pieces():
    warm = [lr_at(s, **SCHED) for s in range(0, 201)]
    cos = [lr_at(s, **SCHED) for s in range(200, 1201)]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    assert all(a > b for a, b in zip(cos, cos[1:]))


def test_no_warmup_and_all_warmup():
    assert lr_at(0, total_steps=10, warmup_steps=0, base_lr=0.5, warmup_lr=0.01) == 0.5
    assert lr_at(10, total_steps=10, warmup_steps=0, base_lr=0.5, warmup_lr=0.01) == \
        pytest.approx(0.0, abs=1e-15)
    # warm-up as long as the run: linear up to the end, then the minimum
    assert lr_at(5, total_steps=10, warmup_steps=10, base_lr=0.5, warmup_lr=0.0) == 0.25
    assert lr_at(10, total_steps=10, warmup_steps=10, base_lr=0.5, warmup_lr=0.0,
                 min_lr=0.01) == 0.01


@pytest.mark.parametrize("step, total, warmup", [(-1, 10, 2), (0, 0, 0), (0, 10, 11),
                                                 (0, 10, -1)])
def test_bad_arguments(step, total, warmup):
    with pytest.raises(ValueError):
        lr_at(step, total_steps=total, warmup_steps=warmup, base_lr=0.1, warmup_lr=0.0)


def test_scaled_lr():
    assert scaled_lr(0.1, 512) == 0.1
    assert scaled_lr(0.1, 24) == pytest.approx(0.0046875, rel=1e-15)
    assert scaled_lr(0.001, 1024) == 0.002
    with pytest.raises(ValueError):
        scaled_lr(0.1, 0)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.gamma_1 = nn.Parameter(torch.full((8,), 0.5))
        self.gamma_2 = nn.Parameter(torch.full((1, 8), 0.5))  # 2-D: excluded by name alone


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList([_Block()])
        self.bn = nn.BatchNorm1d(8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_param_groups_exact_membership():
    model = _Toy()
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert decay["param_names"] == ["stem.weight", "blocks.0.fc.weight", "head.weight"]
    assert no_decay["param_names"] == [
        "stem.bias", "blocks.0.gamma_1", "blocks.0.gamma_2", "blocks.0.norm1.weight",
        "blocks.0.norm1.bias", "blocks.0.fc.bias", "bn.weight", "bn.bias", "norm.weight",
        "norm.bias", "head.bias"]
    params = dict(model.named_parameters())
    for group in (decay, no_decay):
        assert [id(p) for p in group["params"]] == [id(params[n]) for n in group["param_names"]]


def test_norm_params_excluded_even_when_not_1d():
    class OddNorm(nn.GroupNorm):
        def __init__(self):
            super().__init__(2, 4)
            self.extra = nn.Parameter(torch.ones(2, 2))

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.n = OddNorm()
            self.w = nn.Parameter(torch.ones(2, 2))

    decay, no_decay = param_groups(M(), 0.1)
    assert decay["param_names"] == ["w"]
    assert no_decay["param_names"] == ["n.weight", "n.bias", "n.extra"]


def test_adamw_decays_only_weights_decoupled_and_unknown_names_fail():
    torch.manual_seed(0)
    model = _Toy()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, name="adamw")
    assert isinstance(opt, torch.optim.AdamW)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient, zero moments: decoupled decay alone, w <- w * (1 - lr * wd)
    decayed = set(opt.param_groups[0]["param_names"])
    for name, p in model.named_parameters():
        expected = before[name] * 0.95 if name in decayed else before[name]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer(model, lr=0.1, weight_decay=0.5, name="adam")


def test_optimizer_decays_only_weights():
    torch.manual_seed(0)
    model = _Toy()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient: only weight decay moves parameters, w <- w - lr * wd * w
    decayed = set(opt.param_groups[0]["param_names"])
    for name, p in model.named_parameters():
        if name in decayed:
            torch.testing.assert_close(p.detach(), before[name] * 0.95)
        else:
            assert torch.equal(p.detach(), before[name]), name


def test_set_lr_sets_every_group():
    opt = build_optimizer(_Toy(), lr=0.1, weight_decay=1e-4)
    set_lr(opt, lr_at(0, **SCHED))
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.001]


def test_video_focalnet_groups():
    from dvfl_cache.models import create_model

    model = create_model("vfl-nano", embed_dim=8, num_classes=3, num_frames=2, img_size=32,
                         use_layerscale=True)
    decay, no_decay = param_groups(model, 1e-4)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert "layers.0.blocks.0.gamma_1" in no_decay["param_names"]
    assert "head.weight" in decay["param_names"]
    for name, p in zip(decay["param_names"], decay["params"]):
        assert p.ndim >= 2 and ".norm" not in name and not name.startswith("norm."), name
    for name in no_decay["param_names"]:
        assert name.endswith((".bias", "gamma_1", "gamma_2")) or "norm" in name, name


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step_is_plain_or_nesterov_momentum(nesterov):
    """First two SGD steps on a constant gradient g (no weight decay), momentum m, LR lr:
    plain: buf1 = g, p1 = p0 - lr g; buf2 = (1 + m) g, p2 = p1 - lr (1 + m) g.
    Nesterov: p1 = p0 - lr (1 + m) g; p2 = p1 - lr (g + m (1 + m) g)."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = build_optimizer(model, lr=0.5, weight_decay=0.0, momentum=0.5, nesterov=nesterov)
    assert opt.param_groups[0]["nesterov"] is nesterov
    positions = []
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(1, 1)).sum().backward()  # d(w * 1)/dw = 1
        opt.step()
        positions.append(model.weight.item())
    m = 0.5
    if nesterov:
        expected = [1 - 0.5 * (1 + m), 1 - 0.5 * (1 + m) - 0.5 * (1 + m * (1 + m))]
    else:
        expected = [1 - 0.5, 1 - 0.5 - 0.5 * (1 + m)]
    assert positions == pytest.approx(expected, abs=1e-7)


def test_nesterov_is_refused_for_adamw():
    with pytest.raises(ValueError, match="nesterov applies to sgd only"):
        build_optimizer(torch.nn.Linear(1, 1), lr=0.1, weight_decay=0.0, nesterov=True,
                        name="adamw")


@pytest.mark.parametrize("name,nesterov", [("sgd", False), ("sgd", True), ("adamw", False)])
def test_multi_tensor_steps_equal_single_tensor_steps_bit_for_bit(name, nesterov):
    """The optimizers step all parameters with torch's foreach kernels (fewer calls per step
    on the CPU); the weights after several steps with weight decay equal those of the
    one-parameter-at-a-time loop torch picks on the CPU by default, exactly."""
    from dvfl_cache.models import create_model

    torch.manual_seed(0)
    nets = [create_model("vfl-nano", num_classes=5, num_frames=2, img_size=32, embed_dim=8,
                         depths=[1, 1, 1, 1]) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = [t.clone() for t in nets[0].parameters()]
    opts = [build_optimizer(net, lr=0.05, weight_decay=0.01, nesterov=nesterov, name=name)
            for net in nets]
    assert all(g["foreach"] for g in opts[0].param_groups)
    for g in opts[1].param_groups:
        g["foreach"] = False
    x, y = torch.randn(2, 2, 3, 32, 32), torch.tensor([1, 3])
    for step in range(3):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            torch.manual_seed(step)  # the same drop-path masks for both
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    assert all(not torch.equal(a, s) for a, s in zip(nets[0].parameters(), start))
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))
