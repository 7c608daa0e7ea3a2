"""Holding out whole groups of a training index: disjoint, deterministic, stratified, digested."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dvfl_cache.data.holdout import HELDOUT_SUBSET, hold_out, video_group
from dvfl_cache.data.index import (DatasetIndex, VideoEntry, index_digest, load_index,
                                   save_index)
from dvfl_cache.errors import DvflError, IndexFormatError


def _ucf(kind="ucf101", groups=(8, 9, 10, 11, 12, 13, 14, 15, 16, 17), clips=4,
         classes=("Archery", "Bowling", "Diving")) -> DatasetIndex:
    videos = []
    for label, cls in enumerate(classes):
        for g in groups:
            for c in range(1, clips + 1):
                stem = f"v_{cls}_g{g:02d}_c{c:02d}"
                videos.append(VideoEntry(path=f"{cls}/{stem}.avi", label=label, video_id=stem))
    return DatasetIndex(kind=kind, split=1, subset="train", classes=tuple(classes),
                        videos=tuple(videos), root="/data")


def _groups(index: DatasetIndex) -> set[str]:
    return {video_group(index.kind, v, index.classes[v.label]) for v in index.videos}


@pytest.mark.parametrize("kind", ["ucf101", "ucf50"])
def test_groups_are_disjoint_and_the_parts_partition_the_index(kind):
    index = _ucf(kind)
    train, val = hold_out(index, 0.2)
    assert _groups(train).isdisjoint(_groups(val))
    assert sorted(train.videos + val.videos, key=index.videos.index) == list(index.videos)
    # both parts keep the index order
    assert list(train.videos) == [v for v in index.videos if v in set(train.videos)]
    assert (train.subset, val.subset) == ("train", HELDOUT_SUBSET)
    assert (val.kind, val.split, val.classes, val.root) == (kind, 1, index.classes, "/data")


def test_fraction_is_met_per_class_in_whole_groups():
    index = _ucf(groups=tuple(range(8, 26)), clips=5)  # 18 groups x 5 clips = 90 per class
    for fraction in (0.1, 0.2, 0.5):
        train, val = hold_out(index, fraction)
        for label in range(3):
            held = sum(v.label == label for v in val.videos)
            assert held % 5 == 0  # whole groups only
            assert abs(held - fraction * 90) <= 2.5  # within half a group of the target
        assert len(train) + len(val) == len(index)


def test_deterministic_and_seeded():
    index = _ucf()
    a, b = hold_out(index, 0.3, seed=0), hold_out(index, 0.3, seed=0)
    assert a == b and a[0].digest == b[0].digest
    others = {hold_out(index, 0.3, seed=s)[1].videos for s in range(1, 6)}
    assert any(o != a[1].videos for o in others)
    # independent of the order of the videos in the index
    shuffled = index.with_videos(tuple(reversed(index.videos)))
    assert set(hold_out(shuffled, 0.3)[1].videos) == set(a[1].videos)


def test_train_digest_covers_the_reduced_list(tmp_path):
    index = _ucf()
    train, val = hold_out(index, 0.2)
    assert train.digest == index_digest(kind="ucf101", split=1, subset="train",
                                        classes=index.classes, videos=train.videos)
    assert len({index.digest, train.digest, val.digest}) == 3
    save_index(train, tmp_path / "t.json")
    assert load_index(tmp_path / "t.json").digest == train.digest


def test_a_class_never_loses_its_last_training_group():
    index = _ucf(groups=(8, 9), clips=3)
    train, val = hold_out(index, 0.9)
    assert {v.label for v in train.videos} == {0, 1, 2}
    assert {v.label for v in val.videos} == {0, 1, 2}


def test_hmdb51_source_videos_are_one_group_across_classes():
    names = [("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_0"),
             ("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_1"),
             ("chew", "April_09_chew_h_nm_np1_fr_med_0"),
             ("chew", "Other_film_chew_h_cm_np2_le_bad_3")]
    classes = ("brush_hair", "chew")
    videos = [VideoEntry(path=f"{c}/{n}.avi", label=classes.index(c), video_id=n)
              for c, n in names]
    assert [video_group("hmdb51", v, classes[v.label]) for v in videos] == [
        "April_09", "April_09", "April_09", "Other_film"]
    bad = VideoEntry(path="chew/clip.avi", label=1, video_id="clip")
    with pytest.raises(IndexFormatError, match="chew/clip.avi: not an HMDB51 clip name"):
        video_group("hmdb51", bad, "chew")


def test_other_kinds_group_by_what_they_know():
    k = VideoEntry(path="train/abc_def_000010_000020.mp4", label=0,
                   video_id="abc_def_000010_000020")
    assert video_group("kinetics400", k, "x") == "abc_def"
    s = VideoEntry(path="123.webm", label=0, video_id="123")
    assert video_group("ssv2", s, "x") == "123"


@pytest.mark.parametrize("fraction, index_kw, match", [
    (0.0, {}, "between 0 and 1"),
    (1.0, {}, "between 0 and 1"),
    (0.2, {"subset": "test"}, "training subset only"),
    (0.01, {}, "smaller than every group"),
])
def test_bad_requests_are_one_clear_error(fraction, index_kw, match):
    from dataclasses import replace

    index = replace(_ucf(groups=(8, 9, 10), clips=4), **index_kw)
    with pytest.raises(DvflError, match=match):
        hold_out(index, fraction)


def test_unnamed_ucf_video_is_refused():
    index = _ucf().with_videos((VideoEntry(path="Archery/clip.avi", label=0, video_id="clip"),))
    with pytest.raises(IndexFormatError, match="Archery/clip.avi: name does not end in _gNN_cNN"):
        hold_out(index, 0.5)


def test_cli_index_hold_out(synth_root, tmp_path):
    from dvfl_cache.cli import main

    out, held = tmp_path / "train.json", tmp_path / "held.json"
    args = ["index", "--dataset", "ucf101", "--root", str(synth_root), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--hold-out", "0.5", "--hold-out-out", str(held)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    train, val = load_index(out), load_index(held)
    assert (len(train), len(val)) == (4, 4)  # 2 groups per class, one held out of each
    assert _groups(train).isdisjoint(_groups(val))
    assert train.digest in result.output and val.digest in result.output
    assert json.loads(held.read_text())["subset"] == HELDOUT_SUBSET
    # --hold-out-seed reaches the split: a seed that holds out other groups does so here too
    from dvfl_cache.data.readers import build_index

    full = build_index("ucf101", synth_root, split=1, subset="train")
    seed = next(s for s in range(1, 50) if hold_out(full, 0.5, seed=s)[1] != val)
    CliRunner().invoke(main, [*args, "--hold-out", "0.5", "--hold-out-out", str(held),
                              "--hold-out-seed", str(seed)], catch_exceptions=False)
    assert load_index(held).videos == hold_out(full, 0.5, seed=seed)[1].videos != val.videos
    # without --hold-out the index is whole
    assert CliRunner().invoke(main, args).exit_code == 0 and len(load_index(out)) == 8
    lonely = CliRunner().invoke(main, [*args, "--hold-out", "0.5"])
    assert lonely.exit_code == 2 and "go together" in lonely.output
    wrong = CliRunner().invoke(main, [*args, "--subset", "test", "--hold-out", "0.5",
                                      "--hold-out-out", str(held)])
    assert wrong.exit_code == 1 and "training subset only" in wrong.output
