"""The public API (docs/api.md): `CachedClips` gives exactly what `dvfl-train` feeds its student
for the same rows and epoch (plain, mixed, ensemble, fewer frames / another size), collates with
torch's defaults in worker processes, splits under DistributedSampler, and `replay_view`
re-decodes an item's clip from its recorded view alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_cache_build import build_args, run_cli

STUDENT = dict(frames=2, size=16)  # fewer frames and another size than the teacher's 4 x 32


@pytest.fixture(scope="module")
def caches(synth_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    plain, mixed, other = tmp / "plain.zarr", tmp / "mixed.zarr", tmp / "other.zarr"
    run_cli(build_args(synth_root, plain, "--features"))
    run_cli([*build_args(synth_root, mixed), "--mixup", "0.8", "--cutmix", "1.0",
             "--mix-prob", "0.6", "--seed", "3"])
    args = build_args(synth_root, other, "--views-from", str(mixed))
    args[args.index("embed_dim=8")] = "embed_dim=16"  # another teacher over the same views
    run_cli(args)
    return {"plain": plain, "mixed": mixed, "other": other}


def _trainer_epoch(paths, index, epoch: int, *, frames: int, size: int, mix="mean-logits"):
    """What dvfl-train's loop feeds its students for every row of `epoch` (1-based), in plan
    order: its teacher source, its clip dataset and collate, its input and target code."""
    from dvfl_cache.data.dataset import Cut, collate_clips
    from dvfl_train.teachers import CachedTeacher, EnsembleTeacher, open_cache
    from dvfl_train.train_data import mixed_targets, student_inputs, train_clips

    readers = [open_cache(str(p), index, num_frames=frames, need_features=False) for p in paths]
    if len(readers) > 1:
        teacher = EnsembleTeacher(readers, mix=mix, num_classes=index.num_classes,
                                  view_frames=4)
    else:
        teacher = CachedTeacher(readers[0], num_classes=index.num_classes, view_frames=4)
    plan = teacher.plan(epoch, index)
    clips = train_clips(index, plan, teacher.cuts(Cut("clip", size, frames=frames,
                                                      as_uint8=True)))
    batch = collate_clips([clips[i] for i in range(len(clips))])
    cpu = torch.device("cpu")
    clip, labels = student_inputs(batch, cpu, num_frames=frames, size=size)
    logits, _ = teacher.targets(batch, cpu)
    target = (mixed_targets(batch, cpu, index.num_classes, smoothing=0.0)
              if clips.mixes is not None else None)
    return clip, labels, logits, target, plan


def _all(ds, **loader):
    from torch.utils.data import DataLoader

    return next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False, **loader)))


@pytest.mark.parametrize("kind", ["plain", "mixed", "ensemble"])
def test_items_are_what_dvfl_train_feeds_the_student(caches, synth_root, synth_index, kind):
    from dvfl_cache import CachedClips, open_cache

    paths = ([caches["mixed"], caches["other"]] if kind == "ensemble" else [caches[kind]])
    mix = "mean-probs"
    opened = [open_cache(p) for p in paths]
    ds = CachedClips(opened if kind == "ensemble" else opened[0], root=synth_root,
                     teacher_mix=mix, **STUDENT)
    for epoch in (0, 1, 2):  # two cached views: epoch 2 replays view 0 again
        ds.set_epoch(epoch)
        clip, labels, logits, target, plan = _trainer_epoch(paths, synth_index, epoch + 1,
                                                            mix=mix, **STUDENT)
        got = _all(ds, num_workers=2)  # default collate, in worker processes
        assert got["clip"].shape == (len(ds), 3, 2, 16, 16) and got["clip"].dtype == torch.float32
        torch.testing.assert_close(got["clip"], clip.transpose(1, 2), rtol=0, atol=0)
        torch.testing.assert_close(got["label"], labels, rtol=0, atol=0)
        torch.testing.assert_close(got["teacher_logits"], logits, rtol=0, atol=0)
        onehot = torch.nn.functional.one_hot(labels, 4).float()
        torch.testing.assert_close(got["target"], onehot if target is None else target)
        assert [synth_root / v for v in got["video"]] == [
            synth_root / "UCF-101" / synth_index.videos[v].path for v in plan.videos]
        views = [json.loads(v) for v in got["view"]]
        assert {v["view"] for v in views} == {epoch % 2}
        np.testing.assert_array_equal(got["row"], (epoch % 2) * 8 + plan.videos)
        if kind != "plain":
            lam = got["mix_lambda"]
            assert (lam < 1).any() and (lam == 1).any()  # mixed and unmixed rows (prob 0.6)
            assert sum(v["mix"] is not None for v in views) == int((lam < 1).sum())
            assert not torch.equal(got["target"], onehot)


def test_replay_view_decodes_the_items_clip_from_its_record(caches, synth_root):
    from dvfl_cache import CachedClips, open_cache, replay_view

    ds = CachedClips(open_cache(caches["mixed"]), root=synth_root, epoch=1, **STUDENT)
    seen_mixed = False
    for i in range(len(ds)):
        item = ds[i]
        seen_mixed |= json.loads(item["view"])["mix"] is not None
        clip = replay_view(synth_root / item["video"], item["view"], **STUDENT)
        torch.testing.assert_close(clip, item["clip"], rtol=0, atol=0)
    assert seen_mixed
    # the teacher's own clip (all frames, its size) differs from the student's cut
    full = replay_view(synth_root / item["video"], json.loads(item["view"]), size=32)
    assert full.shape == (3, 4, 32, 32)


def test_meta_is_json_and_features_and_views_subset(caches, synth_root):
    from dvfl_cache import CachedClips, open_cache
    from dvfl_cache.cache.store import CacheReader

    cache = open_cache(caches["plain"])
    meta = json.loads(json.dumps(cache.meta))
    assert meta["views_per_video"] == 2 and meta["num_frames"] == 4
    assert meta["dataset"]["classes"] == cache.classes and meta["mix"] is None
    ds = CachedClips(cache, root=synth_root, features=True, views_subset=1, epoch=1,
                     **STUDENT)
    item = ds[3]
    assert json.loads(item["view"])["view"] == 0  # one view per video: epoch 1 replays view 0
    reader = CacheReader(caches["plain"])
    np.testing.assert_array_equal(item["teacher_features"], reader.read("features", 3, 4)[0])
    np.testing.assert_array_equal(item["teacher_logits"], reader.read("logits", 3, 4)[0])
    with pytest.raises(Exception, match="views_subset 3, the cache has 2"):
        CachedClips(cache, root=synth_root, views_subset=3, **STUDENT)


def test_distributed_sampler_shares_cover_the_epoch_once(caches, synth_root):
    from torch.utils.data import DataLoader, DistributedSampler

    from dvfl_cache import CachedClips, open_cache

    ds = CachedClips(open_cache(caches["plain"]), root=synth_root, **STUDENT)
    rows = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        sampler.set_epoch(0)
        for batch in DataLoader(ds, batch_size=3, sampler=sampler, num_workers=1):
            rows += batch["row"].tolist()
    assert sorted(rows) == list(range(8))


def test_a_video_that_fails_to_decode_is_one_line(caches, synth_root, synth_index, tmp_path):
    from dvfl_cache import CachedClips, open_cache
    from dvfl_cache.errors import DvflError

    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    broken = root / "UCF-101" / synth_index.videos[2].path
    cache = open_cache(caches["plain"])
    ds = CachedClips(cache, root=root, **STUDENT)  # checked while the videos were whole
    broken.write_bytes(b"not a video")
    with pytest.raises(DvflError) as err:
        ds[2]
    assert str(err.value).startswith(f"failed to decode {broken}: ")
    assert "\n" not in str(err.value)
    ds[3]  # the others still decode


def test_a_foreign_root_or_missing_cache_is_refused_in_one_line(caches, synth_root, tmp_path):
    from dvfl_cache import CachedClips, open_cache
    from dvfl_cache.errors import DvflError

    with pytest.raises(DvflError):
        open_cache(tmp_path / "nothing.zarr")
    with pytest.raises(DvflError, match="root= .* or index="):
        CachedClips(open_cache(caches["plain"]), **STUDENT)
    with pytest.raises(DvflError, match="cannot replay 8 of them"):
        CachedClips(open_cache(caches["plain"]), root=synth_root, frames=8, size=16)


def test_kd_loss_is_the_trainers_loss_function():
    import dvfl_train
    import dvfl_train.losses
    import dvfl_train.student
    from dvfl_train import kd_loss

    assert kd_loss is dvfl_train.losses.kd_loss is dvfl_train.student.kd_loss
    assert "kd_loss" in dvfl_train.__all__
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    y = torch.tensor([0, 2, 1])
    hard = kd_loss(s, t, y, alpha=0.3, tau=10.0, label_smoothing=0.1)["loss"]
    soft = kd_loss(s, t, torch.nn.functional.one_hot(y, 4).float(), alpha=0.3, tau=10.0,
                   label_smoothing=0.1)["loss"]
    torch.testing.assert_close(hard, soft)


def test_importing_the_package_roots_stays_light():
    code = ("import sys, dvfl_cache, dvfl_train; "
            "assert {'CachedClips', 'open_cache', 'replay_view'} <= set(dvfl_cache.__all__); "
            "heavy = [m for m in ('torch', 'zarr', 'av') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_packed_zip_serves_the_same_items(caches, synth_root, tmp_path):
    from dvfl_cache import CachedClips, open_cache
    from dvfl_cache.cache.share import pack

    pack(caches["plain"], tmp_path / "c.zip")
    a = CachedClips(open_cache(caches["plain"]), root=synth_root, epoch=1, **STUDENT)
    b = CachedClips(open_cache(tmp_path / "c.zip"), root=synth_root, epoch=1, **STUDENT)
    assert open_cache(tmp_path / "c.zip").meta == open_cache(caches["plain"]).meta
    got, want = _all(b), _all(a)
    for key in ("clip", "teacher_logits", "target", "row"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
