"""Sharing a cache: pack to zip, HDF5 export/import, reading over HTTP, forked workers, CLI."""

from __future__ import annotations

import functools
import http.server
import multiprocessing as mp
import os
import re
import threading
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner

from dvfl_cache.cache.inspect import info, verify
from dvfl_cache.cache.share import export_hdf5, import_hdf5, pack
from dvfl_cache.cache.store import CacheReader, CacheWriter
from dvfl_cache.cli import main
from dvfl_cache.errors import CacheError
from test_cache_store import assert_same_store, expected_arrays, make_meta, write_all


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "cache.zarr"
    write_all(CacheWriter.create(path, make_meta(feature_dim=3)))
    return path


def assert_reads_like(reader: CacheReader, local) -> None:
    want = expected_arrays(CacheReader(local).meta)
    V = reader.meta.num_videos
    for r in range(reader.meta.views_per_video):
        for name, values in reader.epoch_block(r).items():
            np.testing.assert_array_equal(values, want[name][r * V:(r + 1) * V])
    assert reader.failed_videos() == {3: "moov atom not found"}


# --- pack ------------------------------------------------------------------------------------

def test_pack_makes_one_readable_uncompressed_zip(store, tmp_path):
    out = tmp_path / "cache.zip"
    d = pack(store, out)
    assert d["complete"] and d["files"] > 40
    with zipfile.ZipFile(out) as z:
        infos = z.infolist()
    assert infos[0].filename == "zarr.json"
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert "logits/c/2/0" in {i.filename for i in infos}
    assert_reads_like(CacheReader(out), store)
    assert info(out)["size_bytes"] == out.stat().st_size
    with pytest.raises(CacheError, match="already exists; pass --overwrite"):
        pack(store, out)
    with pytest.raises(CacheError, match="must end in .zip"):
        pack(store, tmp_path / "cache.tar")


def test_pack_refuses_incomplete_stores_unless_asked(tmp_path):
    path = tmp_path / "part"
    write_all(CacheWriter.create(path, make_meta()), shards=[0, 1])
    with pytest.raises(CacheError, match=r"incomplete \(2 of 4 shards done\).*--allow-incomplete"):
        pack(path, tmp_path / "part.zip")
    assert not (tmp_path / "part.zip").exists()
    assert not pack(path, tmp_path / "part.zip", allow_incomplete=True)["complete"]
    assert CacheReader(tmp_path / "part.zip").pending_shards() == [2, 3]


# --- HDF5 ------------------------------------------------------------------------------------

def test_hdf5_round_trip_is_identical(store, tmp_path):
    import h5py

    h5 = tmp_path / "cache.h5"
    assert export_hdf5(store, h5)["shards"] == 4
    with h5py.File(h5, "r") as h:
        np.testing.assert_array_equal(h["logits"][:], CacheReader(store).read("logits", 0, 30))
    back = tmp_path / "back.zarr"
    import_hdf5(h5, back)
    assert_same_store(back, store)


def test_hdf5_round_trip_keeps_pending_shards_pending(tmp_path):
    path = tmp_path / "part"
    write_all(CacheWriter.create(path, make_meta()), shards=[1, 3])
    export_hdf5(path, tmp_path / "part.h5")
    import_hdf5(tmp_path / "part.h5", tmp_path / "back")
    assert CacheReader(tmp_path / "back").pending_shards() == [0, 2]
    assert_same_store(tmp_path / "back", path)


def test_import_refuses_foreign_hdf5(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as h:
        h["logits"] = np.zeros((2, 2))
    with pytest.raises(CacheError, match="not a dvfl cache export"):
        import_hdf5(tmp_path / "x.h5", tmp_path / "out")


# --- HTTP ------------------------------------------------------------------------------------

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges (`a-b`, `a-`, `-n`), as any real server has."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        spec = self.headers.get("Range")
        if spec is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
        if m is None or m.groups() == ("", ""):
            self.send_error(416)
            return None
        a, b = m.groups()
        start, end = (size - int(b), size - 1) if a == "" else (int(a), min(int(b or size - 1),
                                                                            size - 1))
        start = max(start, 0)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        self._left = None
        outputfile.write(source.read(left))


@contextmanager
def serve(directory, handler=RangeHandler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_reads_store_and_zip_over_http_with_ranges(store, tmp_path):
    pack(store, tmp_path / "cache.zip")
    with serve(tmp_path) as base:
        for url in (f"{base}/cache.zarr", f"{base}/cache.zip", f"zip::{base}/cache.zip"):
            reader = CacheReader(url)
            assert reader.location.is_remote
            assert reader.complete
            assert_reads_like(reader, store)
            reader.close()
        d = info(f"{base}/cache.zip")
        assert d["size_bytes"] == (tmp_path / "cache.zip").stat().st_size
        assert d["teacher_top1"] == info(store)["teacher_top1"]
        with pytest.raises(CacheError, match="not found \\(HTTP 404\\)"):
            CacheReader(f"{base}/nothing.zarr")


def test_server_ignoring_ranges_is_named_not_a_checksum_error(store, tmp_path):
    pack(store, tmp_path / "cache.zip")
    with serve(tmp_path, http.server.SimpleHTTPRequestHandler) as base:
        for url in (f"{base}/cache.zarr", f"{base}/cache.zip"):
            with pytest.raises(CacheError, match="the server ignores byte ranges .* answered 200"):
                CacheReader(url)


# --- forked workers --------------------------------------------------------------------------

def _child_read(reader: CacheReader, queue) -> None:
    block = reader.epoch_block(1)
    queue.put((reader._pid == os.getpid(), block["logits"].tobytes(), block["frames"].tobytes()))


@pytest.mark.parametrize("packed", [False, True], ids=["dir", "zip"])
def test_reader_opened_in_parent_works_in_forked_workers(store, tmp_path, packed):
    path = store
    if packed:
        path = tmp_path / "cache.zip"
        pack(store, path)
    reader = CacheReader(path)
    parent = reader.epoch_block(1)  # handles are now open in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_read, args=(reader, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    for reopened, logits, frames in results:
        assert reopened
        assert logits == parent["logits"].tobytes() and frames == parent["frames"].tobytes()
    assert reader._pid == os.getpid()
    np.testing.assert_array_equal(reader.epoch_block(1)["logits"], parent["logits"])


# --- CLI -------------------------------------------------------------------------------------

def test_cli_info_names_a_random_teacher_instead_of_a_none_digest(tmp_path):
    """A --random-weights build has no weights file: info says so rather than 'sha256 None'."""
    import dataclasses

    from dvfl_cache.cache.format import TeacherInfo

    meta = make_meta()
    meta = dataclasses.replace(meta, teacher=TeacherInfo(name="vfn-tiny",
                                                         config=meta.teacher.config,
                                                         weights_sha256=None))
    write_all(CacheWriter.create(tmp_path / "c.zarr", meta))
    res = CliRunner().invoke(main, ["info", str(tmp_path / "c.zarr")])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("teacher "))
    assert line.split(None, 1)[1] == "vfn-tiny (random weights, no checkpoint)"


def test_cli_info_verify_pack_export_import(store, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["info", str(store)])
    assert res.exit_code == 0, res.output
    assert "4 / 4 shards done" in res.output
    assert "teacher top-1" in res.output and "moov atom not found" in res.output
    res = runner.invoke(main, ["verify", str(store)])
    assert res.exit_code == 0 and "OK:" in res.output and "4 shards, 30 rows" in res.output
    res = runner.invoke(main, ["pack", str(store), str(tmp_path / "c.zip")])
    assert res.exit_code == 0 and (tmp_path / "c.zip").exists()
    res = runner.invoke(main, ["export", str(tmp_path / "c.zip"), str(tmp_path / "c.h5")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["import", str(tmp_path / "c.h5"), str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    assert_same_store(tmp_path / "back", store)
    shard = tmp_path / "back" / "label" / "c" / "2"
    data = bytearray(shard.read_bytes())
    data[3] ^= 0x01
    shard.write_bytes(bytes(data))
    res = runner.invoke(main, ["verify", str(tmp_path / "back")])
    assert res.exit_code == 1
    assert "array 'label' shard 2 (label/c/2): checksum mismatch" in res.output


# --- zip over HTTP reads only what it needs --------------------------------------------------

class CountingRangeHandler(RangeHandler):
    """RangeHandler that records every response body it sends: (path, range, bytes)."""

    sent: list[tuple[str, str | None, int]] = []

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_left", None)
        n = left if left is not None else os.fstat(source.fileno()).st_size
        type(self).sent.append((self.path, self.headers.get("Range"), n))
        super().copyfile(source, outputfile)


def _chunk_bytes(store_dir, name: str, shards: list[int]) -> int:
    """Bytes of the inner chunks of `shards` of array `name`, from the shard indexes on disk
    (each index ends the shard file: (offset, nbytes) uint64 pairs, then a crc32c)."""
    import zarr

    arr = zarr.open_array(str(store_dir / name), mode="r")
    n_inner = arr.shards[0] // arr.chunks[0]
    total = 0
    for s in shards:
        key = arr.metadata.encode_chunk_key((s,) + (0,) * (arr.ndim - 1))
        data = (store_dir / name / key).read_bytes()
        index = np.frombuffer(data[-(16 * n_inner + 4):-4], dtype="<u8").reshape(-1, 2)
        total += int(index[:, 1].sum())
    return total


def test_zip_over_http_reads_the_directory_once_then_only_the_chunks(tmp_path):
    from dvfl_cache.cache.format import CacheMeta, DatasetInfo, SamplerInfo, TeacherInfo

    C, V = 400, 64
    meta = CacheMeta(
        teacher=TeacherInfo(name="vfn-base", config={}, weights_sha256=None),
        dataset=DatasetInfo(kind="synth", split=1, subset="train",
                            index_digest="sha256:" + "2" * 64,
                            classes=tuple(f"c{i}" for i in range(C))),
        sampler=SamplerInfo(name="segment", params={}, seed=0),
        num_videos=V, views_per_video=3, num_frames=8, dtype="float16", feature_dim=None,
        views_per_shard=32)
    store = tmp_path / "big.zarr"
    w = CacheWriter.create(store, meta)
    rng = np.random.default_rng(0)
    for s in range(meta.num_shards):
        a = w.empty_shard(s, labels=np.arange(V, dtype=np.int32) % C)
        a["logits"][:] = rng.normal(size=a["logits"].shape)
        a["valid"][:] = 1
        w.write_shard(s, a, [])
    pack(store, tmp_path / "big.zip")
    CountingRangeHandler.sent = []
    with serve(tmp_path, CountingRangeHandler) as base:
        reader = CacheReader(f"{base}/big.zip")
        for name in reader.meta.row_arrays():
            reader.array(name)  # every array's zarr.json: metadata, read once per process
        opened = list(CountingRangeHandler.sent)
        CountingRangeHandler.sent.clear()
        block = reader.epoch_block(1)  # rows 64-127: shards 2 and 3
        sent = list(CountingRangeHandler.sent)
        CountingRangeHandler.sent.clear()
        reader.epoch_block(1)
        again = sum(n for _, _, n in CountingRangeHandler.sent)
    np.testing.assert_array_equal(block["logits"], CacheReader(store).epoch_block(1)["logits"])
    chunks = sum(_chunk_bytes(store, name, [2, 3]) for name in meta.row_arrays())
    got = sum(n for _, _, n in sent)
    directory = sum(n for _, rng_, n in opened if rng_ is not None)
    ratio = got / chunks
    print(f"epoch block: {got} bytes over HTTP for {chunks} bytes of chunks (ratio "
          f"{ratio:.3f}); opening (directory, metadata): {directory} bytes; zip "
          f"{(tmp_path / 'big.zip').stat().st_size} bytes")
    assert all(r is not None for _, r, _ in opened + sent), "a whole-file GET was made"
    assert ratio <= 1.2, sent
    # The directory is not read again for the block; a second read of the block costs the same.
    assert not any(r.startswith("bytes=-") for _, r, _ in sent)
    assert again <= got


# --- dataset card ------------------------------------------------------------------------------

def test_pack_and_card_write_a_card_that_verify_checks(store, tmp_path):
    from dvfl_cache.cache.card import CARD_NAME, MANIFEST_NAME, parse_card
    from dvfl_cache.cache.share import write_card
    from dvfl_cache.cache.inspect import teacher_accuracy

    d = pack(store, tmp_path / "c.zip")
    with zipfile.ZipFile(tmp_path / "c.zip") as z:
        card = z.read(CARD_NAME).decode()
        manifest = z.read(MANIFEST_NAME).decode()
    fields = parse_card(card, source="c.zip")
    m = CacheReader(store).meta
    assert card.startswith("---\n") and "\n---\n\n# vfn-tiny teacher logits" in card
    assert fields["teacher"] == {"name": "vfn-tiny", "weights_sha256": "c" * 64,
                                 "config": m.teacher.config}
    assert fields["dataset"]["index_digest"] == m.dataset.index_digest
    assert (fields["num_rows"], fields["views_per_video"], fields["dtype"]) == (30, 3, "float16")
    assert fields["teacher_top1"] == teacher_accuracy(CacheReader(store))["teacher_top1"]
    assert fields["manifest"]["sha256"] == d["manifest"]
    assert fields["manifest"]["files"] == len(manifest.splitlines()) == d["files"]
    assert fields["verify_with"] == [f"dvfl-cache verify {tmp_path / 'c.zip'}"]
    with zipfile.ZipFile(tmp_path / "c.zip") as z:
        assert fields["size_bytes"] == sum(i.file_size for i in z.infolist()
                                           if i.filename not in (CARD_NAME, MANIFEST_NAME))
    assert "logits/c/2/0" in manifest
    assert verify(tmp_path / "c.zip")["card"] == d["manifest"]
    # the card command writes the same card into the directory; verify then checks it
    assert write_card(store)["manifest"]["sha256"] == d["manifest"]
    assert (store / CARD_NAME).is_file() and (store / MANIFEST_NAME).is_file()
    assert verify(store)["card"] == d["manifest"]
    # a file that changed (still a valid chunk: re-written with other values) is named
    w = CacheWriter.create(store, CacheReader(store).meta, resume=True)
    arrays = w.empty_shard(1, labels=(np.arange(10) % 6).astype(np.int32))
    arrays["valid"][:] = 0
    w.write_shard(1, arrays, [{"video": v, "reason": "gone"} for v in sorted(set(arrays["video"]))])
    with pytest.raises(CacheError, match=r"card: file logits/c/1/0 differs from the manifest"):
        verify(store)
    # a card that lies about the store
    write_card(store)
    text = (store / CARD_NAME).read_text().replace('"dtype": "float16"', '"dtype": "float32"')
    (store / CARD_NAME).write_text(text.replace('dtype: "float16"', 'dtype: "float32"'))
    with pytest.raises(CacheError, match="card field 'dtype' says \"float32\""):
        verify(store)


# --- a missing shard file is an error wherever the store lives (issue 25, 1 and 2) -------------

def _without(zip_in, zip_out, member: str) -> None:
    """A copy of a packed store with one member left out (as if lost or never uploaded)."""
    with zipfile.ZipFile(zip_in) as src, zipfile.ZipFile(zip_out, "w") as dst:
        for info_ in src.infolist():
            if info_.filename != member:
                dst.writestr(info_, src.read(info_))


def test_a_missing_shard_file_is_an_error_in_every_location_never_zeros(store, tmp_path):
    pack(store, tmp_path / "whole.zip")
    key = CacheReader(store).shard_key("logits", 1)
    _without(tmp_path / "whole.zip", tmp_path / "cache.zip", key)
    (store / key).unlink()
    missing = rf"array 'logits' shard 1: file {re.escape(key)} is missing"
    with serve(tmp_path) as base:
        for where in (store, tmp_path / "cache.zip", f"{base}/cache.zarr", f"{base}/cache.zip"):
            reader = CacheReader(where)
            assert reader.complete  # the flag says done: only the file tells
            np.testing.assert_array_equal(  # other shards still read
                reader.read("logits", 0, 8), CacheReader(tmp_path / "whole.zip").read(
                    "logits", 0, 8))
            with pytest.raises(CacheError, match=missing + ".*--repair"):
                reader.epoch_block(0)  # rows 0-9 reach into shard 1 (rows 8-15)
            with pytest.raises(CacheError, match=missing):
                export_hdf5(where, tmp_path / "x.h5", overwrite=True)
            assert not (tmp_path / "x.h5").exists()
            reader.close()


def test_export_and_pack_refuse_a_store_with_a_missing_shard_file(store, tmp_path):
    """Neither launders the hole: no HDF5 of zeros marked done, no zip with a fresh card."""
    key = CacheReader(store).shard_key("view", 2)  # an array the card never reads
    (store / key).unlink()
    runner = CliRunner()
    for args, out in ((["export", str(store), str(tmp_path / "c.h5")], tmp_path / "c.h5"),
                      (["pack", str(store), str(tmp_path / "c.zip")], tmp_path / "c.zip")):
        res = runner.invoke(main, args)
        assert res.exit_code == 1, res.output
        lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1 and "Traceback" not in res.output, res.output
        assert f"array 'view' shard 2: file {key} is missing" in lines[0]
        assert not out.exists()


@pytest.mark.parametrize("field, value, says", [
    ("num_videos", 3, "does not follow the row layout"),
    ("num_frames", 9, "array 'frames' has shape (30, 2) int32, expected (30, 9) int32"),
    ("feature_dim", 3, "array 'features' is missing"),
])
def test_card_only_certifies_a_store_that_verifies(field, value, says, tmp_path):
    """Issue 25, 10: card wrote a card for stores whose metadata lies (verify rejects them)."""
    import json

    path = tmp_path / "cache.zarr"
    write_all(CacheWriter.create(path, make_meta()))
    root = path / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"][field] = value
    root.write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["card", str(path)])
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert "no card for a store that does not verify: verify found" in errors[0]
    assert says in errors[0]
    assert not (path / "README.md").exists() and not (path / "manifest.sha256").exists()
