"""row_plan.sample_arrays is `views_to_arrays` of `ViewSampler.sample` row by row, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from dvfl_cache.data.decode import VideoInfo
from dvfl_cache.data.row_plan import sample_arrays
from dvfl_cache.data.views import ViewSampler, views_to_arrays

SAMPLERS = {
    "defaults": {},
    "recipe-like": {"area": (0.5, 0.75), "flip": 0.25, "jitter": (0.4, 0.4, 0.2, 0.1),
                    "gray_p": 0.2, "seed": 7, "num_frames": 16},
    "strong crops": {"area": (0.9, 1.0), "ratio": (0.2, 5.0), "seed": 123456},
    # not vectorised: taken row by row, the same answer
    "stride": {"temporal": "stride", "stride": 3},
    "per-frame jitter": {"jitter": (0.4, 0.4, 0.2, 0.1), "jitter_mode": "frame"},
}


def _rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    videos = rng.integers(0, 300_000, n)
    views = rng.integers(0, 200, n)
    frames = rng.integers(1, 400, n)
    width = rng.choice([2, 16, 171, 340, 1920], n)  # 2 x 1080: no try fits, the fallback
    height = rng.choice([3, 128, 256, 1080], n)
    return videos, views, frames, width, height


@pytest.mark.parametrize("name", SAMPLERS)
def test_sample_arrays_equals_the_per_row_sampler(name):
    sampler = ViewSampler(mode="train", **SAMPLERS[name])
    videos, views, frames, width, height = _rows(600 if name in ("stride", "per-frame jitter")
                                                 else 3000)
    want = views_to_arrays([sampler.sample(int(v), int(w), VideoInfo(
        num_frames=int(f), fps=30.0, width=int(x), height=int(y)))
        for v, w, f, x, y in zip(videos, views, frames, width, height)])
    got = sample_arrays(sampler, videos, views, frames, width, height)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # both branches ran: rows 2 px wide and >= 128 px high never fit a random crop
    assert ((width == 2) & (height >= 128)).sum() > 10 and 0 < got["flip"].mean() < 1


def test_sample_arrays_refuses_what_the_per_row_sampler_refuses():
    sampler = ViewSampler(mode="train")
    with pytest.raises(ValueError, match="video 5 has no frames"):
        sample_arrays(sampler, [4, 5], [0, 0], [10, 0], [32, 32], [32, 32])


def test_sample_arrays_in_chunks_is_the_same(monkeypatch):
    from dvfl_cache.data import row_plan

    sampler = ViewSampler(mode="train", flip=0.3, jitter=(0.2, 0.2, 0.2, 0.05))
    rows = _rows(2500, seed=1)
    whole = sample_arrays(sampler, *rows)
    monkeypatch.setattr(row_plan, "_CHUNK", 1000)  # three chunks, the last one short
    parts = sample_arrays(sampler, *rows)
    for k in whole:
        np.testing.assert_array_equal(parts[k], whole[k], err_msg=k)
