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
