"""Two `dvfl-cache build --resume` processes on one store split the pending shards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from test_cache_build import build_args, run_cli, store_arrays


def test_two_concurrent_build_resumes_compute_each_shard_once(synth_root, tmp_path):
    more = ["--views-per-video", "4", "--batch-size", "1"]  # 8 shards of 4 views
    ref = tmp_path / "ref.zarr"
    run_cli([*build_args(synth_root, ref), *more])
    out = tmp_path / "c.zarr"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "dvfl_cache.cli", *build_args(synth_root, out), *more,
           "--resume"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    written = []
    for stdout, _ in outputs:
        m = re.search(r"(\d+) views in (\d+) shards written by this process; store complete",
                      stdout)
        assert m, stdout
        written.append(int(m.group(2)))
    assert sum(written) == 8, f"shards computed per process: {written} (8 in the store)"
    a, b = store_arrays(out), store_arrays(ref)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_claim_ttl_option_sets_the_claims_time_to_live(synth_root, tmp_path, caplog):
    import json
    import logging

    out = tmp_path / "c.zarr"
    with caplog.at_level(logging.INFO, logger="dvfl_cache.cache.build"):
        run_cli([*build_args(synth_root, out), "--claim-ttl", "7"])
    assert "claims live 7 s" in caplog.text  # the ShardClaims' own time to live
    # every shard written: its claim given up (expired), nobody waits for it
    claims = sorted((out / "claims").glob("*/000000.json"))
    assert claims and all(json.loads(c.read_text())["expires"] == 0 for c in claims)



def _extend_rounds(rounds: list[tuple[list[str], float]], barrier, queue) -> None:
    """One process running `dvfl-cache extend` once per round: all processes start each round
    together (imports done before the first), this one `delay` seconds after the others."""
    import contextlib
    import io
    import time

    import click

    import dvfl_cache.cache.extend  # noqa: F401  (imported before the start, not in the race)
    from dvfl_cache.cli import main

    for args, delay in rounds:
        out = io.StringIO()
        barrier.wait(timeout=120)
        time.sleep(delay)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                main.main(args, prog_name="dvfl-cache", standalone_mode=False)
            queue.put((args[1], "ok", out.getvalue()))
        except click.ClickException as e:  # the CLI's one-line errors
            queue.put((args[1], "error", e.format_message()))
        except Exception as e:  # anything else fails the test at once, not at a timeout
            queue.put((args[1], "crash", repr(e)))


def test_identical_extends_started_at_the_same_instant_both_succeed(synth_root, tmp_path):
    """Issue 25, 15: one of two extends started together failed "store is unfinished" (it
    saw the other's grow step done after it had read the store). Rounds on fresh copies of a
    2-view store, the second process starting 0 to 0.05 s after the first (without the grow
    claim, 4 of 6 such rounds failed here)."""
    import multiprocessing as mp
    import shutil

    from test_cache_extend import SHARD, extend_args

    from dvfl_cache.cache.store import CacheReader

    ref = tmp_path / "ref.zarr"
    run_cli([*build_args(synth_root, ref), *SHARD, "--views-per-video", "3"])
    base = tmp_path / "base.zarr"
    run_cli([*build_args(synth_root, base), *SHARD])
    delays = [0.0, 0.0, 0.02, 0.05]
    stores = [tmp_path / f"s{i}.zarr" for i in range(len(delays))]
    for store in stores:
        shutil.copytree(base, store)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_extend_rounds, args=(
        [(extend_args(synth_root, store, 3), delay * k) for store, delay in zip(stores, delays)],
        barrier, queue)) for k in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in range(2 * len(stores))]
    for p in procs:
        p.join(30)
    failed = [r for r in results if r[1] != "ok"]
    assert not failed, failed
    for store in stores:
        outs = [out for where, _, out in results if where == str(store)]
        written = [int(re.search(r"(\d+) shards written by this process", o).group(1))
                   for o in outs]
        assert sum(written) == 2, (store, written)  # shards 3 and 4, each computed once
        assert CacheReader(store).complete
        a, b = store_arrays(store), store_arrays(ref)
        for name in b:
            np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
