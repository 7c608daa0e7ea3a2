"""Views, samplers and transforms: closed forms where they exist, invariants otherwise."""

from __future__ import annotations

import colorsys
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dvfl_cache.data.decode import VideoInfo
from dvfl_cache.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, apply_view, crop_pixels,
                                        hsv_to_rgb, rgb_to_hsv)
from dvfl_cache.data.views import (SamplerViewFn, View, ViewSampler, subsample_positions,
                                   subsample_view, views_from_arrays, views_to_arrays)

INFO = VideoInfo(num_frames=100, fps=25.0, width=320, height=240)
JITTER = (0.4, 0.4, 0.4, 0.1)


def _train(**kw) -> ViewSampler:
    return ViewSampler(**{"jitter": JITTER, "gray_p": 0.2, **kw})


# ------------------------------------------------------------------ determinism, records


def test_sampling_is_deterministic_in_seed_video_view():
    s = _train(seed=3)
    assert s.sample(5, 2, INFO) == _train(seed=3).sample(5, 2, INFO)
    others = {s.sample(5, 3, INFO), s.sample(6, 2, INFO), _train(seed=4).sample(5, 2, INFO)}
    assert s.sample(5, 2, INFO) not in others and len(others) == 3


def test_sampling_does_not_touch_global_rng():
    np.random.seed(0)
    torch.manual_seed(0)
    expect_np, expect_torch = np.random.random(), torch.rand(1)
    np.random.seed(0)
    torch.manual_seed(0)
    for v in range(5):
        _train().sample(v, 0, INFO)
    assert np.random.random() == expect_np and torch.equal(torch.rand(1), expect_torch)


def test_crop_and_colour_do_not_depend_on_frame_count():
    a, b = _train(num_frames=8).sample(1, 1, INFO), _train(num_frames=16).sample(1, 1, INFO)
    assert (a.crop, a.flip, a.jitter, a.gray) == (b.crop, b.flip, b.jitter, b.gray)


def test_views_round_trip_through_fixed_width_arrays():
    views = [_train().sample(v, r, INFO) for v in range(4) for r in range(3)]
    arrays = views_to_arrays(views)
    n = len(views)
    assert {k: (a.dtype, a.shape) for k, a in arrays.items()} == {
        "video": (np.int32, (n,)), "view": (np.int32, (n,)), "frames": (np.int32, (n, 8)),
        "crop": (np.float32, (n, 4)), "flip": (np.uint8, (n,)),
        "jitter": (np.float32, (n, 4)), "gray": (np.uint8, (n,))}
    assert views_from_arrays(arrays) == views  # exact: samplers round to float32
    assert views_to_arrays([])["frames"].shape == (0, 0)
    with pytest.raises(ValueError, match="frame counts"):
        views_to_arrays([View(0, 0, (1, 2)), View(1, 0, (1, 2, 3))])


def test_sampler_config_round_trips_through_json():
    s = _train(temporal="stride", stride=2, seed=9, ratio=(0.5, 2.0))
    back = ViewSampler.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and hash(back) == hash(s)
    with pytest.raises(ValueError, match="unknown"):
        ViewSampler.from_dict({"colour": 1})
    with pytest.raises(ValueError):
        ViewSampler(temporal="dense")


# ------------------------------------------------------------------ temporal samplers


@pytest.mark.parametrize("n", [100, 8, 5])
def test_segment_train_takes_one_frame_per_segment(n):
    s = ViewSampler(num_frames=8)
    for view in range(20):
        frames = s.sample(0, view, VideoInfo(n, 25.0, 64, 64)).frames
        for i, f in enumerate(frames):
            # segment i is [i n / T, (i + 1) n / T); frame = floor of a point in it
            lo, hi = math.floor(i * n / 8), math.ceil((i + 1) * n / 8) - 1
            assert lo <= f <= hi and f < n


def test_segment_test_takes_segment_centres():
    s = ViewSampler(num_frames=8, mode="test")
    assert s.sample(0, 0, INFO).frames == tuple(math.floor((i + 0.5) * 100 / 8)
                                                for i in range(8))
    two = ViewSampler(num_frames=4, mode="test", clips=2)
    assert two.sample(0, 0, INFO).frames == (6, 31, 56, 81)  # floor((i + 1/4) * 25)
    assert two.sample(0, 1, INFO).frames == (18, 43, 68, 93)  # floor((i + 3/4) * 25)


def test_stride_sampler():
    s = ViewSampler(temporal="stride", num_frames=8, stride=4)
    starts = set()
    for view in range(30):
        f = s.sample(0, view, INFO).frames
        assert np.all(np.diff(f) == 4) and 0 <= f[0] <= 100 - 29
        starts.add(f[0])
    assert len(starts) > 10
    t = ViewSampler(temporal="stride", num_frames=8, stride=4, mode="test", clips=3)
    assert [t.sample(0, c, INFO).frames[0] for c in range(3)] == [0, 35, 71]  # 71 = 100 - 29
    one = ViewSampler(temporal="stride", num_frames=8, stride=4, mode="test")
    assert one.sample(0, 0, INFO).frames[0] == 35
    short = s.sample(0, 0, VideoInfo(10, 25.0, 64, 64)).frames
    assert short == (0, 4, 8, 9, 9, 9, 9, 9)  # too short: clamped to the last frame


# ------------------------------------------------------------------ spatial samplers


def test_random_resized_crop_respects_area_and_aspect():
    s = ViewSampler()
    flips = 0
    for view in range(200):
        v = s.sample(0, view, INFO)
        y0, x0, h, w = v.crop
        assert 0 <= y0 and 0 <= x0 and y0 + h <= 1 + 1e-6 and x0 + w <= 1 + 1e-6
        assert 0.08 - 1e-6 <= h * w <= 1 + 1e-6
        aspect = (w * INFO.width) / (h * INFO.height)
        assert 3 / 4 - 1e-4 <= aspect <= 4 / 3 + 1e-4
        flips += v.flip
        assert v.jitter == (1.0, 1.0, 1.0, 0.0) and not v.gray  # off by default
    assert 70 < flips < 130
    assert not any(ViewSampler(flip=0.0).sample(0, r, INFO).flip for r in range(50))


def test_colour_jitter_ranges():
    s = _train(jitter_p=1.0, gray_p=0.5)
    views = [s.sample(0, r, INFO) for r in range(100)]
    for v in views:
        b, c, sat, hue = v.jitter
        assert 0.6 <= b <= 1.4 and 0.6 <= c <= 1.4 and 0.6 <= sat <= 1.4 and -0.1 <= hue <= 0.1
    assert 25 < sum(v.gray for v in views) < 75


def test_test_crops_one_view_and_three_crops():
    centre = ViewSampler(mode="test").sample(0, 0, INFO)
    side = 240 * 224 / 256  # short side 256, centre 224
    assert centre.crop == pytest.approx(((1 - side / 240) / 2, (1 - side / 320) / 2,
                                         side / 240, side / 320))
    assert not centre.flip and centre.jitter == (1.0, 1.0, 1.0, 0.0)
    s = ViewSampler(mode="test", clips=2, crops=3)
    crops = [s.sample(0, v, INFO).crop for v in range(6)]
    assert [c[1] for c in crops[:3]] == pytest.approx([0.0, 0.125, 0.25])  # left/centre/right
    assert all(c[0] == 0 and c[2] == 1 and c[3] == pytest.approx(0.75) for c in crops)
    assert s.sample(0, 0, INFO).frames != s.sample(0, 3, INFO).frames
    portrait = s.sample(0, 2, VideoInfo(100, 25.0, 240, 320)).crop
    assert portrait == pytest.approx((0.25, 0.0, 0.75, 1.0))  # bottom crop of a tall video
    with pytest.raises(ValueError, match="out of range"):
        s.sample(0, 6, INFO)


# ------------------------------------------------------------------ subsample_view


def test_subsample_positions_formula():
    assert subsample_positions(8, 8) == list(range(8))
    assert subsample_positions(8, 4) == [0, 2, 5, 7]  # round(j * 7 / 3)
    assert subsample_positions(16, 8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert subsample_positions(8, 2) == [0, 7]
    assert subsample_positions(8, 1) == [3]
    for t in range(1, 20):
        for k in range(1, t + 1):
            p = subsample_positions(t, k)
            assert len(set(p)) == k and p == sorted(p) and 0 <= p[0] and p[-1] < t
    with pytest.raises(ValueError):
        subsample_positions(4, 5)


def test_subsample_view_keeps_everything_but_frames():
    v = _train(num_frames=16, jitter_p=1.0).sample(2, 7, INFO)
    assert subsample_view(v, 16) == v
    s = subsample_view(v, 4)
    assert s.frames == tuple(v.frames[p] for p in (0, 5, 10, 15))
    assert (s.video, s.view, s.crop, s.flip, s.jitter, s.gray) == \
        (v.video, v.view, v.crop, v.flip, v.jitter, v.gray)


# ------------------------------------------------------------------ transforms


def _frames(t=4, h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_apply_view_is_deterministic_and_shaped():
    v = _train(num_frames=4, jitter_p=1.0, gray_p=0.0).sample(0, 1, INFO)
    x = _frames()
    a, b = apply_view(x, v, 32), apply_view(x, v, 32)
    assert a.dtype == torch.float32 and a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b)


def test_crop_without_resize_is_exact_pixels_and_flip_mirrors():
    x = _frames(h=40, w=50)
    v = View(0, 0, (0, 1, 2, 3), crop=(0.25, 0.2, 0.5, 0.4))  # 10..30 x 10..30
    out = apply_view(x, v, 20, normalize=False)
    expect = torch.from_numpy(x[:, 10:30, 10:30]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(out, expect)
    flipped = apply_view(x, View(0, 0, (0, 1, 2, 3), crop=v.crop, flip=True), 20,
                         normalize=False)
    assert torch.equal(flipped, expect.flip(-1))
    assert crop_pixels((0.99, 0.99, 0.5, 0.5), 40, 50) == (39, 49, 1, 1)  # kept inside


def test_normalise_is_imagenet_mean_std():
    x = np.full((2, 8, 8, 3), 200, np.uint8)
    out = apply_view(x, View(0, 0, (0, 1)), 8)
    for c in range(3):
        assert torch.allclose(out[:, c], torch.tensor((200 / 255 - IMAGENET_MEAN[c])
                                                      / IMAGENET_STD[c]))


def test_same_view_at_two_sizes_covers_the_same_content():
    # smooth content so that resampling twice and once agree closely
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([128 + 100 * np.sin(xx / 13.0), 128 + 100 * np.cos(yy / 17.0),
                    128 + 60 * np.sin((xx + yy) / 19.0)], -1).astype(np.uint8)
    x = np.stack([img, img[:, ::-1]])
    v = _train(num_frames=2).sample(3, 4, VideoInfo(2, 25.0, 160, 120))
    big, small = apply_view(x, v, 64, normalize=False), apply_view(x, v, 32, normalize=False)
    down = F.interpolate(big, size=(32, 32), mode="bilinear", antialias=True,
                         align_corners=False)
    assert (down - small).abs().mean() < 0.01
    other = apply_view(x, View(3, 4, (0, 1), crop=(0.0, 0.0, 0.5, 0.5)), 32, normalize=False)
    assert (other - small).abs().mean() > 0.05  # and a different crop would not match


def test_same_view_at_fewer_frames_gives_the_same_frames():
    x = _frames(t=8, seed=1)
    v = _train(num_frames=8, jitter_p=1.0, gray_p=0.5).sample(0, 2, INFO)
    full = apply_view(x, v, 24)
    sub = subsample_view(v, 3)
    pos = subsample_positions(8, 3)
    assert torch.equal(apply_view(x[pos], sub, 24), full[pos])


def test_colour_ops():
    x = np.full((1, 4, 4, 3), 100, np.uint8)
    x[..., 0] = 200
    half = apply_view(x, View(0, 0, (0,), jitter=(0.5, 1.0, 1.0, 0.0)), 4, normalize=False)
    assert torch.allclose(half[0, :, 0, 0] * 255, torch.tensor([100.0, 50.0, 50.0]))
    gray = apply_view(x, View(0, 0, (0,), gray=True), 4, normalize=False)
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 100)
    assert torch.allclose(gray[0, :, 0, 0] * 255, torch.tensor([float(luma)] * 3))
    desat = apply_view(x, View(0, 0, (0,), jitter=(1.0, 1.0, 0.0, 0.0)), 4, normalize=False)
    assert torch.allclose(desat, gray)
    flat = apply_view(x, View(0, 0, (0,), jitter=(1.0, 0.0, 1.0, 0.0)), 4, normalize=False)
    assert torch.allclose(flat * 255, torch.full_like(flat, float(luma)), atol=0.51)
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    green = apply_view(red, View(0, 0, (0,), jitter=(1.0, 1.0, 1.0, 1 / 3)), 2, normalize=False)
    assert torch.allclose(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]))


def test_hsv_conversion_matches_colorsys():
    rgb = torch.rand(1, 3, 5, 7, dtype=torch.float64)
    rgb[0, :, 0, 0] = 0.5  # gray: hue 0, saturation 0
    hsv = rgb_to_hsv(rgb)
    for y in range(5):
        for x in range(7):
            expect = colorsys.rgb_to_hsv(*rgb[0, :, y, x].tolist())
            assert hsv[0, :, y, x].tolist() == pytest.approx(expect, abs=1e-9)
    assert torch.allclose(hsv_to_rgb(hsv), rgb, atol=1e-9)


def test_sampler_view_fn_pickles():
    import pickle

    fn = SamplerViewFn(_train(), view=3)
    assert pickle.loads(pickle.dumps(fn))(1, INFO) == _train().sample(1, 3, INFO)


def test_test_view_is_one_value_with_its_sampler():
    from dvfl_cache.data.views import SubsampledViews, TestView

    view = TestView(num_frames=2, size=32, temporal="stride", stride=3, span=6)
    assert TestView.from_dict(view.to_dict()) == view
    assert view.sampler(4, 3) == SubsampledViews(
        ViewSampler(mode="test", num_frames=6, temporal="stride", stride=3, clips=4, crops=3), 2)
    assert TestView(2, 32, span=2).sampler() == ViewSampler(mode="test", num_frames=2)
    assert view.with_frames(4).span == 6 and view.with_frames(8).span is None
    with pytest.raises(ValueError, match="cannot hold"):
        TestView(4, 32, span=3)
