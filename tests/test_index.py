"""Readers on tiny fake annotation trees (empty video files), index JSON, digest."""

from __future__ import annotations

import json

import pytest

from dvfl_cache.data.index import (DatasetIndex, VideoEntry, index_digest, load_index,
                                   save_index)
from dvfl_cache.data.readers import build_index
from dvfl_cache.errors import IndexFormatError


def touch(path, data: bytes = b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


# ------------------------------------------------------------------ UCF101


@pytest.fixture
def ucf101(tmp_path):
    """Official layout; class 2 is `HandstandPushups` on disk and `HandStandPushups` in lists."""
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    touch(lists / "classInd.txt", crlf("1 ApplyEyeMakeup", "2 HandstandPushups", "3 YoYo"))
    for name in ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                 "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                 "HandstandPushups/v_HandStandPushups_g01_c02.avi",
                 "YoYo/v_YoYo_g09_c01.mp4", "YoYo/v_YoYo_g02_c01.avi"]:
        touch(root / "UCF-101" / name)
    touch(lists / "trainlist01.txt", crlf("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                                          "HandStandPushups/v_HandStandPushups_g08_c01.avi 2",
                                          "YoYo/v_YoYo_g09_c01.mp4 3"))
    touch(lists / "testlist01.txt", crlf("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                                         "HandStandPushups/v_HandStandPushups_g01_c02.avi",
                                         "YoYo/v_YoYo_g02_c01.avi", ""))
    return root


def test_ucf101_train_and_test(ucf101):
    train = build_index("ucf101", ucf101, split=1, subset="train")
    assert train.classes == ("ApplyEyeMakeup", "HandstandPushups", "YoYo")
    assert [(v.path, v.label, v.video_id) for v in train.videos] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0, "v_ApplyEyeMakeup_g08_c01"),
        ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 1, "v_HandStandPushups_g08_c01"),
        ("YoYo/v_YoYo_g09_c01.mp4", 2, "v_YoYo_g09_c01")]
    assert train.root == str((ucf101 / "UCF-101").resolve())
    assert train.abspath(1).endswith("UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi")
    test = build_index("ucf101", ucf101, split=1, subset="test")
    assert [v.label for v in test.videos] == [0, 1, 2]
    assert test.videos[1].path == "HandstandPushups/v_HandStandPushups_g01_c02.avi"
    assert (train.kind, train.split, train.subset) == ("ucf101", 1, "train")


def test_ucf101_mmaction_layout_and_overrides(tmp_path, ucf101):
    mm = tmp_path / "data" / "ucf101"
    (ucf101 / "UCF-101").rename(tmp_path / "videos_elsewhere")
    (ucf101 / "ucfTrainTestlist").rename(tmp_path / "ann")
    with pytest.raises(IndexFormatError, match="--annotations"):
        build_index("ucf101", ucf101)
    idx = build_index("ucf101", ucf101, videos_dir=tmp_path / "videos_elsewhere",
                      annotations=tmp_path / "ann")
    assert len(idx) == 3
    (tmp_path / "videos_elsewhere").rename(touch(mm / "x").parent / "videos")
    (tmp_path / "ann").rename(mm / "annotations")
    assert build_index("ucf101", mm).digest == idx.digest  # digest ignores the root


def test_ucf101_missing_split_file_names_it(ucf101):
    with pytest.raises(IndexFormatError, match=r"trainlist02\.txt: split file .* not found"):
        build_index("ucf101", ucf101, split=2)
    with pytest.raises(IndexFormatError, match="splits 1..3"):
        build_index("ucf101", ucf101, split=4)
    with pytest.raises(IndexFormatError, match="subsets train, test"):
        build_index("ucf101", ucf101, subset="val")


def test_ucf101_malformed_lines_name_file_and_line(ucf101):
    lists = ucf101 / "ucfTrainTestlist"
    touch(lists / "trainlist01.txt", crlf("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                                          "YoYo/v_YoYo_g09_c01.mp4 three"))
    with pytest.raises(IndexFormatError, match=r"trainlist01\.txt:2: label should be an "
                                               r"integer, found 'three'"):
        build_index("ucf101", ucf101)
    touch(lists / "trainlist01.txt", crlf("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                                          "", "YoYo/v_YoYo_g09_c01.mp4 1"))
    with pytest.raises(IndexFormatError, match=r"trainlist01\.txt:3: label 1 is "
                                               r"ApplyEyeMakeup but .* folder 'YoYo'"):
        build_index("ucf101", ucf101)
    touch(lists / "classInd.txt", crlf("1 ApplyEyeMakeup", "3 YoYo"))
    with pytest.raises(IndexFormatError, match=r"classInd\.txt: class numbers should run"):
        build_index("ucf101", ucf101)


def test_ucf101_missing_videos_are_reported(ucf101, caplog):
    (ucf101 / "UCF-101" / "YoYo" / "v_YoYo_g09_c01.mp4").unlink()
    idx = build_index("ucf101", ucf101)
    assert len(idx) == 2
    assert idx.skipped == (("YoYo/v_YoYo_g09_c01.mp4", "missing"),)
    assert "1 annotated videos left out" in caplog.text


# ------------------------------------------------------------------ HMDB51


@pytest.fixture
def hmdb(tmp_path):
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    vids = {"brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
                           "Blonde_being_brushed_(a)_brush_hair_f_nm_np2_ri_med_1.avi",
                           "unused_brush_hair_u_nm_np1_fr_goo_0.avi"],
            "cartwheel": ["(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi",
                          "Cartwheel_!!_cartwheel_f_cm_np1_ri_bad_1.avi"]}
    for cls, names in vids.items():
        for n in names:
            touch(root / "hmdb51_org" / cls / n)
    # trailing spaces, as in the official files
    touch(splits / "brush_hair_test_split1.txt",
          f"{vids['brush_hair'][0]} 1 \n{vids['brush_hair'][1]} 2 \n"
          f"{vids['brush_hair'][2]} 0 \n".encode())
    touch(splits / "cartwheel_test_split1.txt",
          f"{vids['cartwheel'][0]} 1 \n{vids['cartwheel'][1]} 2 \n".encode())
    return root


def test_hmdb51_odd_names_and_flags(hmdb):
    train = build_index("hmdb51", hmdb, split=1, subset="train")
    assert train.classes == ("brush_hair", "cartwheel")
    assert [(v.path, v.label) for v in train.videos] == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
        ("cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi", 1)]
    test = build_index("hmdb51", hmdb, split=1, subset="test")
    assert [v.video_id for v in test.videos] == [
        "Blonde_being_brushed_(a)_brush_hair_f_nm_np2_ri_med_1",
        "Cartwheel_!!_cartwheel_f_cm_np1_ri_bad_1"]


def test_hmdb51_errors(hmdb):
    with pytest.raises(IndexFormatError, match=r"_test_split2\.txt"):
        build_index("hmdb51", hmdb, split=2)
    touch(hmdb / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt",
          b"a.avi 1\nb.avi 3\n")
    with pytest.raises(IndexFormatError, match=r"cartwheel_test_split1\.txt:2: expected "
                                               r"'<video> <0\|1\|2>', found 'b.avi 3'"):
        build_index("hmdb51", hmdb)


# ------------------------------------------------------------------ UCF50


def test_ucf50_leave_one_group_out(tmp_path):
    root = tmp_path / "u50"
    for cls in ("BaseballPitch", "Basketball"):
        for g in (1, 2, 3, 25):
            for c in (1, 2):
                touch(root / "UCF50" / cls / f"v_{cls}_g{g:02d}_c{c:02d}.avi")
    for split in (1, 2, 25):
        train = build_index("ucf50", root, split=split, subset="train")
        test = build_index("ucf50", root, split=split, subset="test")
        train_groups = {v.video_id.split("_g")[1][:2] for v in train.videos}
        test_groups = {v.video_id.split("_g")[1][:2] for v in test.videos}
        assert test_groups == {f"{split:02d}"} and not train_groups & test_groups
        assert len(train) + len(test) == 16 and len(test) == 4
        assert train.classes == ("BaseballPitch", "Basketball")
    with pytest.raises(IndexFormatError, match="splits 1..25"):
        build_index("ucf50", root, split=26)
    touch(root / "UCF50" / "Basketball" / "oops.avi")
    with pytest.raises(IndexFormatError, match=r"oops\.avi: name does not end in _gNN_cNN"):
        build_index("ucf50", root)


# ------------------------------------------------------------------ Kinetics-400


@pytest.fixture
def k400(tmp_path):
    root = tmp_path / "k400"
    touch(root / "annotations" / "train.csv", (
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,aaa,10,20,train,0\n"
        "\"passing American football (in game)\",bbb,0,10,train,0\n"
        "\"passing American football (not in game)\",ccc,5,15,train,0\n"
        "abseiling,gone,0,10,train,0\n").encode())
    touch(root / "annotations" / "val.csv", (
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "zumba,zzz,1,11,val,0\n").encode())
    touch(root / "train" / "abseiling" / "aaa_000010_000020.mp4")
    touch(root / "train" / "passing American football (in game)" / "bbb_000000_000010.mp4")
    touch(root / "train" / "ccc_000005_000015.mp4")  # flat beside label folders
    touch(root / "val" / "zzz_000001_000011.mp4")
    return root


def test_kinetics_quoted_labels_and_missing_files(k400, caplog):
    idx = build_index("kinetics400", k400, subset="train")
    assert idx.classes == ("abseiling", "passing American football (in game)",
                           "passing American football (not in game)", "zumba")
    assert [(v.path, v.label, v.video_id) for v in idx.videos] == [
        ("abseiling/aaa_000010_000020.mp4", 0, "aaa_000010_000020"),
        ("passing American football (in game)/bbb_000000_000010.mp4", 1, "bbb_000000_000010"),
        ("ccc_000005_000015.mp4", 2, "ccc_000005_000015")]
    assert idx.skipped == (("gone_000000_000010", "missing"),)
    assert "gone_000000_000010 (missing)" in caplog.text
    val = build_index("kinetics400", k400, subset="val")
    assert val.classes == idx.classes and val.videos[0].label == 3


def test_kinetics_bad_csv(k400):
    touch(k400 / "annotations" / "train.csv",
          b"label,youtube_id,time_start,time_end\nabseiling,aaa,ten,20\n")
    with pytest.raises(IndexFormatError, match=r"train\.csv:2: time_start/time_end"):
        build_index("kinetics400", k400)
    touch(k400 / "annotations" / "train.csv", b"label,youtube_id,start\n")
    with pytest.raises(IndexFormatError, match=r"train\.csv:1: header lacks column"):
        build_index("kinetics400", k400)


# ------------------------------------------------------------------ SSv2


def test_ssv2_template_brackets_removed(tmp_path):
    root = tmp_path / "ssv2"
    ann = root / "annotations"
    touch(ann / "something-something-v2-labels.json", json.dumps(
        {"Putting something on something": "1", "Pushing something from left to right": "0"})
        .encode())
    touch(ann / "something-something-v2-train.json", json.dumps([
        {"id": "7", "label": "putting a cup on a table",
         "template": "Putting [something] on [something]", "placeholders": ["cup", "table"]},
        {"id": "12", "label": "pushing pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["pen"]},
        {"id": "99", "label": "x", "template": "Putting [something] on [something]"}]).encode())
    touch(ann / "something-something-v2-validation.json", json.dumps([
        {"id": "3", "label": "y", "template": "Pushing [something] from left to right"}])
        .encode())
    for i in ("7", "12", "3"):
        touch(root / "20bn-something-something-v2" / f"{i}.webm")
    idx = build_index("ssv2", root, subset="train")
    assert idx.classes == ("Pushing something from left to right",
                           "Putting something on something")
    assert [(v.path, v.label, v.video_id) for v in idx.videos] == [("7.webm", 1, "7"),
                                                                   ("12.webm", 0, "12")]
    assert idx.skipped == (("99.webm", "missing"),)
    assert [v.label for v in build_index("ssv2", root, subset="val").videos] == [0]
    with pytest.raises(IndexFormatError, match="test-answers"):
        build_index("ssv2", root, subset="test")
    touch(ann / "something-something-v2-validation.json",
          b'[{"id": "3", "template": "Juggling [something]"}]')
    with pytest.raises(IndexFormatError, match=r"validation\.json: entry 0 .* not a class"):
        build_index("ssv2", root, subset="val")


# ------------------------------------------------------------------ list files


def test_list_spaces_header_commas_and_class_names(tmp_path):
    root = tmp_path / "vids"
    for p in ("my videos/clip one.mp4", "b.avi", "dir,with,commas/c.mp4"):
        touch(root / p)
    lst = touch(tmp_path / "train.txt", b"path label\nmy videos/clip one.mp4 1\r\nb.avi,0\n"
                                        b"dir,with,commas/c.mp4 2\nmissing.mp4 0\n")
    idx = build_index("list", root, annotations=lst)
    assert [(v.path, v.label) for v in idx.videos] == [("my videos/clip one.mp4", 1),
                                                      ("b.avi", 0),
                                                      ("dir,with,commas/c.mp4", 2)]
    assert idx.classes == ("0", "1", "2") and idx.skipped == (("missing.mp4", "missing"),)
    assert idx.videos[0].video_id == "my videos/clip one"
    names = touch(tmp_path / "classInd.txt", b"1 Alpha\n2 Beta\n3 Gamma\n")
    assert build_index("list", root, annotations=lst, class_names=names).classes == \
        ("Alpha", "Beta", "Gamma")
    plain = touch(tmp_path / "names.txt", b"alpha\nbeta\ngamma\n")
    assert build_index("list", root, annotations=lst, class_names=plain).classes[2] == "gamma"


def test_list_errors(tmp_path):
    root = tmp_path / "vids"
    touch(root / "a.mp4")
    lst = touch(tmp_path / "l.txt", b"a.mp4 0\na.mp4\n")
    with pytest.raises(IndexFormatError, match=r"l\.txt:2: expected 'path label'"):
        build_index("list", root, annotations=lst)
    lst = touch(tmp_path / "l.txt", b"a.mp4 4\n")
    names = touch(tmp_path / "n.txt", b"x\ny\n")
    with pytest.raises(IndexFormatError, match=r"l\.txt:1: label 4 outside 0..1"):
        build_index("list", root, annotations=lst, class_names=names)
    with pytest.raises(IndexFormatError, match="--annotations"):
        build_index("list", root)
    lst = touch(tmp_path / "l.txt", b"a.mp4 0\na.mp4 0\n")
    with pytest.raises(IndexFormatError, match="listed twice"):
        build_index("list", root, annotations=lst)


def test_list_ids_are_unique_per_path_and_unchanged_where_they_do_not_collide(tmp_path):
    root = tmp_path / "vids"
    paths = ["a.mp4", "a.webm", "d/b.avi", "c.mp4", "c.mp4.avi", "c.mp4.mkv", "x.mp4",
             "x.webm", "x.mp4.avi"]
    for p in paths:
        touch(root / p)
    lst = touch(tmp_path / "l.txt", "".join(f"{p} 0\n" for p in paths).encode())
    idx = build_index("list", root, annotations=lst)
    assert [v.video_id for v in idx.videos] == [
        "a.mp4", "a.webm",  # both were "a": "listed twice" before
        "d/b",  # no collision: today's id
        "c", "c.mp4.avi", "c.mp4.mkv",  # "c" is alone; the other two were both "c.mp4"
        # x.mp4 takes its whole path, which is the stem of x.mp4.avi: that one moves too
        "x.mp4", "x.webm", "x.mp4.avi"]
    # the ids (hence the digest) of a list without collisions are what they always were
    plain = touch(tmp_path / "p.txt", b"a.mp4 0\nd/b.avi 0\n")
    idx = build_index("list", root, annotations=plain)
    assert [v.video_id for v in idx.videos] == ["a", "d/b"]
    assert idx.digest == index_digest(kind="list", split=1, subset="train", classes=["0"],
                                      videos=[VideoEntry("a.mp4", 0, "a"),
                                              VideoEntry("d/b.avi", 0, "d/b")])


def test_unknown_kind_and_root(tmp_path):
    with pytest.raises(IndexFormatError, match="unknown dataset kind 'ucf102'"):
        build_index("ucf102", tmp_path)
    with pytest.raises(IndexFormatError, match="not a directory"):
        build_index("ucf101", tmp_path / "nope")


# ------------------------------------------------------------------ JSON, digest


def _index(**kw) -> DatasetIndex:
    base = dict(kind="list", split=1, subset="train", classes=("a", "b"),
                videos=(VideoEntry("x/1.mp4", 0, "x/1"), VideoEntry("y 2.mp4", 1, "y 2")),
                root="/data/one")
    return DatasetIndex(**{**base, **kw})


def test_save_load_round_trip(tmp_path, ucf101):
    idx = build_index("ucf101", ucf101)
    save_index(idx, tmp_path / "i.json")
    back = load_index(tmp_path / "i.json")
    assert back == idx and back.digest == idx.digest and back.root == idx.root
    d = json.loads((tmp_path / "i.json").read_text())
    assert d["format"] == "dvfl-index" and d["digest"] == idx.digest
    assert d["classes"] == list(idx.classes) and d["videos"][0]["label"] == 0
    assert load_index(tmp_path / "i.json", root="/moved").root == "/moved"


def test_digest_covers_rows_not_root():
    a = _index()
    assert a.digest == _index(root="/elsewhere").digest
    for change in (dict(split=2), dict(subset="test"), dict(classes=("a", "c")),
                   dict(videos=tuple(reversed(a.videos))),
                   dict(videos=(VideoEntry("x/1.mp4", 1, "x/1"), a.videos[1]))):
        assert _index(**change).digest != a.digest
    assert a.digest == index_digest(kind="list", split=1, subset="train", classes=a.classes,
                                    videos=a.videos)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("classes"), "missing field 'classes'"),
    (lambda d: d.update(version=99), "newer dvfl"),
    (lambda d: d.update(format="other"), "not a dvfl index"),
    (lambda d: d["videos"][0].update(label=5), r"videos\[0\]: label 5 outside 0..1"),
    (lambda d: d["videos"][1].update(label="1"), r"videos\[1\]: field 'label' should be int"),
])
def test_load_rejects_bad_files(tmp_path, edit, message):
    d = _index().to_dict()
    edit(d)
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(IndexFormatError, match=message):
        load_index(tmp_path / "bad.json")


def test_load_reports_non_json_and_missing(tmp_path):
    (tmp_path / "x.json").write_text("{\n oops")
    with pytest.raises(IndexFormatError, match=r"x\.json: not valid JSON \(line 2"):
        load_index(tmp_path / "x.json")
    with pytest.raises(IndexFormatError, match="not found"):
        load_index(tmp_path / "none.json")
