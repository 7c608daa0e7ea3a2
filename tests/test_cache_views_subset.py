"""`fit --views-subset N` reads only the first N views' rows; a run pins the N it started with
so a resume after `dvfl-cache extend` replays the same views (cache_views.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cache_share import CountingRangeHandler, serve


def _store(path, views: int):
    from dvfl_cache.cache.format import CacheMeta, DatasetInfo, SamplerInfo, TeacherInfo
    from dvfl_cache.cache.store import CacheWriter

    C, V = 5, 64
    meta = CacheMeta(
        teacher=TeacherInfo(name="vfn-base", config={}, weights_sha256=None),
        dataset=DatasetInfo(kind="synth", split=1, subset="train",
                            index_digest="sha256:" + "2" * 64,
                            classes=tuple(f"c{i}" for i in range(C))),
        sampler=SamplerInfo(name="segment", params={}, seed=0),
        num_videos=V, views_per_video=views, num_frames=4, dtype="float16", feature_dim=None,
        views_per_shard=32)
    w = CacheWriter.create(path, meta)
    for s in range(meta.num_shards):
        a = w.empty_shard(s, labels=np.arange(V, dtype=np.int32) % C)
        a["logits"][:] = np.arange(len(a["logits"]))[:, None] + 1000 * s
        a["crop"][:] = (0, 0, 1, 1)
        a["valid"][:] = 1
        w.write_shard(s, a, [])
    return meta


def test_views_subset_reads_only_its_rows_over_http(tmp_path):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_train.train_data import plan_epoch

    _store(tmp_path / "c.zarr", views=3)  # view r is shards 2r, 2r+1
    CountingRangeHandler.sent = []
    with serve(tmp_path, CountingRangeHandler) as base:
        reader = CacheReader(f"{base}/c.zarr")
        seen = []
        for epoch in range(1, 5):
            plan = plan_epoch(epoch, None, reader=reader, views=2)
            seen.append(plan.view_number)
        paths = {p for p, _, _ in CountingRangeHandler.sent}
        CountingRangeHandler.sent = []
        plan_epoch(3, None, reader=reader)  # all views: epoch 3 is view 2
        later = {p for p, _, _ in CountingRangeHandler.sent}
    assert seen == [0, 1, 0, 1]
    data = {p for p in paths if "/logits/c/" in p}
    assert data == {f"/c.zarr/logits/c/{s}/0" for s in range(4)}  # never view 2's shards 4, 5
    assert {p for p in later if "/logits/c/" in p} == {"/c.zarr/logits/c/4/0",
                                                       "/c.zarr/logits/c/5/0"}
    # the rows are view 1's (shards 2 and 3), not a neighbour's
    assert plan_epoch(2, None, reader=CacheReader(tmp_path / "c.zarr"),
                      views=2).teacher_logits[0, 0] == 2000


def _cfg(tmp_path, **kw):
    from dvfl_train.config import FitConfig

    return FitConfig(dataset="ucf101", data_root=str(tmp_path), out_dir=str(tmp_path / "run"),
                     cache=str(tmp_path / "c.zarr"), **kw)


def test_a_run_pins_its_views_and_resume_keeps_them(tmp_path):
    from dvfl_train.cache_views import pin_cache_views
    from dvfl_train.config import ConfigError

    cfg = _cfg(tmp_path)
    _, configs, views = pin_cache_views(cfg, [cfg], 2, resume=False)
    assert views == 2 and configs[0].views_subset == 2  # written to config.json by the run
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(configs[0].to_dict()))
    # The cache was extended to 5 views: the resumed run keeps replaying 2.
    assert pin_cache_views(cfg, [cfg], 5, resume=True)[2] == 2
    other = _cfg(tmp_path, views_subset=3)
    with pytest.raises(ConfigError, match="trained on 2 views per video; cannot resume it "
                                          "with --views-subset 3"):
        pin_cache_views(other, [other], 5, resume=True)
    with pytest.raises(ConfigError, match="4 views per video, but the cache .* has 3"):
        big = _cfg(tmp_path, views_subset=4)
        pin_cache_views(big, [big], 3, resume=False)
    # A run from before views were pinned resumes with all of the cache's (as it did).
    old = configs[0].to_dict()
    del old["views_subset"]
    (run / "config.json").write_text(json.dumps(old))
    assert pin_cache_views(cfg, [cfg], 5, resume=True)[2] is None
    # ... and so after it was resumed once (config.json rewritten with views_subset null)
    (run / "config.json").write_text(json.dumps({**old, "views_subset": None}))
    assert pin_cache_views(cfg, [cfg], 5, resume=True)[2] is None


def test_views_subset_needs_a_cache():
    from dvfl_train.config import ConfigError, FitConfig

    with pytest.raises(ConfigError, match="views_subset=2 needs a cache"):
        FitConfig(dataset="ucf101", data_root="x", out_dir="x",
                  views_subset=2).validate()


def test_fit_resume_after_extend_keeps_the_runs_views(synth_root, tmp_path):
    """CLI: a run on a 2-view cache, the cache extended to 3, `fit --resume` keeps 2 (recorded
    in config.json); resuming with another --views-subset is one line, no traceback."""
    from click.testing import CliRunner

    from dvfl_cache.cli import main as cache_cli
    from dvfl_train.cli import main as train_cli
    from test_cache_build import build_args
    from test_cache_extend import extend_args

    cache = tmp_path / "c.zarr"
    res = CliRunner().invoke(cache_cli, build_args(synth_root, cache, "--views-per-shard", "5"))
    assert res.exit_code == 0, res.output
    fit = ["fit", "--dataset", "ucf101", "--root", str(synth_root), "--cache", str(cache),
           "--frames", "2", "--size", "32", "--model-opt", "embed_dim=8", "--model-opt",
           "depths=1,1,1,1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
           "--warmup-epochs", "0", "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(train_cli, [*fit, "--epochs", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = tmp_path / "run" / "config.json"
    assert json.loads(config.read_text())["views_subset"] == 2
    res = CliRunner().invoke(cache_cli, extend_args(synth_root, cache, 3))
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(train_cli, [*fit, "--epochs", "1", "--resume", "--views-subset",
                                         "3"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "trained on 2 views per video; cannot resume it with --views-subset 3" in res.output
    # (the same --epochs: a resume may not change the schedule; the config check still runs)
    res = CliRunner().invoke(train_cli, [*fit, "--epochs", "1", "--resume"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(config.read_text())["views_subset"] == 2
