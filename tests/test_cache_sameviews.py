"""`build --views-from STORE`: another teacher over exactly STORE's views and mixes; stores over
different views are refused in one line naming the first differing column."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cache_build import build_args, run_cli, store_arrays


def test_views_from_runs_another_teacher_on_the_same_views(synth_root, tmp_path):
    from dvfl_cache.cache.sameviews import VALUE_COLUMNS, check_same_views
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.errors import CacheError

    a, b, c = tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "c.zarr"
    run_cli([*build_args(synth_root, a), "--mixup", "0.8", "--mix-prob", "0.5", "--seed", "3"])
    # Another teacher (wider), and settings that would change the views were they used.
    args = build_args(synth_root, b, "--views-from", str(a), "--seed", "9",
                      "--views-per-video", "5")
    args[args.index("embed_dim=8")] = "embed_dim=16"
    printed = json.loads(run_cli([*args, "--print-config"]).output)  # what it will build
    assert (printed["views_per_video"], printed["sampler"]["seed"]) == (2, 3)
    assert printed["mix"]["mixup"] == 0.8 and not b.exists()
    run_cli(args)
    ra, rb = CacheReader(a), CacheReader(b)
    assert rb.meta.teacher.config != ra.meta.teacher.config
    assert rb.meta.views_per_video == 2 and rb.meta.mix == ra.meta.mix
    xa, xb = store_arrays(a), store_arrays(b)
    columns = [k for k in xa if k not in VALUE_COLUMNS]
    assert "partner_video" in columns and xa["mix_op"].any()
    for k in columns:
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)
    assert not np.allclose(xa["logits"], xb["logits"])  # another teacher's logits
    check_same_views(ra, rb)
    # A store of other views (another seed) is refused, naming the first differing column.
    run_cli([*build_args(synth_root, c), "--mixup", "0.8", "--mix-prob", "0.5"])
    with pytest.raises(CacheError, match=r"not over the same views: column 'frames' at row 0 "
                                         r"differs$"):
        check_same_views(ra, CacheReader(c))
