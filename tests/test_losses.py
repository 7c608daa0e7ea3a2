"""kd_loss and feature_loss against closed-form values written out from the definition."""

from __future__ import annotations

import math

import pytest
import torch

from dvfl_train.losses import feature_loss, kd_loss

LN2 = math.log(2.0)


# -- a reference written from the definition, in plain Python floats ----------------------------

def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _ref_kd(s: list[list[float]], t: list[list[float]], tau: float) -> float:
    total = 0.0
    for s_row, t_row in zip(s, t):
        p_s = _softmax([x / tau for x in s_row])
        p_t = _softmax([x / tau for x in t_row])
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s))
    return tau * tau * total / len(s)


def _ref_ce(s: list[list[float]], y: list[int], eps: float = 0.0) -> float:
    total = 0.0
    for s_row, label in zip(s, y):
        c = len(s_row)
        dist = [(1 - eps) * (k == label) + eps / c for k in range(c)]
        total -= sum(d * math.log(p) for d, p in zip(dist, _softmax(s_row)))
    return total / len(s)


# -- exact anchors ------------------------------------------------------------------------------

def test_two_class_exact_values():
    # p_s = (1/2, 1/2); p_t = (3/4, 1/4) at tau = 1 and, with doubled logits, at tau = 2.
    s = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([0])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    for tau, t in ((1.0, [[math.log(3.0), 0.0]]), (2.0, [[2 * math.log(3.0), 0.0]])):
        out = kd_loss(s, torch.tensor(t), y, alpha=0.3, tau=tau)
        assert out["kd_loss"].item() == pytest.approx(tau * tau * kl, rel=1e-6)
        assert out["ce_loss"].item() == pytest.approx(LN2, rel=1e-6)
        assert out["loss"].item() == pytest.approx(0.3 * tau * tau * kl + 0.7 * LN2, rel=1e-6)
        assert out["feat_loss"].item() == 0.0


def test_label_smoothing_exact_value():
    # p = (1/2, 1/4, 1/4); eps = 0.3 makes the target (0.8, 0.1, 0.1): CE = 0.8 ln 2 + 0.2 ln 4.
    s = torch.tensor([[LN2, 0.0, 0.0]])
    out = kd_loss(s, None, torch.tensor([0]), alpha=0.0, tau=1.0, label_smoothing=0.3)
    assert out["ce_loss"].item() == pytest.approx(1.2 * LN2, rel=1e-6)
    assert out["loss"].item() == pytest.approx(1.2 * LN2, rel=1e-6)
    assert out["kd_loss"].item() == 0.0


def test_soft_target_exact_values():
    s = torch.tensor([[LN2, 0.0, 0.0]])  # p = (1/2, 1/4, 1/4)
    y = torch.tensor([[0.25, 0.75, 0.0]])
    plain = kd_loss(s, None, y, alpha=0.0, tau=1.0)["ce_loss"].item()
    assert plain == pytest.approx(0.25 * LN2 + 0.75 * 2 * LN2, rel=1e-6)
    # smoothing on a soft target: 0.7 * y + 0.1 = (0.275, 0.625, 0.1)
    smooth = kd_loss(s, None, y, alpha=0.0, tau=1.0, label_smoothing=0.3)["ce_loss"].item()
    assert smooth == pytest.approx(0.275 * LN2 + 0.725 * 2 * LN2, rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_one_hot_soft_target_equals_index_target(eps):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, generator=g)
    y = torch.tensor([0, 3, 4, 1])
    by_index = kd_loss(s, None, y, alpha=0.0, tau=1.0, label_smoothing=eps)["ce_loss"]
    soft = torch.nn.functional.one_hot(y, 5).float()
    by_dist = kd_loss(s, None, soft, alpha=0.0, tau=1.0, label_smoothing=eps)["ce_loss"]
    assert by_dist.item() == pytest.approx(by_index.item(), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_matches_reference_over_alpha_tau(alpha, tau, eps):
    g = torch.Generator().manual_seed(int(alpha * 10 + tau))
    s = torch.randn(4, 3, generator=g) * 3
    t = torch.randn(4, 3, generator=g) * 3
    y = [2, 0, 1, 1]
    out = kd_loss(s, t, torch.tensor(y), alpha=alpha, tau=tau, label_smoothing=eps)
    kd = _ref_kd(s.tolist(), t.tolist(), tau)
    ce = _ref_ce(s.tolist(), y, eps)
    assert out["kd_loss"].item() == pytest.approx(kd, rel=1e-5, abs=1e-7)
    assert out["ce_loss"].item() == pytest.approx(ce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(alpha * kd + (1 - alpha) * ce, rel=1e-5, abs=1e-7)


def test_alpha_endpoints_select_one_term():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    y = torch.tensor([0, 1, 2])
    only_ce = kd_loss(s, t, y, alpha=0.0, tau=3.0)
    only_kd = kd_loss(s, t, y, alpha=1.0, tau=3.0)
    assert only_ce["loss"].item() == pytest.approx(only_ce["ce_loss"].item(), rel=1e-7)
    assert only_kd["loss"].item() == pytest.approx(only_kd["kd_loss"].item(), rel=1e-7)
    # the parts that do not enter the loss are still reported for logging
    assert only_ce["kd_loss"].item() > 0 and only_kd["ce_loss"].item() > 0


# -- properties ---------------------------------------------------------------------------------

def test_kl_nonnegative_and_zero_for_equal_or_shifted_logits():
    g = torch.Generator().manual_seed(2)
    y = torch.zeros(8, dtype=torch.long)
    for _ in range(5):
        s, t = torch.randn(8, 6, generator=g) * 4, torch.randn(8, 6, generator=g) * 4
        assert kd_loss(s, t, y, alpha=1.0, tau=2.0)["kd_loss"].item() >= 0.0
    s = torch.randn(8, 6, generator=g)
    assert kd_loss(s, s.clone(), y, alpha=1.0, tau=2.0)["kd_loss"].item() == pytest.approx(
        0.0, abs=1e-6)
    # softmax ignores a per-row constant, so a shifted teacher is the same teacher
    assert kd_loss(s, s + 7.0, y, alpha=1.0, tau=2.0)["kd_loss"].item() == pytest.approx(
        0.0, abs=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_student_gradient_at_alpha_one(tau):
    g = torch.Generator().manual_seed(3)
    batch = 5
    s = torch.randn(batch, 4, generator=g).requires_grad_()
    t = torch.randn(batch, 4, generator=g).requires_grad_()
    kd_loss(s, t, torch.zeros(batch, dtype=torch.long), alpha=1.0, tau=tau)["loss"].backward()
    p_s, p_t = torch.softmax(s.detach() / tau, 1), torch.softmax(t.detach() / tau, 1)
    expected = tau * (p_s - p_t) / batch
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-7)
    assert t.grad is None  # the teacher is a constant


def test_teacher_features_get_no_gradient():
    g = torch.Generator().manual_seed(4)
    zs = torch.randn(2, 3, generator=g).requires_grad_()
    zt = torch.randn(2, 3, generator=g).requires_grad_()
    s = torch.randn(2, 4, generator=g).requires_grad_()
    out = kd_loss(s, torch.randn(2, 4, generator=g), torch.tensor([0, 1]), alpha=0.5, tau=2.0,
                  beta=1.0, student_features=zs, teacher_features=zt)
    out["loss"].backward()
    assert zt.grad is None
    torch.testing.assert_close(zs.grad, 2 * (zs.detach() - zt.detach()) / zs.numel())


def test_half_precision_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(5)
    s = (torch.randn(4, 10, generator=g) * 5).bfloat16()
    t = (torch.randn(4, 10, generator=g) * 5).half()
    y = torch.tensor([1, 2, 3, 4])
    out = kd_loss(s, t, y, alpha=0.5, tau=10.0)
    ref = kd_loss(s.float(), t.float(), y, alpha=0.5, tau=10.0)
    assert all(v.dtype == torch.float32 for v in out.values())
    for key in ("loss", "kd_loss", "ce_loss"):
        assert out[key].item() == pytest.approx(ref[key].item(), rel=1e-6)


def test_extreme_logits_stay_finite():
    s = torch.tensor([[1000.0, -1000.0, 0.0]])
    t = torch.tensor([[-1e4, 1e4, 0.0]], dtype=torch.float16)  # as a float16 cache stores it
    out = kd_loss(s, t, torch.tensor([1]), alpha=0.5, tau=1.0)
    assert all(torch.isfinite(v) for v in out.values())
    # p_t is (0, 1, 0) to float32 precision, so KL = log p_t(1) - log p_s(1) = 2000 = CE.
    assert out["kd_loss"].item() == pytest.approx(2000.0, rel=1e-6)
    assert out["ce_loss"].item() == pytest.approx(2000.0, rel=1e-6)


# -- representation term ------------------------------------------------------------------------

def test_feature_loss_exact_and_added_with_beta():
    zs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    zt = torch.zeros(2, 2)
    assert feature_loss(zs, zt).item() == pytest.approx(7.5)
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    out = kd_loss(s, s.clone(), y, alpha=0.5, tau=2.0, beta=0.4, student_features=zs,
                  teacher_features=zt)
    assert out["feat_loss"].item() == pytest.approx(7.5)
    assert out["loss"].item() == pytest.approx(0.5 * 0.0 + 0.5 * LN2 + 0.4 * 7.5, rel=1e-6)


# -- misuse -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 0.5, "teacher": None}, "needs teacher_logits"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": -0.1}, "alpha"),
    ({"tau": 0.0}, "tau"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"beta": 1.0}, "feature term"),
    ({"student_features": torch.zeros(2, 3)}, "feature term"),
    ({"teacher": torch.zeros(2, 5)}, "teacher_logits shape"),
    ({"target": torch.tensor([0, 1, 2])}, "3 labels"),
    ({"target": torch.tensor([0.0, 1.0])}, "class indices"),
    ({"target": torch.zeros(2, 5)}, "soft target shape"),
])
def test_misuse_raises_value_error(kwargs, match):
    args = {"student": torch.zeros(2, 4), "teacher": torch.zeros(2, 4),
            "target": torch.tensor([0, 1]), "alpha": 0.5, "tau": 2.0}
    args.update(kwargs)
    student, teacher, target = args.pop("student"), args.pop("teacher"), args.pop("target")
    with pytest.raises(ValueError, match=match):
        kd_loss(student, teacher, target, **args)


def test_feature_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        feature_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# -- the published code's criterion (kd_form="reference") ---------------------------------------

def _ref_published(s: list[list[float]], t: list[list[float]], tau: float) -> float:
    """classification/criterion.py of DVFL-Net, in plain floats: p_s where log p_s belongs."""
    total = 0.0
    for s_row, t_row in zip(s, t):
        p_s = _softmax([x / tau for x in s_row])
        p_t = _softmax([x / tau for x in t_row])
        total += sum(a * (math.log(a) - b) for a, b in zip(p_t, p_s))
    return tau * tau * total / len(s)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_reference_form_two_class_value_and_gradient(tau):
    # p_s = (1/2, 1/2), p_t = (3/4, 1/4): term = 3/4 ln 3/4 + 1/4 ln 1/4 - 1/2 per clip.
    s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[tau * math.log(3.0), 0.0]])
    out = kd_loss(s, t, torch.tensor([0]), alpha=1.0, tau=tau, kd_form="reference")
    term = 0.75 * math.log(0.75) + 0.25 * math.log(0.25) - 0.5
    assert out["kd_loss"].item() == pytest.approx(tau * tau * term, rel=1e-6)
    out["loss"].backward()
    # d/ds_j = -(tau / B) p_s(j) (p_t(j) - <p_t, p_s>) with <p_t, p_s> = 1/2
    expected = torch.tensor([[-tau * 0.5 * 0.25, tau * 0.5 * 0.25]])
    torch.testing.assert_close(s.grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("tau", [1.0, 4.0, 10.0])
def test_reference_form_matches_published_formula_and_gradient(tau):
    g = torch.Generator().manual_seed(7)
    batch = 4
    s = (torch.randn(batch, 5, generator=g) * 3).requires_grad_()
    t = torch.randn(batch, 5, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3])
    out = kd_loss(s, t, y, alpha=0.3, tau=tau, kd_form="reference")
    kd = _ref_published(s.tolist(), t.tolist(), tau)
    ce = _ref_ce(s.tolist(), y.tolist())
    assert out["kd_loss"].item() == pytest.approx(kd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.3 * kd + 0.7 * ce, rel=1e-5)
    s.grad = None
    kd_loss(s, t, y, alpha=1.0, tau=tau, kd_form="reference")["loss"].backward()
    p_s, p_t = torch.softmax(s.detach() / tau, 1), torch.softmax(t / tau, 1)
    inner = (p_s * p_t).sum(dim=1, keepdim=True)
    torch.testing.assert_close(s.grad, -tau * p_s * (p_t - inner) / batch, rtol=1e-5, atol=1e-7)


def test_reference_form_is_not_a_divergence_and_default_is_unchanged():
    s = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([0])
    # a student equal to its teacher still pays ln(1/2) - 1/2 per clip: the term is no divergence
    same = kd_loss(s, s.clone(), y, alpha=1.0, tau=1.0, kd_form="reference")["kd_loss"].item()
    assert same == pytest.approx(math.log(0.5) - 0.5, rel=1e-6)
    assert kd_loss(s, s.clone(), y, alpha=1.0, tau=1.0)["kd_loss"].item() == pytest.approx(
        0.0, abs=1e-7)
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    y = torch.tensor([0, 1, 2])
    default = kd_loss(s, t, y, alpha=0.4, tau=3.0)
    explicit = kd_loss(s, t, y, alpha=0.4, tau=3.0, kd_form="kl", pred_loss="kl", rep_loss="mean")
    for key in default:
        assert torch.equal(default[key], explicit[key])  # bit-identical


# -- the fewer-frames paper's forms (pred_loss="mse", rep_loss="sum") ---------------------------

@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_mse_prediction_term_value_and_gradient(tau):
    # p_s = (1/2, 1/2), p_t = (3/4, 1/4): sum_k (p_t - p_s)^2 = 2 / 16, no tau^2 factor.
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[tau * math.log(3.0), 0.0], [0.0, 0.0]])
    out = kd_loss(s, t, torch.tensor([0, 1]), alpha=1.0, tau=tau, pred_loss="mse")
    assert out["kd_loss"].item() == pytest.approx((0.125 + 0.0) / 2, rel=1e-6)
    out["loss"].backward()
    # d/ds_j = -(2 / (tau B)) p_s(j) (d_j - <d, p_s>), d = p_t - p_s = (1/4, -1/4), <d, p_s> = 0
    expected = torch.tensor([[-2 * 0.5 * 0.25 / (tau * 2), 2 * 0.5 * 0.25 / (tau * 2)],
                             [0.0, 0.0]])
    torch.testing.assert_close(s.grad, expected, rtol=1e-6, atol=1e-8)


def test_mse_prediction_term_matches_definition():
    g = torch.Generator().manual_seed(9)
    s, t = torch.randn(5, 6, generator=g) * 2, torch.randn(5, 6, generator=g) * 2
    y = [0, 1, 2, 3, 4]
    out = kd_loss(s, t, torch.tensor(y), alpha=0.5, tau=1.0, pred_loss="mse")
    expected = sum(sum((a - b) ** 2 for a, b in zip(_softmax(tr), _softmax(sr)))
                   for sr, tr in zip(s.tolist(), t.tolist())) / 5
    assert out["kd_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss"].item() == pytest.approx(
        0.5 * expected + 0.5 * _ref_ce(s.tolist(), y), rel=1e-5)


def test_summed_representation_term_value_and_gradient():
    zs = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    zt = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # per clip: 1 + 4 = 5 and 4 + 9 = 13; mean over the batch = 9 (the mean over elements is 4.5)
    assert feature_loss(zs, zt, reduction="sum").item() == pytest.approx(9.0)
    assert feature_loss(zs, zt).item() == pytest.approx(4.5)
    s = torch.zeros(2, 3)
    out = kd_loss(s, s.clone(), torch.tensor([0, 1]), alpha=0.0, tau=1.0, beta=0.5,
                  student_features=zs, teacher_features=zt, rep_loss="sum")
    assert out["feat_loss"].item() == pytest.approx(9.0)
    assert out["loss"].item() == pytest.approx(math.log(3.0) + 0.5 * 9.0, rel=1e-6)
    out["loss"].backward()
    torch.testing.assert_close(zs.grad, 0.5 * 2 * (zs.detach() - zt) / 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"kd_form": "kld"}, "kd_form must be one of kl, reference"),
    ({"pred_loss": "l1"}, "pred_loss must be one of kl, mse"),
    ({"rep_loss": "max"}, "rep_loss must be one of mean, sum"),
    ({"kd_form": "reference", "pred_loss": "mse"}, "cannot be combined"),
])
def test_unknown_forms_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 1]), alpha=0.5, tau=2.0,
                **kwargs)
