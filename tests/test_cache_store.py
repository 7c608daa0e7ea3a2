"""CacheWriter / CacheReader: layout, resume, concurrent ranks, crashes, info and verify.

Synthetic shards stand in for the teacher: every value is a function of the row, so any lost,
misplaced or rewritten row shows up as a bitwise difference.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from dvfl_cache.cache.format import CacheMeta, DatasetInfo, SamplerInfo, TeacherInfo
from dvfl_cache.cache.inspect import info, verify
from dvfl_cache.cache.store import CacheReader, CacheWriter, chunk_rows
from dvfl_cache.errors import CacheError

CLASSES = ("archery", "bowling", "cycling", "diving", "fencing", "golf")
FAILED = {3: "moov atom not found"}  # video 3 never decodes


def make_meta(*, num_videos: int = 10, views_per_video: int = 3, views_per_shard: int = 8,
              seed: int = 0, num_classes: int = 6, feature_dim: int | None = None,
              dtype: str = "float16", num_frames: int = 2,
              index_digest: str = "sha256:" + "1" * 64) -> CacheMeta:
    return CacheMeta(
        teacher=TeacherInfo(name="vfn-tiny", config={"num_classes": num_classes},
                            weights_sha256="c" * 64),
        dataset=DatasetInfo(kind="synth", split=1, subset="train", index_digest=index_digest,
                            classes=CLASSES[:num_classes]),
        sampler=SamplerInfo(name="segment", params={"num_frames": num_frames}, seed=seed),
        num_videos=num_videos, views_per_video=views_per_video, num_frames=num_frames,
        dtype=dtype, feature_dim=feature_dim, views_per_shard=views_per_shard,
        created="2026-05-06T07:08:09+00:00")


def label_rank(rows: np.ndarray, num_classes: int) -> np.ndarray:
    """Where the true label sits in each row's logit ranking (0 = top-1)."""
    return rows % num_classes


def synthetic_shard(meta: CacheMeta, s: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    start = s * meta.views_per_shard
    r = np.arange(start, min(start + meta.views_per_shard, meta.num_rows))
    n, C, V = len(r), meta.num_classes, meta.num_videos
    video, view = r % V, r // V
    label = video % C
    # class ranked j-th gets score C - j; the label is ranked label_rank(r)
    j = np.arange(C)
    ranked = (label[:, None] - label_rank(r, C)[:, None] + j[None, :]) % C
    logits = np.zeros((n, C), dtype=np.float32)
    np.put_along_axis(logits, ranked, (C - j)[None, :] + 0.01 * (r % 7)[:, None], axis=1)
    valid = np.ones(n, dtype=np.uint8)
    failures = []
    for v, reason in FAILED.items():
        rows = video == v
        if rows.any():
            valid[rows] = 0
            logits[rows] = 0
            failures.append({"video": v, "path": f"clips/v{v}.avi", "reason": reason})
    arrays = {
        "logits": logits, "label": label, "valid": valid, "video": video, "view": view,
        "frames": view[:, None] * 10 + np.arange(meta.num_frames)[None, :] + video[:, None],
        "crop": np.stack([r * 1e-3, r * 2e-3, 0.5 + 0 * r, 0.75 + 0 * r], 1).astype(np.float32),
        "flip": (r % 2 == 1), "jitter": np.tile(np.float32([1, 1, 1, 0]), (n, 1)) + r[:, None],
        "gray": (r % 5 == 0).astype(np.uint8),
    }
    if meta.feature_dim:
        arrays["features"] = np.sin(r[:, None] + np.arange(meta.feature_dim)[None, :])
    return arrays, failures


def expected_arrays(meta: CacheMeta) -> dict[str, np.ndarray]:
    shards = [synthetic_shard(meta, s)[0] for s in range(meta.num_shards)]
    spec = meta.row_arrays()
    return {k: np.concatenate([sh[k] for sh in shards]).astype(spec[k][0]) for k in spec}


def write_all(writer: CacheWriter, shards=None) -> None:
    for s in writer.pending_shards() if shards is None else shards:
        arrays, failures = synthetic_shard(writer.meta, s)
        writer.write_shard(s, arrays, failures, fp16_kl={1: 1e-6 * (s + 1), 5.0: 1e-8})


def store_contents(path) -> dict[str, np.ndarray]:
    """Every array of a store, read with plain zarr."""
    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[:]) for name, arr in g.arrays()}


def assert_same_store(a, b) -> None:
    ca, cb = store_contents(a), store_contents(b)
    assert sorted(ca) == sorted(cb)
    for name in ca:
        assert ca[name].dtype == cb[name].dtype
        assert ca[name].tobytes() == cb[name].tobytes(), name
    ra, rb = CacheReader(a), CacheReader(b)
    assert ra.meta == rb.meta
    assert [ra.shard_record(s) for s in range(ra.num_shards)] == \
        [rb.shard_record(s) for s in range(rb.num_shards)]


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "cache.zarr"
    write_all(CacheWriter.create(path, make_meta(feature_dim=3)))
    return path


# --- layout and round trip -------------------------------------------------------------------

def test_write_then_read_every_view_block(store):
    reader = CacheReader(store)
    m = reader.meta
    assert reader.complete and reader.num_shards == 4 and reader.pending_shards() == []
    want = expected_arrays(m)
    for r in range(m.views_per_video):
        block = reader.epoch_block(r)
        assert sorted(block) == sorted(m.row_arrays())
        for name, values in block.items():
            np.testing.assert_array_equal(values, want[name][r * 10:(r + 1) * 10])
        np.testing.assert_array_equal(block["video"], np.arange(10))
        assert (block["view"] == r).all()
    # a read across shard boundaries is one slice of the same layout
    np.testing.assert_array_equal(reader.read("logits", 5, 27), want["logits"][5:27])
    assert reader.failures() == [{"video": 3, "path": "clips/v3.avi", "reason": FAILED[3],
                                  "shard": s} for s in (0, 1, 2)]
    assert reader.failed_videos() == {3: FAILED[3]}
    assert reader.fp16_kl() == {"1": pytest.approx(4e-6), "5": pytest.approx(1e-8)}


def test_store_is_plain_zarr_with_checksummed_shards(store):
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs.asdict() == make_meta(feature_dim=3).to_dict()
    logits = g["logits"]
    assert logits.shards == (8, 6) and logits.chunks == (8, 6)
    codecs = logits.metadata.to_dict()["codecs"]
    assert codecs[0]["name"] == "sharding_indexed"
    assert [c["name"] for c in codecs[0]["configuration"]["codecs"]] == ["bytes", "crc32c"]
    assert [c["name"] for c in codecs[0]["configuration"]["index_codecs"]] == ["bytes", "crc32c"]
    assert g["shard_done"].chunks == (1,)
    assert g["failures/1"].attrs["failures"][0]["video"] == 3
    # one file per shard per array, one flag file per shard
    assert sorted(os.listdir(store / "logits" / "c")) == ["0", "1", "2", "3"]
    assert sorted(os.listdir(store / "shard_done" / "c")) == ["0", "1", "2", "3"]


def test_chunk_rows():
    assert chunk_rows(8) == 8
    assert chunk_rows(4096) == 1024
    assert chunk_rows(5000) == 1000
    assert chunk_rows(4099) == 4099  # prime: one chunk, not 4099 one-row chunks


def test_empty_shard_has_the_row_layout(tmp_path):
    w = CacheWriter.create(tmp_path / "c", make_meta())
    e = w.empty_shard(3, labels=np.arange(10) % 6)
    np.testing.assert_array_equal(e["video"], [4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(e["view"], [2] * 6)
    np.testing.assert_array_equal(e["label"], [4, 5, 0, 1, 2, 3])
    assert (e["valid"] == 0).all()


def test_size_on_disk_is_logits_plus_view_records(tmp_path):
    m = make_meta(num_videos=512, views_per_video=4, views_per_shard=512, num_classes=6,
                  num_frames=4)
    m = m.replace(dataset=DatasetInfo(kind="synth", split=1, subset="train",
                                      index_digest="1" * 64,
                                      classes=tuple(f"class{i}" for i in range(400))))
    w = CacheWriter.create(tmp_path / "big", m)
    rng = np.random.default_rng(0)
    for s in range(m.num_shards):
        a = w.empty_shard(s)
        a["logits"][:] = rng.normal(0, 3, a["logits"].shape)  # incompressible anyway
        a["valid"][:] = 1
        w.write_shard(s, a, [])
    per_row = sum(dt.itemsize * int(np.prod(trail)) for name, (dt, trail)
                  in m.row_arrays().items() if name != "logits")
    expected = m.num_rows * 400 * 2 + m.num_rows * per_row
    size = info(tmp_path / "big")["size_bytes"]
    big = tmp_path / "big"
    claims = [f for f in (big / "claims").rglob("*.json") if f.parent != big / "claims"]
    assert claims  # creation was claimed; claims are bookkeeping, not part of the size
    total = sum(f.stat().st_size for f in big.rglob("*") if f.is_file() and f not in claims)
    assert size == total
    assert expected <= size <= 1.05 * expected, (size, expected)


# --- create / resume / overwrite -------------------------------------------------------------

def test_create_refuses_existing_store_without_flags(store):
    with pytest.raises(CacheError, match="already exists; pass --resume .* or --overwrite"):
        CacheWriter.create(store, make_meta(feature_dim=3))
    with pytest.raises(CacheError, match="only one of"):
        CacheWriter.create(store, make_meta(feature_dim=3), resume=True, overwrite=True)


def test_overwrite_replaces_but_never_deletes_non_stores(store, tmp_path):
    w = CacheWriter.create(store, make_meta(feature_dim=3), overwrite=True)
    assert w.pending_shards() == [0, 1, 2, 3]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(CacheError, match="not a cache store; refusing to delete"):
        CacheWriter.create(other, make_meta(), overwrite=True)
    assert (other / "cat.jpg").exists()


def test_resume_refuses_a_different_run_naming_the_field(store):
    with pytest.raises(CacheError, match="different sampler.seed: stored 0, requested 5"):
        CacheWriter.create(store, make_meta(feature_dim=3, seed=5), resume=True)
    with pytest.raises(CacheError, match="different views_per_shard"):
        CacheWriter.create(store, make_meta(feature_dim=3, views_per_shard=16), resume=True)


def test_resume_lists_pending_and_rewriting_is_harmless(tmp_path):
    m = make_meta()
    ref = tmp_path / "ref"
    write_all(CacheWriter.create(ref, m))
    path = tmp_path / "c"
    write_all(CacheWriter.create(path, m), shards=[0, 2])
    later = m.replace(created="2030-01-01T00:00:00+00:00")  # provenance only: still resumable
    w = CacheWriter.create(path, later, resume=True)
    assert w.meta.created == m.created  # the store keeps its own provenance
    assert w.pending_shards() == [1, 3]
    assert w.pending_shards(rank=1, world_size=2) == [1, 3]
    assert w.pending_shards(rank=0, world_size=2) == []
    with pytest.raises(CacheError, match=r"unfinished shards \[1\]"):
        CacheReader(path).epoch_block(0)
    write_all(w)
    write_all(w, shards=[2])  # again
    assert_same_store(path, ref)


def test_write_shard_checks_its_input(tmp_path):
    w = CacheWriter.create(tmp_path / "c", make_meta())
    good, failures = synthetic_shard(w.meta, 0)

    def bad(**changes):
        return {**good, **changes}

    cases = [
        (bad(logits=good["logits"][:3]), failures, "array 'logits' has shape"),
        ({k: v for k, v in good.items() if k != "gray"}, failures, r"missing arrays \['gray'\]"),
        (bad(video=good["video"][::-1]), failures, "do not follow the row layout"),
        (bad(label=good["label"] + 6), failures, r"labels outside \[0, 6\)"),
        (bad(logits=good["logits"] * 1e5), failures, "beyond the float16 range"),
        (bad(frames=good["frames"] + 0.5), failures, "'frames' has dtype float64"),
        (good, [], r"videos \[3\] have invalid rows but no failure record"),
        (bad(valid=np.ones(8, np.uint8)), failures, "video 3 is recorded as failed but has valid"),
        (good, [{"video": 3}], "needs a non-empty 'reason'"),
        (good, failures + [{"video": 9, "reason": "x"}], "video 9, which has no rows here"),
    ]
    for arrays, fails, message in cases:
        with pytest.raises(CacheError, match=message):
            w.write_shard(0, arrays, fails)
    assert w.pending_shards() == [0, 1, 2, 3]  # nothing was marked done
    with pytest.raises(IndexError):
        w.write_shard(4, good, failures)


# --- several ranks, crashes ------------------------------------------------------------------

def _rank_worker(path: str, meta: CacheMeta, rank: int, world: int, barrier, overwrite: bool):
    w = CacheWriter.open_for_rank(path, meta, rank=rank, world_size=world, overwrite=overwrite,
                                  barrier=None if barrier is None else barrier.wait,
                                  timeout_s=60, poll_s=0.05)
    for s in w.pending_shards(rank=rank, world_size=world):
        arrays, failures = synthetic_shard(meta, s)
        w.write_shard(s, arrays, failures, fp16_kl={1: 1e-6 * (s + 1), 5.0: 1e-8})


def _run_ranks(path, meta, world, *, barrier=None, overwrite=False):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_worker, args=(str(path), meta, k, world, barrier,
                                                     overwrite)) for k in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * world


def test_concurrent_ranks_write_disjoint_shards_without_loss(tmp_path):
    m = make_meta(num_videos=30, views_per_video=4, views_per_shard=8)  # 15 shards
    ref = tmp_path / "ref"
    write_all(CacheWriter.create(ref, m))
    path = tmp_path / "shared"
    _run_ranks(path, m, 3)  # ranks 1-2 poll until rank 0 has created the store
    assert CacheReader(path).complete
    assert_same_store(path, ref)
    # overwrite with several ranks needs a barrier; with one it is safe
    ctx = mp.get_context("spawn")
    _run_ranks(path, m, 2, barrier=ctx.Barrier(2), overwrite=True)
    assert_same_store(path, ref)


def test_overwrite_with_ranks_but_no_barrier_is_refused(tmp_path):
    with pytest.raises(CacheError, match="needs a barrier"):
        CacheWriter.open_for_rank(tmp_path / "c", make_meta(), rank=1, world_size=2,
                                  overwrite=True)


def _crash_worker(path: str, meta: CacheMeta, marker: str):
    w = CacheWriter.create(path, meta)
    write_all(w, shards=[0])
    original = zarr.Array.__setitem__
    calls = []

    def stall_mid_shard(self, key, value):
        original(self, key, value)
        calls.append(key)
        if len(calls) == 3:  # logits, label, valid of shard 1 are on disk; the rest is not
            Path(marker).touch()
            time.sleep(300)

    zarr.Array.__setitem__ = stall_mid_shard
    write_all(w, shards=[1])


def test_killed_writer_leaves_shard_pending_and_resume_is_bitwise_identical(tmp_path):
    m = make_meta()
    ref = tmp_path / "ref"
    write_all(CacheWriter.create(ref, m))
    path, marker = tmp_path / "c", tmp_path / "stalled"
    p = mp.get_context("spawn").Process(target=_crash_worker, args=(str(path), m, str(marker)))
    p.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert p.is_alive() and time.monotonic() < deadline, "writer never reached shard 1"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert (path / "logits" / "c" / "1" / "0").exists()      # shard 1 was half written
    assert not (path / "gray" / "c" / "1").exists()
    reader = CacheReader(path)
    assert reader.pending_shards() == [1, 2, 3]
    w = CacheWriter.create(path, m, resume=True)
    assert w.pending_shards() == [1, 2, 3]
    write_all(w)
    assert_same_store(path, ref)


# --- reading safeguards ------------------------------------------------------------------------

def test_check_compatible_names_every_mismatch(store):
    reader = CacheReader(store)
    m = reader.meta
    reader.check_compatible(teacher="vfn-tiny", dataset=m.dataset, num_classes=6)
    reader.check_compatible(teacher=m.teacher)
    with pytest.raises(CacheError, match="teacher 'vfn-tiny' \\(run expects 'vfn-base'\\)"):
        reader.check_compatible(teacher="vfn-base")
    other = DatasetInfo(kind="synth", split=2, subset="train", index_digest="2" * 64,
                        classes=CLASSES[:5])
    with pytest.raises(CacheError) as e:
        reader.check_compatible(dataset=other, num_classes=5)
    msg = str(e.value)
    assert "split 1 (run expects 2)" in msg and "class count 6 (run expects 5)" in msg
    assert "dataset index digest" in msg and msg.count("class count") == 1


def test_corrupt_shard_is_named_by_reader_and_verify(store):
    verify(store)  # clean
    shard = store / "logits" / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    data[20] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"array 'logits' shard 1 \(logits/c/1/0\): checksum"):
        CacheReader(store).epoch_block(0)
    with pytest.raises(CacheError) as e:
        verify(store)
    assert "1 problem(s)" in str(e.value)
    assert "shard 1: array 'logits' shard 1 (logits/c/1/0): checksum mismatch" in str(e.value)


def test_verify_reports_missing_files_incomplete_shards_and_bad_logits(tmp_path):
    m = make_meta(dtype="float32")
    path = tmp_path / "c"
    w = CacheWriter.create(path, m)
    write_all(w, shards=[0, 1, 2])
    (path / "gray" / "c" / "2").unlink()
    # non-finite logits can only get in by going around the writer
    zarr.open_array(str(path / "logits"), mode="r+")[0, 0] = np.nan
    with pytest.raises(CacheError) as e:
        verify(path)
    msg = str(e.value)
    assert "incomplete: 1 of 4 shards not done (first: [3])" in msg
    assert "shard 2: array 'gray': file gray/c/2 is missing" in msg
    assert "shard 0: array 'logits' has non-finite values" in msg


def test_verify_against_a_dataset_index(tmp_path):
    from dvfl_cache.data.index import DatasetIndex, VideoEntry, save_index

    videos = tuple(VideoEntry(path=f"clips/v{v}.avi", label=v % 6, video_id=f"v{v}")
                   for v in range(10))
    index = DatasetIndex(kind="synth", split=1, subset="train", classes=CLASSES,
                         videos=videos, root=str(tmp_path))
    save_index(index, tmp_path / "index.json")
    path = tmp_path / "c"
    write_all(CacheWriter.create(path, make_meta(index_digest=index.digest)))
    assert verify(path, index=tmp_path / "index.json")["rows_checked"] == 30
    relabelled = index.with_videos(videos[:4] + (VideoEntry("clips/v4.avi", 0, "v4"),)
                                   + videos[5:])
    save_index(relabelled, tmp_path / "other.json")
    with pytest.raises(CacheError) as e:
        verify(path, index=tmp_path / "other.json")
    msg = str(e.value)
    assert "differs from index" in msg and "other videos, labels or order" in msg
    assert "shard 0: 1 labels differ from the index (first: row 4, video 4)" in msg


def test_info_reports_teacher_accuracy_from_valid_rows(store):
    d = info(store)
    m = CacheReader(store).meta
    rows = np.arange(m.num_rows)
    valid = (rows % m.num_videos) != 3
    rank = label_rank(rows, m.num_classes)[valid]
    assert d["valid_rows"] == valid.sum() == 27
    assert d["done_rows"] == m.num_rows == 30
    assert d["teacher_top1"] == pytest.approx((rank == 0).mean())
    assert d["teacher_top5"] == pytest.approx((rank < 5).mean())
    assert 0 < d["teacher_top1"] < d["teacher_top5"] < 1
    assert (d["shards_done"], d["shards_total"], d["complete"]) == (4, 4, True)
    assert d["failed_videos"] == [{"video": 3, "path": "clips/v3.avi", "reason": FAILED[3]}]
    assert d["teacher"] == "vfn-tiny" and d["dataset"] == "synth split 1 train"
    # the CLI says what share of the finished rows is valid (a failed video's rows are not)
    from click.testing import CliRunner

    from dvfl_cache.cli import main as cache_cli

    out = CliRunner().invoke(cache_cli, ["info", str(store)])
    assert out.exit_code == 0, out.output
    assert "over 27 valid views (90.00% of the 30 rows of done shards)" in out.output


def test_reader_pickles_and_reopens(store):
    import pickle

    reader = CacheReader(store)
    before = reader.epoch_block(2)["logits"]
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._root is None  # handles never travel
    np.testing.assert_array_equal(clone.epoch_block(2)["logits"], before)


def test_teacher_accuracy_breaks_ties_as_student_evaluation_does(tmp_path):
    """Tied logits: the lower class index ranks first, in `info` as in `accuracy_report` (an
    argpartition, the old rule of `info`, ranks class 5 first here)."""
    from dvfl_train.metrics import accuracy_report

    path = tmp_path / "ties.zarr"
    writer = CacheWriter.create(path, make_meta())
    tied = np.float32([0, 0, 0, 0, 1, 1])  # order by the rule: 4, 5, 0, 1, 2, 3
    labels = []
    for s in writer.pending_shards():
        arrays, failures = synthetic_shard(writer.meta, s)
        arrays["logits"][:] = tied
        writer.write_shard(s, arrays, failures)
        labels.append(arrays["label"][arrays["valid"] == 1])
    labels = np.concatenate(labels)
    d = info(path)
    assert d["teacher_top1"] == pytest.approx((labels == 4).mean())
    assert d["teacher_top5"] == pytest.approx((labels != 3).mean())
    assert 0 < d["teacher_top1"] < d["teacher_top5"] < 1
    rep = accuracy_report(np.tile(tied, (len(labels), 1)), labels, 6)
    assert (rep.top1, rep.top5) == pytest.approx((d["teacher_top1"], d["teacher_top5"]))


def test_a_crafted_chunk_key_separator_is_one_line_in_info_verify_and_card(tmp_path):
    """Issue 25, 4: a separator zarr refuses was a ValueError traceback (nothing escaped)."""
    import json

    from click.testing import CliRunner

    from dvfl_cache.cli import main

    store = tmp_path / "in" / "c.zarr"
    write_all(CacheWriter.create(store, make_meta()))
    meta_file = store / "logits" / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["chunk_key_encoding"]["configuration"]["separator"] = "/../../../ESCAPE/"
    meta_file.write_text(json.dumps(doc))
    before = sorted(p for p in tmp_path.rglob("*"))
    for cmd in ("info", "verify", "card"):
        res = CliRunner().invoke(main, [cmd, str(store)])
        assert res.exit_code == 1, (cmd, res.output)
        assert not isinstance(res.exception, ValueError) and "Traceback" not in res.output
        errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1, res.output
        assert "array 'logits' has unreadable metadata (logits/zarr.json)" in errors[0]
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, inside or out
