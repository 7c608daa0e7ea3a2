"""Caches in object storage: a real S3 server (moto, 127.0.0.1), claims, concurrent builders.

Nothing here is mocked: stores are written to and read from the session's S3 server (see
`s3_endpoint` in conftest.py) through s3fs, exactly as a user's bucket would be.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import S3_ENV
from dvfl_cache.cache.claims import ShardClaims, create_exclusive
from dvfl_cache.cache.inspect import info, verify
from dvfl_cache.cache.location import target_fs
from dvfl_cache.cache.share import export_hdf5, import_hdf5, pack
from dvfl_cache.cache.store import CacheReader, CacheWriter
from dvfl_cache.errors import CacheError
from test_cache_store import assert_same_store, make_meta, synthetic_shard, write_all


def _fs(url: str):
    return target_fs(url)


# --- stores on S3 ----------------------------------------------------------------------------

def test_store_on_s3_round_trips_and_never_makes_a_local_folder(bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = make_meta(feature_dim=3)
    ref = tmp_path / "ref.zarr"
    write_all(CacheWriter.create(ref, m))
    url = f"{bucket}/c.zarr"
    write_all(CacheWriter.create(url, m))
    assert not any(tmp_path.glob("s3*")), "a local folder named after the URL appeared"
    assert_same_store(url, ref)
    assert verify(url)["shards_checked"] == 4
    d = info(url)
    assert d["complete"] and d["teacher_top1"] == info(ref)["teacher_top1"]
    assert d["size_bytes"] == info(ref)["size_bytes"]  # same files, listed in the bucket
    with pytest.raises(CacheError, match="already exists; pass --resume"):
        CacheWriter.create(url, m)
    (tmp_path / "packed.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an (empty) zip
    for read_only in ("http://127.0.0.1:9/c.zarr", f"{bucket}/c.zip", tmp_path / "packed.zip"):
        with pytest.raises(CacheError, match="cannot write a store there"):
            CacheWriter.create(read_only, m)
    # export / import / pack with URLs on both sides
    export_hdf5(url, f"{bucket}/c.h5")
    import_hdf5(f"{bucket}/c.h5", f"{bucket}/back.zarr")
    assert_same_store(f"{bucket}/back.zarr", ref)
    pack(url, f"{bucket}/c.zip")
    reader = CacheReader(f"{bucket}/c.zip")
    np.testing.assert_array_equal(reader.epoch_block(2)["logits"],
                                  CacheReader(ref).epoch_block(2)["logits"])
    assert not any(tmp_path.glob("s3*"))


def test_killed_creation_and_half_written_shard_on_s3_resume_bitwise(bucket, tmp_path):
    """No rename on S3: a store exists once its root zarr.json does; a shard counts once its
    flag does. Leftovers of a killed creation are cleared, a half-written shard is redone."""
    m = make_meta()
    ref = tmp_path / "ref"
    write_all(CacheWriter.create(ref, m))
    url = f"{bucket}/c.zarr"
    fs, root = _fs(url)
    write_all(CacheWriter.create(url, m), shards=[0])
    # a writer killed mid-shard 1: some array files written, no flag
    arrays, failures = synthetic_shard(m, 1)
    w = CacheWriter.create(url, m, resume=True)
    w._arrays["logits"][8:16] = arrays["logits"].astype(np.float16)
    assert CacheReader(url).pending_shards() == [1, 2, 3]
    with pytest.raises(CacheError, match=r"unfinished shards \[1\]"):
        CacheReader(url).read("logits", 8, 16)
    write_all(CacheWriter.create(url, m, resume=True))
    assert_same_store(url, ref)
    # a creation killed before its root zarr.json: only metadata, cleared on the next create
    url2 = f"{bucket}/d.zarr"
    fs.pipe_file(f"{root[:-len('c.zarr')]}d.zarr/logits/zarr.json", b"{}")
    with pytest.raises(CacheError, match="cannot open|not a cache store"):
        CacheReader(url2)
    write_all(CacheWriter.create(url2, m))
    assert_same_store(url2, ref)


# --- claims -----------------------------------------------------------------------------------

@pytest.fixture(params=["local", "s3"])
def claim_root(request, tmp_path):
    """A store address on disk and on the S3 server: one claim mechanism for both."""
    if request.param == "local":
        return str(tmp_path / "store")
    return f"{request.getfixturevalue('bucket')}/store"


def test_create_exclusive_is_create_if_absent(claim_root):
    fs, root = _fs(claim_root)
    assert create_exclusive(fs, f"{root}/k", b"first")
    assert not create_exclusive(fs, f"{root}/k", b"second")
    assert fs.cat_file(f"{root}/k") == b"first"


def test_claims_exclude_expire_and_are_retaken(claim_root):
    fs, root = _fs(claim_root)
    a, b = ShardClaims(fs, root, ttl_s=1.5), ShardClaims(fs, root, ttl_s=1.5)
    try:
        assert a.try_claim(0) and a.holds(0)
        assert a.try_claim(0)  # idempotent for the owner
        assert not b.try_claim(0)
        assert [c.shard for c in b.live_foreign([0, 1])] == [0]
        a.close()  # a stops renewing, as if its machine died
        time.sleep(1.7)
        assert b.try_claim(0) and b.holds(0)
        assert not a.holds(0)  # a sees it lost the shard and will not write it
        assert b.newest(0).gen == 1
        # a live claim outlasts its time to live thanks to the heartbeat
        assert b.try_claim(1)
        time.sleep(1.2)
        c = ShardClaims(fs, root, ttl_s=1.5)
        assert not c.try_claim(1)
    finally:
        a.close()
        b.close()


def test_a_released_claim_is_dead_at_once_for_anyone_in_any_process(claim_root):
    """A written shard's claim must not make others wait out its expiry: a second command in
    the same live process (build, then extend) once waited the whole time to live."""
    fs, root = _fs(claim_root)
    a, b = ShardClaims(fs, root, ttl_s=600), ShardClaims(fs, root, ttl_s=600)
    try:
        assert a.try_claim(0) and a.try_claim(1)
        a.release(0)
        assert a.newest(0).expires == 0.0 and a.newest(1).expires > time.time() + 500
        assert b.try_claim(0) and b.newest(0).gen == 1  # no wait: retaken at once
        assert not b.try_claim(1)  # the claim still held stands
        a.release(0)  # not held any more: b's newer claim is left alone
        assert b.holds(0) and b.newest(0).expires > time.time() + 500
    finally:
        a.close()
        b.close()


def test_a_shard_finished_while_another_looked_is_not_claimed_again(claim_root):
    """The flaky "shard 7 was claimed 2 times" of the 2-rank build (issue 25): rank B read
    shard 7's done flag just before rank A marked it done and released its claim; B then found
    the claim released and took a second generation (its look after claiming saw the flag
    and gave it back: nothing was computed twice, and no done flag was lost, each shard's flag
    being a file of its own). The claim is no longer taken."""
    from dvfl_cache.cache.build import _ClaimedRows

    fs, root = _fs(claim_root)
    a, b = ShardClaims(fs, root), ShardClaims(fs, root)
    done: set[int] = set()

    class RankB:
        """B's view: its first look at shard 7's flag came before A finished it."""
        looks = 0

        def is_done(self, s: int) -> bool:
            self.looks += 1
            return s in done if self.looks > 1 else False

        def shard_rows(self, s: int) -> range:
            return range(4 * s, 4 * s + 4)

    try:
        rows = _ClaimedRows(RankB(), b, [7])
        assert a.try_claim(7)
        done.add(7)  # A wrote shard 7 and marked it done ...
        a.release(7)  # ... then gave its claim up
        assert not rows.claim_first()
        assert len(fs.ls(f"{root}/claims/7", detail=False)) == 1  # A's claim only
        assert b.newest(7).token == a.token
    finally:
        a.close()
        b.close()


def _hold_claim_forever(root: str, ready) -> None:
    fs, r = target_fs(root)
    ShardClaims(fs, r, ttl_s=600).try_claim(0)
    ready.set()
    time.sleep(600)


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_claim_of_a_killed_process_on_this_host_is_retaken_at_once(where, tmp_path, request):
    claim_root = str(tmp_path / "store") if where == "local" else \
        f"{request.getfixturevalue('bucket')}/store"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_claim_forever, args=(claim_root, ready))
    p.start()
    assert ready.wait(60)
    fs, root = _fs(claim_root)
    mine = ShardClaims(fs, root, ttl_s=600)
    try:
        assert not mine.try_claim(0)  # alive: its claim stands for 600 s
        p.kill()
        p.join(30)
        assert mine.try_claim(0)  # dead pid on this host: no need to wait for the expiry
    finally:
        mine.close()
        if p.is_alive():
            p.kill()


def _claiming_writer(path: str, meta, delay: float, queue) -> None:
    w = CacheWriter.create(path, meta, resume=True)
    mine = []
    with w.claims(ttl_s=30) as claims:
        for s in w.pending_shards():
            if not claims.claim_pending(s, w.is_done):  # the build's protocol
                continue
            arrays, failures = synthetic_shard(meta, s)
            time.sleep(delay)  # the teacher's work
            w.write_shard(s, arrays, failures, fp16_kl={1: 1e-6 * (s + 1), 5.0: 1e-8})
            claims.release(s)
            mine.append(s)
    queue.put(mine)


# On S3 the same code runs (slow: many small requests to moto); the 2-rank build into S3
# (test_cache_build_remote.py) exercises the claims there in the default suite.
@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_two_concurrent_resumes_split_the_shards(where, tmp_path, request):
    m = make_meta(num_videos=10, views_per_video=4, views_per_shard=4)  # 10 shards
    ref = tmp_path / "ref"
    write_all(CacheWriter.create(ref, m))
    path = str(tmp_path / "c") if where == "local" else \
        f"{request.getfixturevalue('bucket')}/c.zarr"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claiming_writer, args=(path, m, 0.3, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert all(got), f"one process did all the work: {got}"
    assert sorted(got[0] + got[1]) == list(range(10)), "a shard was computed twice or never"
    assert_same_store(path, ref)


def test_overwrite_refuses_a_store_another_process_is_writing(tmp_path):
    m = make_meta()
    path = tmp_path / "c"
    w = CacheWriter.create(path, m)
    write_all(w, shards=[0])
    fs, root = _fs(str(path))
    other = ShardClaims(fs, root, ttl_s=1.0)  # a live builder working on shard 2
    assert other.try_claim(2)
    with pytest.raises(CacheError, match="another process is writing this store .*shard 2.*"
                                         "refusing to --overwrite"):
        CacheWriter.create(path, m, overwrite=True)
    assert CacheReader(path).pending_shards() == [1, 2, 3]  # nothing was deleted
    other.close()
    time.sleep(1.2)  # its claim expires
    assert CacheWriter.create(path, m, overwrite=True).pending_shards() == [0, 1, 2, 3]


# --- errors ------------------------------------------------------------------------------------

def _cli(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvfl_cache.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_storage_failures_are_one_line_and_secrets_stay_out(bucket, s3_endpoint, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**base, **S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cases = [
        (["info", "s3://no-such-bucket-here/c.zarr"], env, "the bucket does not exist"),
        (["info", f"{bucket}/c.zarr", "--storage-option", "endpoint_url=http://127.0.0.1:9"],
         env, "cannot reach the storage endpoint"),
        (["info", f"{bucket}/c.zarr"],
         {**base, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_EC2_METADATA_DISABLED": "true",
          "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
          "AWS_CONFIG_FILE": str(tmp_path / "none"),
          "PYTHONPATH": env["PYTHONPATH"]}, "no valid credentials"),
    ]
    for args, e, message in cases:
        res = _cli(args, e)
        assert res.returncode == 1, res.stdout + res.stderr
        err = res.stderr.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert message in err, err
    # A secret given as a storage option appears in no output, record or card.
    secret = "SEKRET-do-not-store-123"
    url = f"{bucket}/c.zarr"
    write_all(CacheWriter.create(url, make_meta()))
    token = json.dumps({"aws_session_token": secret})
    res = _cli(["info", url, "--storage-option", f"client_kwargs={token}"], env)
    assert secret not in res.stdout + res.stderr


def test_verify_recompute_reads_the_store_with_the_storage_options(bucket, s3_endpoint,
                                                                   synth_root):
    """--storage-option reaches --recompute's reads as well as verify's: the endpoint is given
    only as an option here, the environment points at a closed port."""
    from test_cache_mix import V1_STORE

    fs, path = _fs(f"{bucket}/v1.zip")
    fs.put(str(V1_STORE), path)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**base, **S3_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = ["verify", f"{bucket}/v1.zip", "--dataset", "ucf101", "--root", str(synth_root),
            "--recompute", "4", "--teacher", "vfl-nano"]
    res = _cli([*args, "--storage-option", f"endpoint_url={s3_endpoint}"], env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recomputed on 4 rows (0 mixed)" in res.stdout
    res = _cli(args, env, timeout=300)  # without the option: the closed port, one line
    assert res.returncode == 1 and "cannot reach the storage endpoint" in res.stderr


def test_a_missing_object_on_s3_is_an_error_for_reads_export_and_pack(bucket, tmp_path):
    """A shard file lost from a bucket never reads as zeros (issue 25, 1 and 2)."""
    url = f"{bucket}/c.zarr"
    write_all(CacheWriter.create(url, make_meta(feature_dim=3)))
    fs, root = _fs(url)
    key = CacheReader(url).shard_key("logits", 0)
    fs.rm(f"{root}/{key}")
    missing = f"array 'logits' shard 0: file {key} is missing"
    reader = CacheReader(url)
    assert reader.complete
    with pytest.raises(CacheError, match=missing):
        reader.epoch_block(0)
    with pytest.raises(CacheError, match=missing):
        export_hdf5(url, tmp_path / "c.h5")
    with pytest.raises(CacheError, match=missing):
        pack(url, tmp_path / "c.zip")
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.zip").exists()


def test_a_plain_web_server_as_s3_endpoint_is_named_as_such(s3_endpoint, synth_root, tmp_path):
    """Issue 25, 5: a static HTTP server given as endpoint_url read as "the bucket does not
    exist" (info) and "[Errno 38] Not Implemented" (build)."""
    from test_cache_share import serve

    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**base, **S3_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with serve(tmp_path) as web:
        so = ["--storage-option", f"endpoint_url={web}"]
        build = ["build", "--dataset", "ucf101", "--root", str(synth_root), "--teacher",
                 "vfl-nano", "--random-weights", "--teacher-opt", "embed_dim=8", "--teacher-opt",
                 "depths=[1,1,1,1]", "--frames", "2", "--size", "32", "--workers", "0",
                 "--out", "s3://b/c.zarr", *so]
        for args in (["info", "s3://b/c.zarr", *so], build):
            res = _cli(args, env)
            assert res.returncode == 1, res.stdout + res.stderr
            errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
            assert f"the endpoint {web} does not speak S3" in errors[0]
    # The S3 server itself is not mistaken for one that does not speak S3.
    res = _cli(["info", "s3://b/c.zarr", "--storage-option", f"endpoint_url={s3_endpoint}"], env)
    assert res.returncode == 1 and "the bucket does not exist" in res.stderr, res.stderr
