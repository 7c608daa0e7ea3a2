"""ClipDataset + collate on real files, broken videos counted and reported, probe and CLI."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from dvfl_cache.cli import main
from dvfl_cache.data.dataset import ClipDataset, FailureLog, collate_clips
from dvfl_cache.data.decode import decode_frames
from dvfl_cache.data.index import DatasetIndex, VideoEntry, load_index
from dvfl_cache.data.probe import probe_index
from dvfl_cache.data.transforms import apply_view, to_float
from dvfl_cache.data.views import SamplerViewFn, View, ViewSampler, views_from_arrays

SAMPLER = ViewSampler(num_frames=4, seed=5, jitter=(0.2, 0.2, 0.2, 0.05))


def test_items_replay_the_view_they_report(synth_index):
    ds = ClipDataset(synth_index, SamplerViewFn(SAMPLER, view=2), 24)
    assert len(ds) == len(synth_index)
    item = ds[3]
    assert item["error"] is None and item["clip"].shape == (4, 3, 24, 24)
    assert item["label"] == synth_index.videos[3].label and item["video"] == 3
    (view,) = views_from_arrays(item["view_arrays"])
    assert view.view == 2 == item["view"]
    frames = decode_frames(synth_index.abspath(3), view.frames)
    assert torch.equal(apply_view(frames, view, 24), item["clip"])
    assert torch.equal(ds[3]["clip"], item["clip"])


def test_uint8_items_convert_to_exactly_the_float_items(synth_index):
    fn = SamplerViewFn(SAMPLER, view=1)
    floats = collate_clips([ClipDataset(synth_index, fn, 20)[i] for i in range(3)])
    pixels = collate_clips([ClipDataset(synth_index, fn, 20, as_uint8=True)[i] for i in range(3)])
    assert pixels["clip"].dtype == torch.uint8 and pixels["clip"].shape == (3, 4, 3, 20, 20)
    assert torch.equal(to_float(pixels["clip"]), floats["clip"])


def test_fixed_view_list(synth_index):
    views = [View(video=5, view=0, frames=(0, 15)), View(video=1, view=7, frames=(3, 3))]
    ds = ClipDataset(synth_index, views, 16, normalize=False)
    assert len(ds) == 2
    assert ds[1]["video"] == 1 and ds[1]["view"] == 7
    assert torch.equal(ds[1]["clip"][0], ds[1]["clip"][1])
    with pytest.raises(ValueError, match="index has"):
        ClipDataset(synth_index, [View(video=99, view=0, frames=(0,))], 16)


def test_dataloader_with_workers_matches_single_process(synth_index):
    ds = ClipDataset(synth_index, SamplerViewFn(SAMPLER, view=0), 16)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate_clips)
        batches.append(list(loader))
    for a, b in zip(*batches):
        assert torch.equal(a["clip"], b["clip"]) and torch.equal(a["label"], b["label"])
        assert a["failures"] == b["failures"] == []
        for k in a["view_arrays"]:
            np.testing.assert_array_equal(a["view_arrays"][k], b["view_arrays"][k])
    assert sum(len(b["label"]) for b in batches[1]) == len(synth_index)


@pytest.fixture(scope="module")
def broken_index(synth_index, tmp_path_factory) -> DatasetIndex:
    """The tiny train index plus a garbage .avi and a truncated copy of a real .mp4."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(synth_index.root, root, dirs_exist_ok=True)
    (root / "garbage.avi").write_bytes(np.random.default_rng(0).integers(
        0, 256, 4000, dtype=np.uint8).tobytes())
    mp4 = next(v for v in synth_index.videos if v.path.endswith(".mp4"))
    data = (root / mp4.path).read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 3 // 4])  # index (moov) lost
    videos = synth_index.videos + (VideoEntry("garbage.avi", 0, "garbage"),
                                   VideoEntry("truncated.mp4", 1, "truncated"))
    return DatasetIndex(kind="list", split=1, subset="train", classes=synth_index.classes,
                        videos=videos, root=str(root))


def test_broken_videos_are_dropped_counted_and_reported(broken_index, caplog):
    ds = ClipDataset(broken_index, SamplerViewFn(SAMPLER), 16)
    log = FailureLog()
    total = 0
    for batch in DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate_clips):
        log.add(batch["failures"])
        total += len(batch["label"])
        if batch["clip"] is not None:
            assert batch["clip"].shape[0] == len(batch["label"]) == len(batch["video"])
            assert batch["view_arrays"]["frames"].shape == (len(batch["label"]), 4)
    assert total == len(broken_index) - 2 and len(log) == 2
    assert [p.rsplit("/", 1)[1] for p in log.videos] == ["garbage.avi", "truncated.mp4"]
    with caplog.at_level(logging.WARNING):
        log.report()
    assert "2 clip(s) of 2 video(s) failed" in caplog.text
    assert "garbage.avi: " in caplog.text and "truncated.mp4: " in caplog.text


def test_all_failed_batch(broken_index):
    ds = ClipDataset(broken_index, SamplerViewFn(SAMPLER), 16)
    batch = collate_clips([ds[len(broken_index) - 1], ds[len(broken_index) - 2]])
    assert batch["clip"] is None and len(batch["label"]) == 0 and len(batch["failures"]) == 2


def test_view_past_the_end_is_reported_not_clamped(synth_index):
    ds = ClipDataset(synth_index, [View(video=0, view=0, frames=(0, 16))], 16)
    item = ds[0]
    assert item["clip"] is None and "out of range" in item["error"]
    assert collate_clips([item])["failures"] == [(synth_index.abspath(0), item["error"])]


def test_probe_reports_broken_files(broken_index):
    probed = probe_index(broken_index, workers=2)
    good = [v.probe for v in probed.videos[:-2]]
    assert all(p.ok and p.num_frames == 16 and (p.width, p.height) == (32, 32) for p in good)
    assert all(p.fps == pytest.approx(25.0) for p in good)
    assert [v.probe.ok for v in probed.videos[-2:]] == [False, False]
    assert probed.digest == broken_index.digest


# ------------------------------------------------------------------ CLI


def test_cli_synth_index_probe(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    r = runner.invoke(main, ["synth", "--out", str(out), "--classes", "2",
                             "--videos-per-class", "3", "--size", "32x16", "--frames", "6"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["index", "--dataset", "ucf101", "--root", str(out), "--out",
                             str(tmp_path / "i.json"), "--probe", "--workers", "1"])
    assert r.exit_code == 0, r.output
    idx = load_index(tmp_path / "i.json")
    assert idx.classes == ("PanLeft", "PanRight") and len(idx) == 4
    assert {(v.probe.num_frames, v.probe.width, v.probe.height) for v in idx.videos} == \
        {(6, 32, 16)}
    assert idx.digest in r.output
    # broken files through a list index: the probe names them and the command still succeeds
    first = idx.videos[0].path
    (out / "UCF-101" / "bad.avi").write_bytes(b"RIFF" + b"\0" * 100)
    lst = tmp_path / "list.txt"
    lst.write_text(f"path,label\n{first},0\nbad.avi,1\n")
    r = runner.invoke(main, ["index", "--dataset", "list", "--root", str(out / "UCF-101"),
                             "--annotations", str(lst), "--out", str(tmp_path / "l.json"),
                             "--probe", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "1 of 2 videos failed to decode" in r.output and "bad.avi:" in r.output
    saved = json.loads((tmp_path / "l.json").read_text())
    assert saved["videos"][1]["probe"]["error"] and saved["videos"][0]["probe"]["error"] is None
    r = runner.invoke(main, ["probe", str(out / "UCF-101" / first), str(out / "UCF-101" /
                                                                         "bad.avi")])
    assert r.exit_code == 1 and "6 frames, 25 fps, 32x16" in r.output and "ERROR" in r.output


def test_cli_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(main, ["index", "--dataset", "ucf101", "--root", str(tmp_path),
                                  "--out", str(tmp_path / "i.json")])
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output


def test_cli_synth_defaults_match_the_config():
    """The command's defaults are SynthConfig's: 6 learnable classes unless asked for more."""
    from dvfl_cache.commands.data import synth_cmd
    from dvfl_cache.data.synth import SynthConfig

    defaults = {p.name: p.default for p in synth_cmd.params}
    cfg = SynthConfig()
    assert cfg.classes == defaults["classes"] == 6
    assert (cfg.videos_per_class, cfg.frames, cfg.fps, cfg.seed) == (
        defaults["videos_per_class"], defaults["frames"], defaults["fps"], defaults["seed"])


def test_cuts_of_one_decode_equal_their_own_views(synth_index, monkeypatch):
    """Two cuts (a 2-frame student cut at 16 px, the full view at 24 px) from one decode."""
    import dvfl_cache.data.dataset as dataset
    from dvfl_cache.data.dataset import Cut, SampledViews
    from dvfl_cache.data.views import subsample_view

    opened = []
    real = dataset.open_video
    monkeypatch.setattr(dataset, "open_video", lambda p, **k: opened.append(p) or real(p, **k))
    source = SampledViews.of_videos(SAMPLER, [4, 1], view=3)
    ds = ClipDataset(synth_index, source, [Cut("small", 16, frames=2, as_uint8=True),
                                           Cut("full", 24)])
    item = ds[0]
    assert len(opened) == 1 and item["video"] == 4 and item["view"] == 3
    view = SAMPLER.sample(4, 3, _info(synth_index, 4))
    small = subsample_view(view, 2)
    assert torch.equal(to_float(item["small"]),
                       apply_view(decode_frames(synth_index.abspath(4), small.frames), small, 16))
    assert torch.equal(item["full"], apply_view(decode_frames(synth_index.abspath(4),
                                                              view.frames), view, 24))
    batch = collate_clips([item, ds[1]])
    assert batch["small"].shape == (2, 2, 3, 16, 16) and batch["full"].shape == (2, 4, 3, 24, 24)
    assert batch["video"].tolist() == [4, 1] and batch["failed_at"] == []


def test_cache_rows_and_stacked_test_views(synth_index, broken_index):
    from dvfl_cache.data.dataset import AllViews, SampledViews

    rows = SampledViews.rows(SAMPLER, [0, 9, 17], num_videos=8)
    assert rows.items == ((0, 0), (1, 1), (1, 2))  # row r * 8 + v is view r of video v
    test = ViewSampler(num_frames=2, mode="test", clips=2, crops=3)
    ds = ClipDataset(synth_index, AllViews(test, len(synth_index)), 16)
    item = ds[2]
    views = [test.sample(2, k, _info(synth_index, 2)) for k in range(6)]
    assert item["clip"].shape == (6, 2, 3, 16, 16)
    assert views_from_arrays(item["view_arrays"]) == views
    for k in (0, 5):
        want = apply_view(decode_frames(synth_index.abspath(2), views[k].frames), views[k], 16)
        assert torch.equal(item["clip"][k], want)
    broken = ClipDataset(broken_index, SampledViews.rows(SAMPLER, [len(broken_index) * 2 - 1],
                                                         len(broken_index)), 16)
    batch = collate_clips([broken[0]])
    assert batch["clip"] is None and batch["failed_at"] == [(len(broken_index) - 1, 1)]


def _info(index, video):
    from dvfl_cache.data.decode import open_video

    with open_video(index.abspath(video)) as v:
        return v.info
