"""The synthetic dataset: real files the UCF101 reader and decoder accept, deterministic, and
classes that a single frame cannot tell apart but frame differences can."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SYNTH_TINY

from dvfl_cache.data.decode import open_video
from dvfl_cache.data.readers import build_index
from dvfl_cache.data.synth import (CLASS_NAMES, SynthConfig, clip_rng, render_clip,
                                   write_synth)
from dvfl_cache.errors import DvflError


def test_layout_indexes_with_the_ucf101_reader(synth_root):
    lists = synth_root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_bytes() == (
        b"1 MoveLeft\r\n2 MoveRight\r\n3 RotateClockwise\r\n4 RotateCounterclockwise\r\n")
    seen = set()
    for split in (1, 2, 3):
        train = build_index("ucf101", synth_root, split=split, subset="train")
        test = build_index("ucf101", synth_root, split=split, subset="test")
        assert train.classes == CLASS_NAMES[:4]
        assert not {v.video_id for v in train.videos} & {v.video_id for v in test.videos}
        assert len(train) + len(test) == 16
        seen |= {v.path.rsplit(".", 1)[1] for v in train.videos + test.videos}
        for v in test.videos:  # split k tests groups 7k-6..7k
            assert 7 * split - 6 <= int(v.video_id.split("_g")[1][:2]) <= 7 * split
    assert seen == {"avi", "mp4"}
    assert len(build_index("ucf101", synth_root, split=1, subset="test")) == 8


def test_files_decode_to_what_was_rendered(synth_root, synth_index):
    cfg = SynthConfig(**SYNTH_TINY)
    for i, entry in enumerate(synth_index.videos):
        with open_video(synth_index.abspath(i)) as v:
            assert (v.info.num_frames, v.info.width, v.info.height) == (16, 32, 32)
            assert v.info.fps == pytest.approx(25.0)
            frames = v.frames(range(16))
        name = entry.video_id.split("_")[1]
        c = CLASS_NAMES.index(name)
        group, clip = int(entry.video_id[-6:-4]), int(entry.video_id[-2:])
        k = next(k for k in range(cfg.videos_per_class)
                 if 1 + (k * 25) // cfg.videos_per_class == group) + clip - 1
        rendered = render_clip(name, rng=clip_rng(cfg.seed, c, k), width=32, height=32,
                               frames=16)
        err = np.abs(frames.astype(int) - rendered.astype(int)).mean()
        assert err < 12, (entry.path, err)  # lossy coding of sigma-10 noise, nothing worse


def test_generation_is_deterministic(tmp_path, synth_root):
    write_synth(tmp_path, SynthConfig(**SYNTH_TINY))
    files = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*") if p.is_file())
    assert len(files) == 16 + 7 + 1
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (synth_root / rel).read_bytes(), rel
    other = render_clip("MoveLeft", rng=clip_rng(1, 0, 0), width=32, height=32, frames=4)
    again = render_clip("MoveLeft", rng=clip_rng(0, 0, 0), width=32, height=32, frames=4)
    assert not np.array_equal(other, again)


def test_refuses_to_overwrite(synth_root):
    with pytest.raises(DvflError, match="--overwrite"):
        write_synth(synth_root, SynthConfig(**SYNTH_TINY))


def test_config_checks():
    with pytest.raises(ValueError, match="even"):
        SynthConfig(width=33)
    with pytest.raises(ValueError, match="classes"):
        SynthConfig(classes=11)
    assert all(n.isidentifier() and n[0].isupper() and " " not in n for n in CLASS_NAMES)


# ------------------------------------------------------------------ needs time to classify

_R = 4


def _xcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised circular cross-correlation of stacks (N, H, W) at shifts |d| <= _R."""
    a = a - a.mean((1, 2), keepdims=True)
    b = b - b.mean((1, 2), keepdims=True)
    m = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real
    m /= np.sqrt((a * a).sum((1, 2)) * (b * b).sum((1, 2)))[:, None, None] + 1e-9
    return np.roll(m, (_R, _R), axis=(1, 2))[:, : 2 * _R + 1, : 2 * _R + 1].reshape(len(m), -1)


def _frame_features(clip: np.ndarray) -> np.ndarray:
    """Per frame: spatial autocorrelation + colour mean/std (everything a frame shows)."""
    g = clip.astype(np.float64).mean(-1)
    rgb = clip.reshape(len(clip), -1, 3) / 255.0
    return np.concatenate([_xcorr(g, g), rgb.mean(1), rgb.std(1)], 1)


def _difference_features(clip: np.ndarray) -> np.ndarray:
    """Per clip: cross-correlation of successive frame differences at lags 1-3 (motion)."""
    d = np.diff(clip.astype(np.float64).mean(-1), axis=0)
    return np.concatenate([_xcorr(d[k:], d[:-k]).mean(0) for k in (1, 2, 3)])


def _nearest_class_mean(xtr, ytr, xte, yte, classes: int) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    means = np.stack([xtr[ytr == c].mean(0) for c in range(classes)])
    pred = ((xte[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == yte).mean())


def test_single_frames_are_near_chance_but_frame_differences_are_not():
    per_class, t, size = 16, 16, 32
    frames = {0: ([], []), 1: ([], [])}
    diffs = {0: ([], []), 1: ([], [])}
    for c, name in enumerate(CLASS_NAMES):
        for i in range(per_class):
            clip = render_clip(name, rng=clip_rng(1, c, i), width=size, height=size, frames=t)
            half = int(i >= per_class // 2)  # first half fits the class means, second tests
            frames[half][0].append(_frame_features(clip))
            frames[half][1].extend([c] * t)
            diffs[half][0].append(_difference_features(clip)[None])
            diffs[half][1].append(c)
    acc_frame = _nearest_class_mean(np.concatenate(frames[0][0]), np.array(frames[0][1]),
                                    np.concatenate(frames[1][0]), np.array(frames[1][1]), 10)
    acc_diff = _nearest_class_mean(np.concatenate(diffs[0][0]), np.array(diffs[0][1]),
                                   np.concatenate(diffs[1][0]), np.array(diffs[1][1]), 10)
    # chance is 0.10; 1280 test frames put a real single-frame signal well above 0.15
    assert acc_frame < 0.15, acc_frame
    assert acc_diff > 0.22, acc_diff  # measured 0.33 on 80 test clips
