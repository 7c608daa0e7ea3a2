"""`dvfl-cache extend`: more views later equal a store built with them from the start; old
shard files stay byte-identical; a kill anywhere resumes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from test_cache_build import TINY_TEACHER, build_args, run_cli, store_arrays

# 8 videos, 5 rows a shard: 2 views are 16 rows (shards 0-2 full, shard 3 holds one row).
SHARD = ["--views-per-shard", "5"]


def extend_args(root: Path, store: Path, v2: int, *extra: str) -> list[str]:
    return ["extend", str(store), "--dataset", "ucf101", "--root", str(root), "--split", "1",
            *TINY_TEACHER, "--views-per-video", str(v2), "--batch-size", "3", "--workers", "0",
            *extra]


def file_hashes(store: Path) -> dict[str, str]:
    """sha256 of every shard data file (`<array>/c/...`), keyed by path in the store."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*"))
            if p.is_file() and "/c/" in f"/{p.relative_to(store)}"}


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in b:
        if name in ("logits", "features"):  # other batch mates: float reduction order
            np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
        elif name.endswith("_params"):  # q8: the same float noise in each row's (top, S)
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)
        elif name.endswith("_codes"):  # ... may move a code by one level, never more
            assert np.abs(a[name].astype(int) - b[name].astype(int)).max() <= 1, name
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "q8"])
def test_extend_equals_a_build_with_more_views(synth_root, tmp_path, dtype):
    from dvfl_cache.cache.store import CacheReader

    store, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    run_cli([*build_args(synth_root, store), *SHARD, "--dtype", dtype])
    before = file_hashes(store)
    res = run_cli(extend_args(synth_root, store, 3))
    # Only the partial shard 3 (rows 16-19 new) and shard 4 (rows 20-23) were computed.
    assert "8 views in 2 shards written by this process; store complete, 5 shards" in res.output
    after = file_hashes(store)
    full = [k for k in before if int(k.split("/c/")[1].split("/")[0]) < 3]
    assert full and all(after[k] == before[k] for k in full)  # byte-identical old shards
    run_cli([*build_args(synth_root, ref), *SHARD, "--dtype", dtype, "--views-per-video", "3"])
    r = CacheReader(store)
    assert r.complete and r.meta.views_per_video == 3
    assert r.meta.differences(CacheReader(ref).meta) == []
    assert_same_arrays(store_arrays(store), store_arrays(ref))
    if dtype == "q8":  # the rewritten shard's codec error covers its old and new rows
        assert r.shard_record(3)["storage_error"]["logits"]["rows"] == 5


def test_extend_refuses_another_teacher_and_fewer_views(synth_root, tmp_path):
    store = tmp_path / "s.zarr"
    run_cli([*build_args(synth_root, store), *SHARD])
    args = extend_args(synth_root, store, 3)
    i = args.index("embed_dim=8")
    args[i] = "embed_dim=16"
    res = run_cli(args, expect=1)
    assert "teacher.config.embed_dim differs: stored 8, given 16" in res.output
    assert "Traceback" not in res.output
    res = run_cli(extend_args(synth_root, store, 1), expect=1)
    assert "already has 2 views per video" in res.output


def test_extend_past_max_failed_fails_and_keeps_the_store(synth_root, synth_index, tmp_path):
    """A video broken since the build: its new views fail; extend fails past --max-failed (the
    build's rule) and keeps the complete store; the partial shard's old row of that video is
    marked missing with it (one failure record covers the video's rows in a shard)."""
    import shutil

    from dvfl_cache.cache.inspect import verify
    from dvfl_cache.cache.store import CacheReader

    store = tmp_path / "s.zarr"
    # 12 rows a shard, 8 videos: shard 1 holds rows 12-15 (view 1 of videos 4-7), then 16-23
    run_cli([*build_args(synth_root, store), "--views-per-shard", "12"])
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    (root / "UCF-101" / synth_index.videos[7].path).write_bytes(b"\x00not a video" * 50)
    res = run_cli(extend_args(root, store, 3), expect=1)
    assert "1 of 8 videos failed to decode" in res.output and "Traceback" not in res.output
    r = CacheReader(store)
    assert r.complete and list(r.failed_videos()) == [7]
    valid = store_arrays(store)["valid"]
    assert valid[7] == 1 and valid[15] == 0 and valid[23] == 0  # shard 0's row stays
    assert valid.sum() == 24 - 2
    verify(store)
    res = run_cli([*extend_args(root, store, 3), "--max-failed", "0.2"])
    assert "store complete" in res.output


def test_extend_resumes_after_a_kill_at_every_step(synth_root, tmp_path):
    """Kill points: after the marker and flag (mid-grow), after the grow (nothing computed),
    and mid-rewrite of the partial shard (some of its files new, flag still 0)."""
    import zarr

    from dvfl_cache.cache.extend import _grow
    from dvfl_cache.cache.store import CacheReader

    ref = tmp_path / "ref.zarr"
    run_cli([*build_args(synth_root, ref), *SHARD, "--views-per-video", "4"])
    want = store_arrays(ref)

    for kill in ("mid-grow", "after-grow", "mid-rewrite"):
        store = tmp_path / f"{kill}.zarr"
        run_cli([*build_args(synth_root, store), *SHARD])
        before = file_hashes(store)
        old = CacheReader(store).meta
        new = old.replace(views_per_video=4)
        if kill == "mid-grow":  # marker written, flag cleared, arrays half resized
            _grow(str(store), None, old, new)
            (store / "zarr.json").write_text(json.dumps(
                {**json.loads((store / "zarr.json").read_text()),
                 "attributes": old.to_dict()}))
            assert CacheReader(store).meta.views_per_video == 2
            assert CacheReader(store).pending_shards() == [3]
        else:
            _grow(str(store), None, old, new)
        if kill == "mid-rewrite":  # the shard's logits file rewritten with garbage new rows
            g = zarr.open_group(str(store), mode="r+")
            g["logits"][15:20] = np.ones((5, 4), np.float32)
            g["logits"][15] = want["logits"][15]
        run_cli(extend_args(synth_root, store, 4))
        after = file_hashes(store)
        assert all(after[k] == before[k] for k in before
                   if int(k.split("/c/")[1].split("/")[0]) < 3), kill
        assert CacheReader(store).complete, kill
        assert_same_arrays(store_arrays(store), want)
        assert not list((store / "provenance").glob("extend-*")), kill


def test_reader_of_the_old_size_reads_a_store_being_extended(synth_root, tmp_path):
    """Between the arrays' and the root's metadata update, a reader sees the old store."""
    from dvfl_cache.cache.extend import _grow
    from dvfl_cache.cache.store import CacheReader

    store = tmp_path / "s.zarr"
    run_cli([*build_args(synth_root, store), *SHARD])
    r = CacheReader(store)
    block = r.epoch_block(1, names=["logits", "video"])
    _grow(str(store), None, r.meta, r.meta.replace(views_per_video=3))
    np.testing.assert_array_equal(r.epoch_block(1, names=["video"])["video"], block["video"])
    assert CacheReader(store).meta.views_per_video == 3


def test_extend_of_a_carded_store_says_to_write_the_card_again(synth_root, tmp_path):
    """The card describes the store before extend: extend says so, verify names it in one
    problem (not every changed file), and `card` again makes verify pass."""
    store = tmp_path / "s.zarr"
    run_cli(build_args(synth_root, store))
    run_cli(["card", str(store)])
    res = run_cli(extend_args(synth_root, store, 3))
    assert f"write it again with `dvfl-cache card {store}`" in res.output
    res = run_cli(["verify", str(store)], expect=1)
    assert "verify found 1 problem(s): card: written for 2 views per video (16 rows), the " \
           "store now has 3 (24)" in res.output
    run_cli(["card", str(store)])
    assert "matches its card" in run_cli(["verify", str(store)]).output


def test_extend_of_a_zip_or_an_http_store_is_refused_before_any_work(synth_root, tmp_path):
    """Issue 25, 14: extend of an HTTP zip sent PUTs (501), of a local .zip said "Not a
    directory"; both are read-only, said in one line before the dataset or store is read."""
    from test_cache_share import RangeHandler, serve

    from dvfl_cache.cache.share import pack

    store = tmp_path / "s.zarr"
    run_cli([*build_args(synth_root, store), *SHARD])
    pack(store, tmp_path / "s.zip")
    asked: list[str] = []

    class Recording(RangeHandler):
        def log_request(self, *args) -> None:
            asked.append(self.requestline)

    empty = tmp_path / "no-dataset"
    empty.mkdir()
    with serve(tmp_path, Recording) as base:
        for where in (tmp_path / "s.zip", f"{base}/s.zip", f"{base}/s.zarr"):
            # An empty --root: were the dataset read first, it would be the error.
            res = run_cli([*extend_args(empty, where, 3)], expect=1)
            errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1 and "Traceback" not in res.output, res.output
            assert f"{where}: cannot write a store there: zips and http(s) stores are " \
                   "read-only" in errors[0]
    assert asked == []  # not even a read, let alone a PUT
