"""Training data plumbing: epoch order and rank shares, replay of cached views, online views,
invalid cached rows, cache compatibility, mixing, shared validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dvfl_cache.data.transforms import to_float
from dvfl_cache.errors import CacheError

TEACHER_OPTS = dict(embed_dim=8, depths=[1, 1, 1, 1])



def _teacher_checkpoint(path: Path) -> Path:
    from dvfl_cache.models import create_model, save_checkpoint

    torch.manual_seed(5)
    save_checkpoint(path, create_model("vfl-nano", num_classes=4, num_frames=4, img_size=32,
                                       **TEACHER_OPTS))
    return path


def _build(index, out: Path, teacher: Path, **kw):
    from dvfl_cache.cache.build import BuildConfig, build_cache

    cfg = BuildConfig(out=str(out), teacher=str(teacher), views_per_video=2, frames=4, size=32,
                      seed=0, dtype="float32", views_per_shard=4, batch_size=3, workers=0,
                      device="cpu", **kw)
    return build_cache(cfg, index)


@pytest.fixture(scope="module")
def cache(synth_index, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_data_cache")
    teacher = _teacher_checkpoint(tmp / "teacher.pt")
    _build(synth_index, tmp / "c.zarr", teacher)
    return tmp / "c.zarr"


def test_epoch_order_depends_on_seed_and_epoch_only():
    from dvfl_train.train_data import epoch_order

    a = epoch_order(3, 1, 50)
    assert sorted(a.tolist()) == list(range(50))
    np.testing.assert_array_equal(a, epoch_order(3, 1, 50))
    assert not np.array_equal(a, epoch_order(3, 2, 50))
    assert not np.array_equal(a, epoch_order(4, 1, 50))


def test_rank_batches_split_every_global_batch_disjointly():
    from dvfl_train.train_data import rank_batches

    order = np.array([7, 3, 0, 1, 4, 2, 8, 6, 5])
    shares = [rank_batches(order, batch_size=4, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]  # same number of steps on every rank
    for step in range(3):
        chunk = order[4 * step:4 * step + 4].tolist()
        parts = [shares[r][step] for r in range(3)]
        assert sorted(sum(parts, [])) == sorted(chunk)
        assert len(set(sum(parts, []))) == len(chunk)
    assert shares[0][0] == [7, 1] and shares[1][0] == [3] and shares[2][0] == [0]  # strided
    assert shares[0][2] == [5] and shares[1][2] == shares[2][2] == []  # short last batch
    assert rank_batches(order, batch_size=4) == [[7, 3, 0, 1], [4, 2, 8, 6], [5]]


def test_cached_plan_replays_the_stored_views_subsampled(synth_index, cache):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data import apply_view, decode_frames, subsample_view, views_from_arrays
    from dvfl_cache.data.dataset import Cut
    from dvfl_train.train_data import plan_epoch, train_clips

    reader = CacheReader(cache)
    plan = plan_epoch(2, synth_index, reader=reader)  # epoch 2 replays view 1
    block = reader.epoch_block(1)
    assert plan.view_number == 1 and plan.invalid == ()
    np.testing.assert_array_equal(plan.videos, np.arange(8))
    assert list(plan.views) == views_from_arrays(block)
    np.testing.assert_array_equal(plan.teacher_logits, block["logits"])
    assert plan_epoch(3, synth_index, reader=reader).view_number == 0  # (3 - 1) mod 2

    ds = train_clips(synth_index, plan, [Cut("clip", 24, frames=2, as_uint8=True)])
    for i in (0, 5):
        stored = plan.views[i]
        student = subsample_view(stored, 2)
        assert student.frames == (stored.frames[0], stored.frames[3])  # first and last of 4
        item = ds[i]
        want = apply_view(decode_frames(synth_index.abspath(i), student.frames), student, 24)
        assert item["error"] is None and item.get("teacher_clip") is None
        assert item["clip"].dtype == torch.uint8  # normalised on the device by as_input
        assert torch.equal(to_float(item["clip"]), want)


def test_online_views_are_the_cached_views(synth_index, cache):
    """The online teacher's view of (video, epoch) is the cached one, pixel for pixel."""
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data import ViewSampler, apply_view, decode_frames, subsample_view
    from dvfl_cache.data.dataset import Cut
    from dvfl_train.train_data import plan_epoch, train_clips

    reader = CacheReader(cache)
    cached = plan_epoch(2, synth_index, reader=reader)
    fresh = plan_epoch(2, synth_index)
    assert fresh.view_number == 1 and all(v is None for v in fresh.views)
    sampler = ViewSampler(mode="train", seed=0, num_frames=4)
    ds = train_clips(synth_index, fresh, [Cut("clip", 24, frames=2, as_uint8=True),
                                          Cut("teacher_clip", 32, as_uint8=True)], sampler=sampler)
    for i in (1, 6):
        view = cached.views[i]
        item = ds[i]
        frames = decode_frames(synth_index.abspath(i), view.frames)
        assert torch.equal(to_float(item["teacher_clip"]), apply_view(frames, view, 32))
        sub = subsample_view(view, 2)
        assert torch.equal(to_float(item["clip"]), apply_view(frames[[0, 3]], sub, 24))


def test_invalid_cached_rows_are_skipped_and_counted(synth_root, tmp_path):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.readers import build_index
    from dvfl_train.train_data import plan_epoch

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    index = build_index("ucf101", root, split=1, subset="train")
    Path(index.abspath(2)).write_bytes(b"not a video")
    _build(index, tmp_path / "c.zarr", _teacher_checkpoint(tmp_path / "t.pt"), max_failed=0.2)
    plan = plan_epoch(1, index, reader=CacheReader(tmp_path / "c.zarr"))
    assert plan.invalid == (2,)
    assert plan.videos.tolist() == [0, 1, 3, 4, 5, 6, 7]
    assert [v.video for v in plan.views] == [0, 1, 3, 4, 5, 6, 7]


def test_open_cache_refuses_what_does_not_fit(synth_index, synth_test_index, cache):
    from dvfl_train.teachers import open_cache

    open_cache(str(cache), synth_index, num_frames=4, need_features=False)
    with pytest.raises(CacheError, match=r"subset 'train' \(run expects 'test'\)"):
        open_cache(str(cache), synth_test_index, num_frames=4, need_features=False)
    with pytest.raises(CacheError, match="saw 4 frames"):
        open_cache(str(cache), synth_index, num_frames=8, need_features=False)
    with pytest.raises(CacheError, match="--features"):
        open_cache(str(cache), synth_index, num_frames=4, need_features=True)


def test_mixup_and_cutmix_targets_match_the_pixels():
    from dvfl_train.train_data import mix_batch

    torch.manual_seed(0)
    x = torch.rand(4, 2, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    same, onehot = mix_batch(x, y, 4, mixup=0, cutmix=0, seed=0, epoch=1, step=0)
    assert same is x and torch.equal(onehot, torch.eye(4))

    mixed, t = mix_batch(x, y, 4, mixup=0.4, cutmix=0, seed=0, epoch=1, step=0)
    lam = float(t[0, 0])
    assert 0 < lam < 1 and torch.allclose(t.sum(1), torch.ones(4))
    assert torch.allclose(t[0, 3], torch.tensor(1 - lam))  # mixed with the reversed batch
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    again, t2 = mix_batch(x, y, 4, mixup=0.4, cutmix=0, seed=0, epoch=1, step=0)
    assert torch.equal(again, mixed) and torch.equal(t2, t)
    _, t3 = mix_batch(x, y, 4, mixup=0.4, cutmix=0, seed=0, epoch=1, step=1)
    assert not torch.equal(t3, t)

    for step in range(5):
        cut, tc = mix_batch(x, y, 4, mixup=0, cutmix=1.0, seed=1, epoch=2, step=step)
        from_other = (cut != x).any(dim=(1, 2)).float()  # (B, H, W) pixels taken from the flip
        kept = 1 - from_other[0].mean()
        assert torch.allclose(tc[0, 0], kept.to(tc.dtype), atol=1e-6)
        assert torch.allclose(tc.sum(1), torch.ones(4))


def test_val_subset_is_evenly_spaced(synth_root):
    from dvfl_train.config import FitConfig
    from dvfl_train.train_data import val_index

    cfg = FitConfig(dataset="ucf101", data_root=str(synth_root), out_dir="x", val_subset=3)
    full = val_index(FitConfig(dataset="ucf101", data_root=str(synth_root), out_dir="x"))
    sub = val_index(cfg)
    assert full.subset == "test" and len(full) == 8
    assert sub.videos == tuple(full.videos[i] for i in (0, 2, 5))


def test_validation_of_many_students_equals_evaluate(synth_test_index):
    """The trainer validates a sweep's students with one `evaluate_many` pass."""
    from dvfl_cache.models import create_model
    from dvfl_train.evaluate import TestView, evaluate, evaluate_many

    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        nets.append(create_model("vfl-nano", num_classes=4, num_frames=2, **TEACHER_OPTS))
    shared = evaluate_many(nets, synth_test_index, TestView(num_frames=2, size=32), batch_size=3)
    for net, (report, failed) in zip(nets, ((r.report, r.num_failed) for r in shared)):
        alone = evaluate(net, synth_test_index, TestView(num_frames=2, size=32),
                         batch_size=3).report
        assert failed == 0 and net.training
        assert (report.top1, report.top5, report.count) == (alone.top1, alone.top5, alone.count)
        np.testing.assert_array_equal(report.confusion, alone.confusion)


def test_teacher_sources_give_each_batch_its_targets(synth_index, synth_root, cache, tmp_path):
    """Cached: the block rows of the batch's videos; online: the teacher on the teacher cut of
    the same decode; none: no targets. Each gives blank targets for a rank's empty share."""
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.dataset import Cut, collate_clips
    from dvfl_cache.data.views import ViewSampler
    from dvfl_cache.models import model_from_checkpoint
    from dvfl_train.teachers import CachedTeacher, NoTeacher, OnlineTeacher
    from dvfl_train.train_data import as_input, train_clips

    cpu = torch.device("cpu")
    student = Cut("clip", 24, frames=2, as_uint8=True)
    cached = CachedTeacher(CacheReader(cache), num_classes=4, view_frames=4)
    plan = cached.plan(2, synth_index)
    batch = collate_clips([train_clips(synth_index, plan, cached.cuts(student))[i]
                           for i in (5, 2)])
    logits, feats = cached.targets(batch, cpu)
    block = CacheReader(cache).epoch_block(1)["logits"]
    assert torch.equal(logits, torch.from_numpy(block[[5, 2]])) and feats is None
    assert cached.cuts(student) == (student,) and cached.sampler is None

    teacher, _ = model_from_checkpoint(_teacher_checkpoint(tmp_path / "t.pt"))
    teacher.eval()
    sampler = ViewSampler(mode="train", seed=0, num_frames=4)
    online = OnlineTeacher(teacher, sampler=sampler, num_classes=4, need_features=True)
    cuts = online.cuts(student)
    assert [c.name for c in cuts] == ["clip", "teacher_clip"] and cuts[1].size == 32
    fresh = online.plan(2, synth_index)
    batch = collate_clips([train_clips(synth_index, fresh, cuts, sampler=sampler)[i]
                           for i in (5, 2)])
    logits, feats = online.targets(batch, cpu)
    with torch.no_grad():
        want = teacher.forward_features(as_input(batch["teacher_clip"], cpu))
    torch.testing.assert_close(feats, want, rtol=0, atol=0)
    torch.testing.assert_close(logits, teacher.forward_head(want), rtol=0, atol=0)
    # the online teacher saw the cached teacher's views: same logits up to float rounding
    torch.testing.assert_close(logits, torch.from_numpy(block[[5, 2]]), rtol=1e-4, atol=1e-4)

    none = NoTeacher(num_classes=4, view_frames=2, sampler=sampler)
    assert none.targets(batch, cpu) == (None, None)
    empty = {**batch, "clip": None}
    assert cached.targets(empty, cpu)[0].shape == (1, 4)
    blank_logits, blank_feats = online.targets(empty, cpu)
    assert blank_logits.shape == (1, 4) and blank_feats.shape == (1, teacher.num_features)
