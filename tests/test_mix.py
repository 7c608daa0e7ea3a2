"""Per-row mixing (dvfl_cache.data.mix) and per-frame colour jitter: closed forms and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dvfl_cache.data.decode import VideoInfo
from dvfl_cache.data.mix import (Mix, MixConfig, MixDraw, box_pixels, cutmix_box, draw_mix,
                                 mix_pixels, mix_targets, mixes_from_arrays, mixes_to_arrays)
from dvfl_cache.data.transforms import adjust_colour, apply_view
from dvfl_cache.data.views import (IDENTITY_JITTER, View, ViewSampler, subsample_positions,
                                   subsample_view, views_from_arrays, views_to_arrays)

INFO = VideoInfo(num_frames=100, fps=25.0, width=320, height=240)
JITTER = (0.4, 0.4, 0.4, 0.1)
BOTH = MixConfig(mixup=0.8, cutmix=1.0, prob=1.0, seed=3)


# ------------------------------------------------------------------ the draw


def test_draw_is_a_function_of_seed_video_view_only():
    a = [draw_mix(BOTH, v, r, 10) for v in range(10) for r in range(3)]
    assert a == [draw_mix(BOTH, v, r, 10) for v in range(10) for r in range(3)]
    # reversed order of calls: same draws (no running state)
    assert a[::-1] == [draw_mix(BOTH, v, r, 10) for v in reversed(range(10))
                       for r in reversed(range(3))]
    assert draw_mix(MixConfig(mixup=0.8, cutmix=1.0, seed=4), 0, 0, 10) != a[0]


def test_draw_partner_op_and_lambda():
    draws = [draw_mix(BOTH, v, r, 7) for v in range(7) for r in range(60)]
    assert all(d is not None for d in draws)  # prob 1: every row (the reference recipe)
    for v in range(7):
        partners = {d.partner for d in draws[v * 60:(v + 1) * 60]}
        assert v not in partners and partners == set(range(7)) - {v}
    ops = [d.op for d in draws]
    assert 150 < ops.count("cutmix") < 270  # even odds over 420 rows
    for d in draws:
        assert 0.0 <= d.lam <= 1.0
        if d.op == "cutmix":
            # lambda corrected to the clipped box's area, in float32
            assert d.lam == float(np.float32(1.0 - d.box[2] * d.box[3]))
        else:
            assert d.box == (0.0, 0.0, 0.0, 0.0)
    only_mixup = [draw_mix(MixConfig(mixup=0.8), v, 0, 7) for v in range(7)]
    assert {d.op for d in only_mixup} == {"mixup"}
    only_cutmix = [draw_mix(MixConfig(cutmix=1.0), v, 0, 7) for v in range(7)]
    assert {d.op for d in only_cutmix} == {"cutmix"}


def test_mix_prob_and_off():
    half = MixConfig(mixup=0.8, prob=0.5)
    mixed = sum(draw_mix(half, v, r, 5) is not None for v in range(5) for r in range(80))
    assert 150 < mixed < 250
    assert draw_mix(MixConfig(mixup=0.8, prob=0.0), 0, 0, 5) is None
    assert draw_mix(MixConfig(), 0, 0, 5) is None and not MixConfig(prob=1.0).enabled
    # the same rows are mixed whatever the alphas (the coin comes first in the stream)
    a = [draw_mix(half, v, 0, 5) is None for v in range(5)]
    b = [draw_mix(MixConfig(cutmix=2.0, prob=0.5), v, 0, 5) is None for v in range(5)]
    assert a == b


@pytest.mark.parametrize("kw,msg", [({"mixup": -1}, "mixup alpha"),
                                    ({"cutmix": math.inf}, "cutmix alpha"),
                                    ({"prob": 1.5}, "probability")])
def test_bad_mix_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MixConfig(**kw)


def test_draw_needs_two_videos():
    with pytest.raises(ValueError, match="at least 2 videos"):
        draw_mix(BOTH, 0, 0, 1)


# ------------------------------------------------------------------ boxes and pixels


def test_cutmix_box_closed_form():
    # lam 0.75: side sqrt(0.25) = 0.5, centred
    assert cutmix_box(0.75, 0.5, 0.5) == (0.25, 0.25, 0.5, 0.5)
    # at the corner it is clipped to a quarter: corrected lam = 1 - 0.0625
    assert cutmix_box(0.75, 0.0, 0.0) == (0.0, 0.0, 0.25, 0.25)
    assert box_pixels((0.25, 0.25, 0.5, 0.5), 32) == (8, 24, 8, 24)
    assert box_pixels((0.25, 0.25, 0.5, 0.5), 20) == (5, 15, 5, 15)
    for bad in [(0.6, 0.0, 0.5, 0.5), (-0.1, 0.0, 0.5, 0.5), (0.0, 0.0, -0.2, 0.5)]:
        with pytest.raises(ValueError, match="not inside the frame"):
            box_pixels(bad, 32)


def _clip(value: int, t=2, s=8) -> torch.Tensor:
    return torch.full((t, 3, s, s), value, dtype=torch.uint8)


def test_mix_pixels_closed_forms():
    own, partner = _clip(100), _clip(200)
    up = mix_pixels(own, partner, MixDraw(partner=1, view=0, op="mixup", lam=0.25))
    assert up.dtype == torch.uint8 and (up == 175).all()  # 0.25 * 100 + 0.75 * 200
    cut = mix_pixels(own, partner, MixDraw(partner=1, view=0, op="cutmix", lam=0.75,
                                           box=(0.25, 0.5, 0.5, 0.5)))
    expect = own.clone()
    expect[..., 2:6, 4:8] = 200
    assert torch.equal(cut, expect)
    # at another size the same fractions cut the same region
    cut16 = mix_pixels(_clip(100, s=16), _clip(200, s=16), MixDraw(
        partner=1, view=0, op="cutmix", lam=0.75, box=(0.25, 0.5, 0.5, 0.5)))
    assert (cut16[..., 4:12, 8:16] == 200).all() and int((cut16 == 200).sum()) == 2 * 3 * 64
    with pytest.raises(ValueError, match="one shape"):
        mix_pixels(own, _clip(1, t=3), MixDraw(1, 0, "mixup", 0.5))
    with pytest.raises(ValueError, match="not inside"):
        mix_pixels(own, partner, MixDraw(1, 0, "cutmix", 0.5, box=(0.9, 0.0, 0.5, 0.5)))


def test_mix_targets_closed_form():
    # C = 4, smoothing 0.1: on = 0.9 + 0.025 = 0.925, off = 0.025; lam 0.7
    t = mix_targets(torch.tensor([0, 1]), torch.tensor([2, 1]), torch.tensor([0.7, 1.0]), 4,
                    smoothing=0.1)
    on, off = 0.925, 0.025
    expect = torch.tensor([[0.7 * on + 0.3 * off, off, 0.7 * off + 0.3 * on, off],
                           [off, on, off, off]])
    assert torch.allclose(t, expect, atol=1e-7)
    assert torch.allclose(t.sum(1), torch.ones(2))
    hard = mix_targets(torch.tensor([3]), torch.tensor([0]), torch.tensor([0.25]), 4)
    assert torch.equal(hard, torch.tensor([[0.75, 0.0, 0.0, 0.25]]))


def test_mix_records_round_trip_through_arrays():
    s = ViewSampler(num_frames=4, jitter=JITTER, gray_p=0.2, jitter_mode="frame")
    mixes = [None if v % 3 == 0 else draw_mix(BOTH, v, 1, 9).with_partner(
        s.sample(draw_mix(BOTH, v, 1, 9).partner, 1, INFO)) for v in range(9)]
    arrays = mixes_to_arrays(mixes, num_frames=4, per_frame=True)
    assert arrays["partner_frame_jitter"].shape == (9, 4, 4)
    assert arrays["mix_op"].tolist() == [0 if m is None else 1 + ("mixup", "cutmix").index(m.op)
                                         for m in mixes]
    assert (arrays["partner_video"][::3] == 0).all() and (arrays["mix_lambda"][::3] == 0).all()
    back = mixes_from_arrays(arrays, np.ones(9, np.int32))
    assert back == mixes
    with pytest.raises(ValueError):
        mixes_to_arrays(mixes, num_frames=4, per_frame=False)


# ------------------------------------------------------------------ per-frame colour jitter


def _frame_sampler(**kw) -> ViewSampler:
    return ViewSampler(**{"jitter": JITTER, "gray_p": 0.2, "jitter_mode": "frame", **kw})


def test_per_frame_jitter_keeps_the_clip_coins_and_draws_per_frame_factors():
    clip = ViewSampler(jitter=JITTER, gray_p=0.2)
    frame = _frame_sampler()
    applied = 0
    for r in range(60):
        a, b = clip.sample(1, r, INFO), frame.sample(1, r, INFO)
        # frames, crop, flip and both coin flips (apply p, grey p) are the per-clip ones
        assert (a.frames, a.crop, a.flip, a.gray) == (b.frames, b.crop, b.flip, b.gray)
        assert b.jitter == IDENTITY_JITTER and len(b.frame_jitter) == 8
        if a.jitter == IDENTITY_JITTER:
            assert set(b.frame_jitter) == {IDENTITY_JITTER}
            continue
        applied += 1
        assert len(set(b.frame_jitter)) == 8  # new factors for every frame
        for (br, co, sa, hu), order in zip(b.frame_jitter, b.jitter_order):
            assert 0.6 <= br <= 1.4 and 0.6 <= co <= 1.4 and 0.6 <= sa <= 1.4
            assert -0.1 <= hu <= 0.1 and sorted(order) == [0, 1, 2, 3]
        assert len(set(b.jitter_order)) > 1  # a new order per frame
    assert 36 < applied < 60  # p = 0.8


def test_jitter_mode_in_provenance_only_when_per_frame():
    assert "jitter_mode" not in ViewSampler().to_dict()  # round-1 dicts unchanged
    s = _frame_sampler(seed=2)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["jitter_mode"] == "frame" and ViewSampler.from_dict(d) == s
    with pytest.raises(ValueError, match="jitter_mode"):
        ViewSampler(jitter_mode="pixel")


def test_per_frame_views_round_trip_and_subsample():
    s = _frame_sampler(num_frames=6, jitter_p=1.0)
    views = [s.sample(v, r, INFO) for v in range(3) for r in range(2)]
    arrays = views_to_arrays(views)
    assert arrays["frame_jitter"].shape == (6, 6, 4) and arrays["jitter_order"].dtype == np.uint8
    assert views_from_arrays(arrays) == views
    assert "frame_jitter" not in views_to_arrays([ViewSampler().sample(0, 0, INFO)])
    with pytest.raises(ValueError, match="per-clip and per-frame"):
        views_to_arrays([views[0], ViewSampler(num_frames=6).sample(0, 0, INFO)])
    sub = subsample_view(views[0], 3)
    pos = subsample_positions(6, 3)
    assert sub.frame_jitter == tuple(views[0].frame_jitter[p] for p in pos)
    assert sub.jitter_order == tuple(views[0].jitter_order[p] for p in pos)
    with pytest.raises(ValueError, match="one factor set"):
        View(0, 0, (1, 2), frame_jitter=(IDENTITY_JITTER,), jitter_order=((0, 1, 2, 3),))


def test_per_frame_transform_applies_each_frames_factors_in_its_order():
    x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    jit = ((1.3, 0.7, 1.0, 0.0), (1.0, 1.0, 0.6, 0.05), (0.8, 1.2, 1.1, -0.05))
    order = ((1, 0, 2, 3), (3, 2, 1, 0), (0, 1, 2, 3))
    v = View(0, 0, (0, 1, 2), frame_jitter=jit, jitter_order=order)
    out = apply_view(x, v, 16, normalize=False)
    for i in range(3):
        xf = torch.from_numpy(x[i:i + 1]).permute(0, 3, 1, 2).float()
        expect = adjust_colour(xf, jit[i], order[i]).round().clamp(0, 255) / 255
        assert torch.equal(out[i:i + 1], expect)
    # the order matters: contrast then brightness differs from brightness then contrast
    xf = torch.from_numpy(x[:1]).permute(0, 3, 1, 2).float()
    assert not torch.equal(adjust_colour(xf, jit[0], (1, 0, 2, 3)),
                           adjust_colour(xf, jit[0], (0, 1, 2, 3)))
    # cutting the view to fewer frames gives exactly those frames
    sub = subsample_view(v, 2)
    pos = subsample_positions(3, 2)
    assert torch.equal(apply_view(x[pos], sub, 16, normalize=False), out[pos])


def test_mix_record_rejects_a_partner_of_another_video():
    d = MixDraw(partner=2, view=0, op="mixup", lam=0.5)
    assert isinstance(d.with_partner(View(2, 0, (0,))), Mix)
    with pytest.raises(ValueError, match="partner view of video"):
        d.with_partner(View(3, 0, (0,)))
