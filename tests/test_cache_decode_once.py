"""The build decodes each video once for all of its views (issue 30), storing the same values as
decoding it once per view: the same arrays bit for bit, the same shard records."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}


def _cfg(root_out: Path, name: str, **kw):
    from dvfl_cache.cache.build import BuildConfig

    base = dict(out=str(root_out / name), teacher="vfl-nano", random_weights=True,
                teacher_opts=TINY, views_per_video=3, frames=4, size=32, views_per_shard=5,
                batch_size=4, workers=0, dtype="float32", device="cpu",
                sampler={"jitter": (0.4, 0.4, 0.4, 0.1)})
    return BuildConfig(**{**base, **kw})


def _everything(path: Path) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """Every array of the store, and every shard record (failures, float16 error), as bytes."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    arrays = {name: np.asarray(a[:]) for name, a in g.arrays()}
    records = {str(p.relative_to(path)): p.read_bytes()
               for p in sorted((path / "failures").rglob("zarr.json"))}
    return arrays, records


def _assert_same(a: Path, b: Path) -> None:
    (xa, ra), (xb, rb) = _everything(a), _everything(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        assert xa[name].dtype == xb[name].dtype, name
        assert np.array_equal(xa[name], xb[name]), f"{name} differs"
    assert ra == rb


@pytest.mark.parametrize("kw", [
    dict(),  # 5-row shards over 8 videos: shards cut across videos and views
    dict(workers=2, views_per_video=4, views_per_shard=8, batch_size=3, features=True),
    dict(mixup=0.8, cutmix=1.0, mix_prob=0.7, views_per_shard=7),
], ids=["misaligned", "workers", "mixed"])
def test_decode_once_stores_exactly_what_per_view_decoding_stores(synth_root, synth_index,
                                                                  tmp_path, kw):
    from dvfl_cache.cache.build import build_cache

    for name, once in (("once.zarr", False), ("per_view.zarr", True)):
        res = build_cache(_cfg(tmp_path, name, decode_per_view=not once, **kw), synth_index)
        assert res.complete and not res.failed
    _assert_same(tmp_path / "once.zarr", tmp_path / "per_view.zarr")


def test_failed_videos_are_recorded_as_per_view_decoding_records_them(synth_root, tmp_path,
                                                                      monkeypatch):
    """A broken video fails all its rows; a video whose damage only some views reach (frames
    past 11 do not decode) fails exactly the rows that need those frames, as one by one."""
    from dvfl_cache.cache.build import build_cache
    from dvfl_cache.data import decode
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.errors import VideoDecodeError

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    index = build_index("ucf101", root, split=1, subset="train")
    Path(index.abspath(2)).write_bytes(b"\x00not a video" * 40)
    # a video whose views end on different frames: the frames past the earliest end are lost
    sampler = _cfg(tmp_path, "x").view_sampler()
    for video in range(3, len(index)):
        with decode.open_video(index.abspath(video)) as v:
            last = [max(sampler.sample(video, r, v.info).frames) for r in range(3)]
        if len(set(last)) > 1:
            break
    damaged, keep = index.abspath(video), min(last)
    frames = decode.OpenVideo.frames

    def tail_lost(self, indices):
        if self.path == damaged and max(indices) > keep:
            raise VideoDecodeError(self.path, f"frame {max(indices)} could not be decoded")
        return frames(self, indices)

    monkeypatch.setattr(decode.OpenVideo, "frames", tail_lost)
    results = {}
    for name, per_view in (("once.zarr", False), ("per_view.zarr", True)):
        results[name] = build_cache(_cfg(tmp_path, name, decode_per_view=per_view, max_failed=1),
                                    index)
    _assert_same(tmp_path / "once.zarr", tmp_path / "per_view.zarr")
    arrays, _ = _everything(tmp_path / "once.zarr")
    valid = arrays["valid"][[r * len(index) + video for r in range(3)]]
    assert valid.tolist() == [int(x == keep) for x in last]
    assert set(results["once.zarr"].failed) == {2, video}


def test_decode_once_opens_each_video_once(synth_root, synth_index, tmp_path, monkeypatch):
    """Per view, a video is opened (and its frames decoded) once for every view; decode-once
    opens it once per group of shards: here shards line up with the 8 videos, one group."""
    from dvfl_cache.cache.build import build_cache
    from dvfl_cache.data import dataset

    opened: list[str] = []
    real = dataset.open_video

    def counting(path, **kw):
        opened.append(path)
        return real(path, **kw)

    monkeypatch.setattr(dataset, "open_video", counting)
    n = len(synth_index)
    for per_view in (True, False):
        opened.clear()
        build_cache(_cfg(tmp_path, f"c{per_view}.zarr", views_per_video=6, views_per_shard=n,
                         decode_per_view=per_view), synth_index)
        counts = {p: opened.count(p) for p in set(opened)}
        assert len(counts) == n
        assert set(counts.values()) == ({6} if per_view else {1}), counts


def test_resume_and_extend_decode_once_match_a_per_view_build(synth_root, synth_index, tmp_path):
    """A store built in two passes (a first build of some shards, then --resume) and extended by
    decode-once equals one per-view build of all the views."""
    from dvfl_cache.cache.build import build_cache
    from dvfl_cache.cache.extend import extend_cache
    from dvfl_cache.cache.store import CacheWriter

    ref = _cfg(tmp_path, "ref.zarr", views_per_video=5, decode_per_view=True)
    build_cache(ref, synth_index)
    part = _cfg(tmp_path, "part.zarr", views_per_video=3)
    build_cache(part, synth_index)
    # lose two finished shards, as a killed build would never have written them
    w = CacheWriter(str(tmp_path / "part.zarr"), _reader_meta(tmp_path / "part.zarr"))
    for s in (1, 3):
        w.clear_done(s)
    build_cache(_cfg(tmp_path, "part.zarr", views_per_video=3, resume=True), synth_index)
    extend_cache(_cfg(tmp_path, "part.zarr", views_per_video=5), synth_index)
    _assert_same(tmp_path / "part.zarr", tmp_path / "ref.zarr")


def _reader_meta(path: Path):
    from dvfl_cache.cache.store import CacheReader

    return CacheReader(str(path)).meta


def test_shard_group_holds_every_view_of_its_first_shards_videos():
    from dvfl_cache.cache.build import shard_group
    from dvfl_cache.cache.format import CacheMeta, DatasetInfo, SamplerInfo, TeacherInfo
    from dvfl_cache.cache.store import shard_rows

    meta = CacheMeta(teacher=TeacherInfo("t", {}, None),
                     dataset=DatasetInfo("list", 1, "train", "sha256:" + "0" * 64, ("a", "b")),
                     sampler=SamplerInfo("segment", {}, 0), num_videos=10, views_per_video=6,
                     num_frames=2, views_per_shard=4)
    every = set(range(meta.num_shards))
    for first in range(meta.num_shards):
        group = shard_group(meta, first, every)
        assert group[0] == first and group[1:] == sorted(group[1:])
        videos = {r % 10 for r in shard_rows(meta, first)}
        held = {r for s in group for r in shard_rows(meta, s)}
        assert all(v + 10 * view in held for v in videos for view in range(6))
        # nothing beyond the shards holding those rows
        assert all(any(r % 10 in videos for r in shard_rows(meta, s)) for s in group)
    # only candidates, and within the row budget (the first shard always)
    assert shard_group(meta, 0, {0, 1, 5}) == [0, 5]  # shard 1: view 0 of videos 4-7
    assert len(shard_group(meta, 0, every, max_rows=9)) == 2
    assert shard_group(meta, 0, every, max_rows=1) == [0]


def test_video_items_within_a_frame_budget_decode_in_runs_and_cut_the_same(synth_index,
                                                                          monkeypatch):
    """Decoded frames are bounded: past the budget a video's items are decoded in runs of
    views whose frames fit (one decode each), and every item is the one `ds[i]` gives."""
    import torch

    from dvfl_cache.data import decode
    from dvfl_cache.data.dataset import ClipDataset, Cut, RowViews, _runs
    from dvfl_cache.data.views import ViewSampler

    n, views = len(synth_index), 5
    ds = ClipDataset(synth_index, RowViews(ViewSampler(num_frames=4), n, n * views),
                     (Cut("clip", 24, as_uint8=True), Cut("short", 16, frames=2)))
    rows = [r * n + 3 for r in range(views)]
    asked: list[list[int]] = []
    frames = decode.OpenVideo.frames

    def spy(self, indices):
        asked.append(list(indices))
        return frames(self, indices)

    monkeypatch.setattr(decode.OpenVideo, "frames", spy)
    with decode.open_video(synth_index.abspath(3)) as v:
        frame_bytes = v.info.width * v.info.height * 3
    expected = [ds[r] for r in rows]
    for budget, decodes in ((1 << 30, 1), (6 * frame_bytes, None), (frame_bytes, views)):
        asked.clear()
        got = list(ds.video_items(rows, max_bytes=budget))
        assert len(asked) == decodes if decodes else 1 < len(asked) < views
        assert all(len(a) <= max(budget // frame_bytes, 4) for a in asked)
        for g, e in zip(got, expected, strict=True):
            assert g["view"] == e["view"] and g["video"] == e["video"] == 3
            assert torch.equal(g["clip"], e["clip"]) and torch.equal(g["short"], e["short"])
            assert all(np.array_equal(g["view_arrays"][k], e["view_arrays"][k])
                       for k in e["view_arrays"])
    assert _runs([1, 2, 3], {1: {0, 1}, 2: {1, 2}, 3: {5, 6, 7}}, 3) == [[1, 2], [3]]
