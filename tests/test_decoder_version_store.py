"""A store records the decoder's frame numbering: a student replaying a store decoded before
edit lists were honoured is refused on the videos whose numbering changed (and only then), and
`build --repair` re-runs exactly the shards of those videos, then records today's version."""

from __future__ import annotations

import pytest
from conftest import write_counter_video

from dvfl_cache.data.decode import DECODER_VERSION
from dvfl_cache.errors import CacheError, DvflError

av = pytest.importorskip("av")
pytestmark = pytest.mark.skipif("libx264" not in av.codecs_available,
                                reason="libx264 not in this PyAV build")

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}


def _index(tmp_path, *, with_cut: bool):
    from test_decode_display import cut_copy

    from dvfl_cache.data.index import DatasetIndex, VideoEntry

    gop = {"g": "6", "bf": "2", "crf": "10"}
    names = ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    for n in names:
        write_counter_video(tmp_path / n, 24, codec="libx264", options=gop)
    if with_cut:  # b.mp4 becomes an `ffmpeg -ss -c copy` cut: an edit list hides frames
        src = tmp_path / "src.mp4"
        (tmp_path / "b.mp4").rename(src)
        assert cut_copy(src, tmp_path / "b.mp4", 8) > 0
    videos = tuple(VideoEntry(n, i % 2, n[0]) for i, n in enumerate(names))
    return DatasetIndex(kind="list", split=1, subset="train", classes=("x", "y"), videos=videos,
                        root=str(tmp_path))


def _cfg(out, **kw):
    from dvfl_cache.cache.build import BuildConfig

    return BuildConfig(out=str(out), teacher="vfl-nano", random_weights=True, teacher_opts=TINY,
                       frames=2, size=32, views_per_shard=1, batch_size=2, workers=0,
                       device="cpu", dtype="float32", **kw)


def _as_older_store(path) -> None:
    """What a store built by decoder version 1 looks like (the field it recorded)."""
    import zarr

    zarr.open_group(str(path), mode="r+").attrs.update({"decoder_version": 1})


def test_older_store_is_refused_on_changed_videos_and_repair_reruns_only_them(tmp_path):
    from dvfl_cache.cache.build import build_cache
    from dvfl_cache.cache.store import CacheReader
    from dvfl_train.teachers import open_cache

    index = _index(tmp_path, with_cut=True)
    out = tmp_path / "c.zarr"
    build_cache(_cfg(out), index)
    assert CacheReader(out).meta.decoder_version == DECODER_VERSION
    open_cache(str(out), index, num_frames=2, need_features=False)  # today's store: fine

    _as_older_store(out)
    with pytest.raises(CacheError) as err:
        open_cache(str(out), index, num_frames=2, need_features=False)
    line = str(err.value)
    assert "1 of 4 videos" in line and "b.mp4" in line and "a.mp4" not in line
    assert "--repair" in line and "\n" not in line

    with pytest.raises(DvflError, match="--repair"):  # a plain resume would mix numberings
        build_cache(_cfg(out, resume=True), index)
    result = build_cache(_cfg(out, repair=True), index)
    assert (result.shards_written, result.rows_written) == (1, 1)  # b's one row, nothing else
    assert CacheReader(out).meta.decoder_version == DECODER_VERSION
    open_cache(str(out), index, num_frames=2, need_features=False)


def test_older_store_of_unchanged_videos_keeps_working(tmp_path):
    from dvfl_cache.cache.build import build_cache
    from dvfl_train.teachers import open_cache

    index = _index(tmp_path, with_cut=False)
    out = tmp_path / "c.zarr"
    build_cache(_cfg(out), index)
    _as_older_store(out)
    open_cache(str(out), index, num_frames=2, need_features=False)
