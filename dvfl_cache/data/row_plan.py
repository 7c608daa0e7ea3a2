"""Many training views at once: `views_to_arrays` of `ViewSampler.sample` over N rows, bit for
bit, without N x 4 Python random generators.

Why: `ViewSampler.sample` keys one Philox stream per (seed, video, view, aspect) through a
`SeedSequence`; building those objects costs about 100 us a row, which is nothing beside
decoding a video but is most of the time when millions of rows are planned without decoding
(`tools/bench_scale.py` at Kinetics size, 7.2M rows). Here the same streams are computed as
arrays: the SeedSequence hash (32-bit words), the Philox-4x64-10 key and blocks, and the
`Generator.random` / `uniform` doubles, then the sampler's formulas in the same float64
operations. `tests/test_row_plan.py` checks equality with the per-row path on random settings.

Covered: `mode="train"` with the segment sampler and per-clip jitter (the defaults and the
reference recipe's clip mode). Anything else (stride starts need bounded integers, per-frame
jitter needs permutations) goes through `ViewSampler.sample` row by row; the result is the same.
numpy's generator internals are pinned by the test, not by this module: a numpy that changed
them would change every stored view anyway (the per-row path depends on them too).
"""

from __future__ import annotations

import math

import numpy as np

from dvfl_cache.data.views import (_COLOUR, _CROP, _FLIP, _TEMPORAL, IDENTITY_JITTER,
                                   ViewSampler, views_to_arrays)

__all__ = ["sample_arrays"]

_CHUNK = 1 << 15  # rows planned at once

_M32 = np.uint64(0xFFFFFFFF)

# numpy's SeedSequence (O'Neill's seed_seq_fe, pool of four 32-bit words)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_POOL = 4

# Philox-4x64-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3")
_PM0, _PM1 = 0xD2E7470EE14C6C93, 0xCA5A826395121157
_PW0, _PW1 = 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B


def _u32(x) -> np.ndarray:
    return np.asarray(x, np.uint64) & _M32


def _hashmix(value: np.ndarray, const: int) -> tuple[np.ndarray, int]:
    """One word through the pool hash; returns it and the next hash constant."""
    value = _u32(value ^ np.uint64(const))
    const = (const * _MULT_A) & 0xFFFFFFFF
    value = _u32(value * np.uint64(const))
    return value ^ (value >> np.uint64(16)), const


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = _u32(_u32(np.uint64(_MIX_L) * x) - _u32(np.uint64(_MIX_R) * y))
    return r ^ (r >> np.uint64(16))


def _seed_keys(words: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The Philox key (two uint64 per row) of `SeedSequence([w0, w1, w2, w3])` per row, each
    word below 2**32 (one entropy word each: exactly `_POOL` of them)."""
    const = _INIT_A
    pool = []
    for w in words:
        h, const = _hashmix(w, const)
        pool.append(h)
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                h, const = _hashmix(pool[src], const)
                pool[dst] = _mix(pool[dst], h)
    # generate_state(2, uint64): four 32-bit words, paired (low, high)
    const = _INIT_B
    out = []
    for i in range(4):
        v = _u32(pool[i % _POOL] ^ np.uint64(const))
        const = (const * _MULT_B) & 0xFFFFFFFF
        v = _u32(v * np.uint64(const))
        out.append(v ^ (v >> np.uint64(16)))
    return out[0] | (out[1] << np.uint64(32)), out[2] | (out[3] << np.uint64(32))


def _mulhilo(a: int, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of the 128-bit products a * b, in 32-bit pieces."""
    a_lo, a_hi = np.uint64(a & 0xFFFFFFFF), np.uint64(a >> 32)
    b_lo, b_hi = b & _M32, b >> np.uint64(32)
    ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (ll >> np.uint64(32)) + (lh & _M32) + (hl & _M32)
    lo = (ll & _M32) | (mid << np.uint64(32))
    hi = hh + (lh >> np.uint64(32)) + (hl >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi, lo


def _philox_block(k0: np.ndarray, k1: np.ndarray, counter: int) -> list[np.ndarray]:
    """The four uint64 of block `counter` (1 is the first a fresh generator uses)."""
    c = [np.full(k0.shape, counter, np.uint64)] + [np.zeros(k0.shape, np.uint64)] * 3
    for r in range(10):
        if r:
            k0, k1 = k0 + np.uint64(_PW0), k1 + np.uint64(_PW1)
        hi0, lo0 = _mulhilo(_PM0, c[0])
        hi1, lo1 = _mulhilo(_PM1, c[2])
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return c


def _doubles(seed: int, videos: np.ndarray, views: np.ndarray, aspect: int, n: int
             ) -> np.ndarray:
    """(rows, n): the first n `Generator.random()` doubles of each row's `aspect` stream."""
    with np.errstate(over="ignore"):
        k0, k1 = _seed_keys([np.full(videos.shape, seed, np.uint64),
                             videos.astype(np.uint64), views.astype(np.uint64),
                             np.full(videos.shape, aspect, np.uint64)])
        raw = [w for b in range((n + 3) // 4) for w in _philox_block(k0, k1, b + 1)][:n]
    return np.stack([(w >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
                     for w in raw], axis=1)


def _uniform(low, high, d: np.ndarray) -> np.ndarray:
    return low + (high - low) * d  # Generator.uniform: low + (high - low) * next_double


def _crops(s: ViewSampler, videos, views, width: np.ndarray, height: np.ndarray
           ) -> np.ndarray:
    """`ViewSampler._random_resized_crop` per row (ten tries, then the centred fallback)."""
    n = len(videos)
    d = _doubles(s.seed, videos, views, _CROP, 24)  # ten tries of two draws, then two more
    total = (width * height).astype(np.float64)
    log_r = (math.log(s.ratio[0]), math.log(s.ratio[1]))
    out = np.empty((n, 4))
    pos = np.zeros(n, np.int64)  # each row's next double
    left = np.arange(n)
    exp = np.frompyfunc(math.exp, 1, 1)  # libm's exp, as the per-row path (numpy's may differ)
    for _ in range(10):
        if not len(left):
            break
        p = pos[left]
        area = total[left] * _uniform(s.area[0], s.area[1], d[left, p])
        aspect = exp(_uniform(log_r[0], log_r[1], d[left, p + 1])).astype(np.float64)
        w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
        fits = (w <= width[left]) & (h <= height[left])
        rows, q, w, h = left[fits], p[fits], w[fits], h[fits]
        y0 = _uniform(0.0, height[rows] - h, d[rows, q + 2])
        x0 = _uniform(0.0, width[rows] - w, d[rows, q + 3])
        out[rows] = np.stack([y0 / height[rows], x0 / width[rows], h / height[rows],
                              w / width[rows]], axis=1)
        left = left[~fits]
        pos[left] += 2
    for i in left:  # no try fitted
        out[i] = s.centred_crop(int(width[i]), int(height[i]))
    return out


def sample_arrays(sampler: ViewSampler, videos, views, num_frames, width, height
                  ) -> dict[str, np.ndarray]:
    """`views_to_arrays([sampler.sample(v, w, info) ...])` for rows (videos[i], views[i]) of
    videos with `num_frames[i]` frames of `width[i]` x `height[i]` pixels."""
    videos, views = np.asarray(videos, np.int64), np.asarray(views, np.int64)
    num_frames, width, height = (np.asarray(a, np.int64) for a in (num_frames, width, height))
    if len(videos) > _CHUNK:  # bounded temporaries (dozens of arrays of the rows' length)
        parts = [sample_arrays(sampler, *(a[i:i + _CHUNK] for a in (videos, views, num_frames,
                                                                    width, height)))
                 for i in range(0, len(videos), _CHUNK)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if not (sampler.mode == "train" and sampler.temporal == "segment"
            and sampler.jitter_mode == "clip") or not len(videos):
        from dvfl_cache.data.decode import VideoInfo

        return views_to_arrays([sampler.sample(int(v), int(w), VideoInfo(
            num_frames=int(f), fps=30.0, width=int(x), height=int(y)))
            for v, w, f, x, y in zip(videos, views, num_frames, width, height)])
    if (num_frames < 1).any():
        raise ValueError(f"video {int(videos[np.argmax(num_frames < 1)])} has no frames")
    if (videos >= 2**32).any() or (views >= 2**32).any() or sampler.seed >= 2**32 \
            or min(videos.min(), views.min(), sampler.seed) < 0:
        raise ValueError("row_plan covers seeds, videos and views in [0, 2**32)")
    t = sampler.num_frames
    u = _doubles(sampler.seed, videos, views, _TEMPORAL, t)
    n = num_frames[:, None]
    frames = np.minimum(np.floor((np.arange(t) + u) * n / t).astype(np.int64), n - 1)
    crop = _crops(sampler, videos, views, width, height)
    flip = _doubles(sampler.seed, videos, views, _FLIP, 1)[:, 0] < sampler.flip
    c = _doubles(sampler.seed, videos, views, _COLOUR, 6)
    jitter = np.tile(np.array(IDENTITY_JITTER, np.float64), (len(videos), 1))
    if any(sampler.jitter):
        on = c[:, 0] < sampler.jitter_p
        jb, jc, js, jh = sampler.jitter
        for k, j in enumerate((jb, jc, js)):
            lo = max(0.0, 1 - j)
            jitter[on, k] = lo + c[on, k + 1] * (1 + j - lo)
        jitter[on, 3] = -jh + c[on, 4] * 2 * jh
    return {"video": videos.astype(np.int32), "view": views.astype(np.int32),
            "frames": frames.astype(np.int32), "crop": crop.astype(np.float32),
            "flip": flip.astype(np.uint8), "jitter": jitter.astype(np.float32),
            "gray": (c[:, 5] < sampler.gray_p).astype(np.uint8)}
