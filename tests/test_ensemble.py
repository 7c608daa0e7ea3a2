"""Distilling from two caches over the same views: closed-form targets, the refusal line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_cache_views_subset import _store


def test_combine_logits_closed_form_for_two_teachers():
    from dvfl_train.ensemble import combine_logits

    a = np.array([[0.0, np.log(3.0)]], np.float32)  # softmax (1/4, 3/4)
    b = np.array([[np.log(3.0), 0.0]], np.float32)  # softmax (3/4, 1/4)
    np.testing.assert_allclose(combine_logits([a, b], "mean-logits"),
                               [[np.log(3.0) / 2, np.log(3.0) / 2]], rtol=1e-6)
    # mean of the probabilities is (1/2, 1/2): log(1/2) each
    np.testing.assert_allclose(combine_logits([a, b], "mean-probs"),
                               [[np.log(0.5), np.log(0.5)]], rtol=1e-6)
    c = np.array([[2.0, 0.0]], np.float32)
    p = (np.array([1, 3]) / 4 + np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()) / 2
    np.testing.assert_allclose(combine_logits([a, c], "mean-probs"), [np.log(p)], rtol=1e-6)


@pytest.mark.parametrize("mix", ["mean-logits", "mean-probs"])
def test_fit_config_with_two_caches_serves_the_ensemble_target(tmp_path, mix):
    from dvfl_cache.cache.store import CacheWriter
    from dvfl_train.config import FitConfig
    from dvfl_train.ensemble import combine_logits
    from dvfl_train.teachers import CachedTeacher

    meta = _store(tmp_path / "a.zarr", views=2)
    b = tmp_path / "b.zarr"
    _store(b, views=2)
    w = CacheWriter(b, meta)
    for s in range(meta.num_shards):  # teacher b: other logits, the same views
        arr = w.empty_shard(s, labels=np.arange(64, dtype=np.int32) % 5)
        arr["logits"][:] = -np.arange(len(arr["logits"]))[:, None] * np.arange(5) / 7 + s
        arr["crop"][:] = (0, 0, 1, 1)
        arr["valid"][:] = 1
        w.write_shard(s, arr, [])
    cfg = FitConfig(dataset="ucf101", data_root=str(tmp_path), out_dir=str(tmp_path / "r"),
                    cache=(str(tmp_path / "a.zarr"), str(b)), teacher_mix=mix)
    cfg.validate()
    from dvfl_cache.cache.store import CacheReader
    from dvfl_train.teachers import EnsembleTeacher

    t = EnsembleTeacher([CacheReader(c) for c in cfg.cache], mix=cfg.teacher_mix,
                        num_classes=5, view_frames=4)
    assert isinstance(t, CachedTeacher)
    plan = t.plan(2, None)  # view 1
    la = CacheReader(cfg.cache[0]).epoch_block(1, names=["logits"])["logits"]
    lb = CacheReader(b).epoch_block(1, names=["logits"])["logits"]
    want = combine_logits([la, lb], mix)
    np.testing.assert_array_equal(plan.teacher_logits, want)
    got, _ = t.targets({"clip": torch.zeros(2), "video": torch.tensor([3, 7])}, "cpu")
    np.testing.assert_array_equal(got.numpy(), want[[3, 7]])


def test_caches_over_other_views_are_refused_in_one_line(tmp_path):
    from dvfl_cache.cache.store import CacheReader, CacheWriter
    from dvfl_cache.errors import CacheError
    from dvfl_train.teachers import EnsembleTeacher

    meta = _store(tmp_path / "a.zarr", views=2)
    b = tmp_path / "b.zarr"
    _store(b, views=2)
    w = CacheWriter(b, meta)
    arr = w.empty_shard(1, labels=np.arange(64, dtype=np.int32) % 5)
    arr["crop"][:] = (0, 0, 1, 1)
    arr["crop"][5] = (0, 0, 0.5, 1)  # row 37
    arr["valid"][:] = 1
    w.write_shard(1, arr, [])
    with pytest.raises(CacheError) as e:
        EnsembleTeacher([CacheReader(tmp_path / "a.zarr"), CacheReader(b)], mix="mean-logits",
                        num_classes=5, view_frames=4)
    assert str(e.value).endswith("not over the same views: column 'crop' at row 37 differs")
    assert "\n" not in str(e.value)


def test_cli_fit_distils_from_two_caches(synth_root, tmp_path, caplog):
    """`fit --cache A --cache B --teacher-mix mean-probs`: both caches reach the teacher source
    and the mix is the one asked for (recorded in config.json, named in the log)."""
    import json
    import logging

    from click.testing import CliRunner

    from dvfl_cache.cli import main as cache_cli
    from dvfl_train.cli import main as train_cli
    from test_cache_build import build_args

    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    # mixed rows (mixup): the ensemble replays the first cache's stored mixes, equal in both
    assert CliRunner().invoke(cache_cli, build_args(synth_root, a, "--mixup", "0.8")
                              ).exit_code == 0
    args = build_args(synth_root, b, "--views-from", str(a))
    args[args.index("embed_dim=8")] = "embed_dim=16"
    assert CliRunner().invoke(cache_cli, args).exit_code == 0
    fit = ["fit", "--dataset", "ucf101", "--root", str(synth_root), "--cache", str(a),
           "--cache", str(b), "--teacher-mix", "mean-probs", "--frames", "2", "--size", "32",
           "--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1", "--batch-size", "4",
           "--workers", "0", "--device", "cpu", "--epochs", "1", "--warmup-epochs", "0",
           "--out", str(tmp_path / "run")]
    with caplog.at_level(logging.INFO, logger="dvfl_train.teachers"):
        res = CliRunner().invoke(train_cli, fit, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["cache"] == [str(a), str(b)] and config["teacher_mix"] == "mean-probs"
    assert f"teacher logits: mean-probs of {a} (vfl-nano), {b} (vfl-nano)" in caplog.text
