"""Mixed caches (format 2): the teacher's clip replays bit for bit from the stored records; the
store is the same for any batch size or number of ranks; version-1 stores still work; verify
--recompute catches wrong logits; bad input is one line."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from test_cache_build import build_args, run_cli, store_arrays
import torch
from click.testing import CliRunner

from dvfl_cache.cli import main as cache_cli

V1_STORE = Path(__file__).parent / "data" / "v1_store.zip"
MIX = ["--mixup", "0.8", "--cutmix", "1.0", "--jitter", "0.4,0.4,0.4,0.1", "--jitter-mode",
       "frame", "--gray", "0.2"]
RECORDS = ("video", "view", "frames", "crop", "flip", "jitter", "gray", "frame_jitter",
           "jitter_order", "mix_op", "mix_lambda", "mix_box", "partner_video", "partner_frames",
           "partner_crop", "partner_flip", "partner_jitter", "partner_gray",
           "partner_frame_jitter", "partner_jitter_order", "valid", "label")


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def replay(index, arrays: dict, row: int, size: int, frames: int | None = None) -> torch.Tensor:
    """A stored row's clip, rebuilt the way a student's loader does (uint8 pixels)."""
    from dvfl_cache.data.dataset import replay_clip
    from dvfl_cache.data.mix import mixes_from_arrays
    from dvfl_cache.data.views import views_from_arrays

    one = {k: a[row:row + 1] for k, a in arrays.items()}
    return replay_clip(index, views_from_arrays(one)[0], mixes_from_arrays(one, one["view"])[0],
                       size, frames=frames)


@pytest.fixture(scope="module")
def mixed_store(synth_root, tmp_path_factory):
    """A mixed, per-frame-jittered cache, and the hash of every clip the teacher saw."""
    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.models.video_focalnet import VideoFocalNet

    out = tmp_path_factory.mktemp("mixed") / "m.zarr"
    index = build_index("ucf101", synth_root, split=1, subset="train")
    seen: list[str] = []
    real = VideoFocalNet.forward_features

    def spy(self, x):  # records what the teacher is given, then runs it unchanged
        seen.extend(_sha(c) for c in x)
        return real(self, x)

    cfg = BuildConfig(out=str(out), teacher="vfl-nano", random_weights=True,
                      teacher_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]}, views_per_video=2,
                      sampler={"jitter": [0.4, 0.4, 0.4, 0.1], "gray_p": 0.2,
                               "jitter_mode": "frame"},
                      frames=4, size=32, dtype="float32", views_per_shard=4, batch_size=3,
                      workers=0, device="cpu", mixup=0.8, cutmix=1.0, mix_prob=1.0)
    VideoFocalNet.forward_features = spy
    try:
        build_cache(cfg, index)
    finally:
        VideoFocalNet.forward_features = real
    return out, index, seen


def test_mixed_rows_replay_bit_identically_to_the_teachers_clip(mixed_store):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.transforms import to_float

    out, index, seen = mixed_store
    meta = CacheReader(out).meta
    assert meta.format_version == 2 and meta.jitter_mode == "frame"
    assert meta.mix.to_dict() == {"mixup": 0.8, "cutmix": 1.0, "prob": 1.0, "seed": 0}
    assert meta.teacher_precision == {"device": "cpu", "autocast": None}
    a = store_arrays(out)
    assert a["valid"].all()  # no failures
    # The build computes rows video by video in batches of exactly 3 (the last one filled up
    # with zero clips): what the teacher saw is each row's clip once, plus that filling.
    filling = _sha(to_float(torch.zeros((4, 3, 32, 32), dtype=torch.uint8)))
    seen = [h for h in seen if h != filling]
    assert len(seen) == 16
    assert set(a["mix_op"].tolist()) == {1, 2}  # both mixup and cutmix rows
    assert (a["partner_video"] != a["video"]).all()
    assert len({tuple(j) for j in a["frame_jitter"].reshape(-1, 4).tolist()}) > 8
    replayed = [_sha(to_float(replay(index, a, row, 32))) for row in range(16)]
    assert sorted(replayed) == sorted(seen)


def test_mixed_row_at_fewer_frames_cuts_both_clips_alike(mixed_store):
    from dvfl_cache.data.views import subsample_positions

    out, index, _ = mixed_store
    a = store_arrays(out)
    for row in np.flatnonzero(a["mix_op"] == 2)[:2].tolist() + \
            np.flatnonzero(a["mix_op"] == 1)[:1].tolist():
        full = replay(index, a, row, 32)
        pos = subsample_positions(4, 2)
        assert torch.equal(replay(index, a, row, 32, frames=2), full[pos])
        small = replay(index, a, row, 16)
        if a["mix_op"][row] == 2:  # the box covers the same fraction of a 16 px frame
            y0, x0, h, w = a["mix_box"][row]
            area = (round(float(y0 + h) * 16) - round(float(y0) * 16)) * \
                (round(float(x0 + w) * 16) - round(float(x0) * 16))
            assert abs(area / 256 - (1 - a["mix_lambda"][row])) < 0.15
        assert small.shape == (4, 3, 16, 16)


def test_batch_size_does_not_change_a_mixed_cache(synth_root, tmp_path):
    run_cli(build_args(synth_root, tmp_path / "b3", *MIX))
    run_cli(build_args(synth_root, tmp_path / "b8", *MIX, "--batch-size", "8",
                       "--mix-prob", "1"))
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.mix import MixConfig

    meta = CacheReader(tmp_path / "b3").meta
    assert meta.mix == MixConfig(mixup=0.8, cutmix=1.0, prob=1.0, seed=0)
    assert meta.jitter_mode == "frame" and meta.sampler.params["gray_p"] == 0.2
    a, b = store_arrays(tmp_path / "b3"), store_arrays(tmp_path / "b8")
    assert set(a) == set(b) and set(a["mix_op"].tolist()) == {1, 2}
    for name in RECORDS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


@pytest.mark.slow
def test_torchrun_two_ranks_build_the_same_mixed_cache(synth_root, tmp_path):
    run_cli(build_args(synth_root, tmp_path / "one", *MIX))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", free_port(), "-m", "dvfl_cache.cli",
           *build_args(synth_root, tmp_path / "two", *MIX)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = store_arrays(tmp_path / "one"), store_arrays(tmp_path / "two")
    for name in RECORDS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


def test_mix_prob_and_clip_mode_options_reach_the_store(synth_root, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    run_cli(build_args(synth_root, tmp_path / "half", "--mixup", "0.8", "--mix-prob", "0.5",
                       "--views-per-video", "4"))
    r = CacheReader(tmp_path / "half")
    assert (r.meta.mix.mixup, r.meta.mix.cutmix, r.meta.mix.prob) == (0.8, 0.0, 0.5)
    assert r.meta.jitter_mode == "clip"
    a = store_arrays(tmp_path / "half")
    assert "frame_jitter" not in a and 4 < int((a["mix_op"] == 1).sum()) < 28
    assert set(a["mix_op"].tolist()) == {0, 1}
    assert (a["mix_lambda"][a["mix_op"] == 0] == 0).all()
    # no mixing, per-clip jitter: only the round-1 arrays, but a version-2 store
    run_cli(build_args(synth_root, tmp_path / "plain"))
    plain = CacheReader(tmp_path / "plain")
    assert plain.meta.format_version == 2 and plain.meta.mix is None
    assert sorted(store_arrays(tmp_path / "plain")) == sorted(
        ["logits", "label", "valid", "video", "view", "frames", "crop", "flip", "jitter",
         "gray", "shard_done"])


def test_bad_mixing_input_is_one_line_before_any_work(synth_root, synth_index, tmp_path):
    from dvfl_cache.data.index import save_index

    out = tmp_path / "x.zarr"
    for flag, value in [("--mix-prob", "1.5"), ("--mix-prob", "-0.1"), ("--mixup", "-1"),
                        ("--cutmix", "-0.5"), ("--jitter-mode", "pixel")]:
        res = CliRunner().invoke(cache_cli, build_args(synth_root, out, flag, value))
        assert res.exit_code == 2 and flag in res.output and "Traceback" not in res.output
        assert not out.exists()
    one = dataclasses.replace(synth_index, videos=synth_index.videos[:1])
    save_index(one, tmp_path / "one.json")
    args = [a for a in build_args(synth_root, out, "--cutmix", "1") if a not in
            ("--dataset", "ucf101")]
    args[args.index("--root")] = "--index"
    args[args.index("--index") + 1] = str(tmp_path / "one.json")
    args += ["--root", str(synth_root / "UCF-101")]
    res = CliRunner().invoke(cache_cli, args)
    assert res.exit_code == 1 and "at least 2 videos" in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output and not out.exists()


def test_a_failed_partner_invalidates_only_its_rows_and_is_recorded(synth_root, synth_index,
                                                                   tmp_path):
    from dvfl_cache.cache.inspect import verify
    from dvfl_cache.cache.store import CacheReader

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    bad_path = synth_index.videos[3].path
    (root / "UCF-101" / bad_path).write_bytes(b"\x00not a video" * 50)
    out = tmp_path / "c.zarr"
    res = run_cli(build_args(root, out, *MIX, "--views-per-video", "4", "--max-failed", "0.2"))
    r = CacheReader(out)
    a = store_arrays(out)
    assert list(r.failed_videos()) == [3]
    rows = r.failed_rows()
    partner_rows = np.flatnonzero((a["video"] != 3) & (a["valid"] == 0)).tolist()
    assert partner_rows and sorted(rows) == partner_rows
    for row, rec in rows.items():
        assert rec["partner"] == 3 and rec["video"] == row % 8 and bad_path in rec["path"]
    # every other row is valid, and no valid row was mixed with the broken video
    assert (a["valid"][(a["video"] != 3)] == 1).sum() == 4 * 7 - len(partner_rows)
    assert not ((a["partner_video"] == 3) & (a["valid"] == 1)).any()
    assert "partner failed to decode" in res.output and bad_path in res.output
    verify(out)  # the restated failure rule holds


def test_verify_recompute_passes_and_catches_one_shifted_mixed_row(mixed_store, synth_root,
                                                                   tmp_path):
    import zarr

    out, _, _ = mixed_store
    args = ["verify", "--dataset", "ucf101", "--root", str(synth_root), "--recompute", "16",
            "--teacher", "vfl-nano"]
    res = run_cli([*args[:1], str(out), *args[1:]])
    assert "recomputed on 16 rows (16 mixed)" in res.output
    bad = tmp_path / "shifted.zarr"
    shutil.copytree(out, bad)
    g = zarr.open_group(str(bad), mode="r+")
    a = store_arrays(bad)
    row = int(np.flatnonzero(a["mix_op"] == 2)[1])
    logits = np.asarray(g["logits"][row:row + 1])
    g["logits"][row:row + 1] = logits + np.float32(0.01)
    run_cli(["verify", str(bad)])  # the checksums are fine: only a recompute can tell
    res = CliRunner().invoke(cache_cli, [*args[:1], str(bad), *args[1:]])
    assert res.exit_code == 1 and f"row {row}," in res.output and "cutmix" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cache_cli, ["verify", str(out), "--recompute", "2"])
    assert res.exit_code == 2 and "--teacher" in res.output


def test_a_mixed_cache_exports_and_imports_whole(mixed_store, tmp_path):
    from dvfl_cache.cache.share import export_hdf5, import_hdf5
    from dvfl_cache.cache.store import CacheReader

    out, _, _ = mixed_store
    export_hdf5(out, tmp_path / "m.h5")
    import_hdf5(tmp_path / "m.h5", tmp_path / "back.zarr")
    a, b = store_arrays(out), store_arrays(tmp_path / "back.zarr")
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert CacheReader(tmp_path / "back.zarr").meta == CacheReader(out).meta


# ------------------------------------------------------------------ version 1


def test_a_version_1_store_still_opens_verifies_and_recomputes(synth_root, synth_index):
    from dvfl_cache.cache.inspect import info, verify
    from dvfl_cache.cache.store import CacheReader

    r = CacheReader(V1_STORE)
    assert r.meta.format_version == 1 and r.meta.mix is None
    assert r.meta.teacher_precision is None and r.meta.decoder_version == 0
    assert sorted(r.meta.row_arrays()) == sorted(
        ["logits", "label", "valid", "video", "view", "frames", "crop", "flip", "jitter", "gray"])
    assert r.meta.to_dict() == r._group().attrs.asdict()  # read back exactly as written
    assert verify(V1_STORE, index=synth_index)["rows_checked"] == 16
    assert info(V1_STORE)["format"] == "dvfl-teacher-cache v1"
    res = run_cli(["verify", str(V1_STORE), "--dataset", "ucf101", "--root", str(synth_root),
                   "--recompute", "4", "--teacher", "vfl-nano"])
    assert "recomputed on 4 rows (0 mixed)" in res.output


def test_resuming_a_version_1_store_is_one_clear_line(synth_root, tmp_path):
    import zipfile

    out = tmp_path / "v1.zarr"
    with zipfile.ZipFile(V1_STORE) as z:
        z.extractall(out)
    # the same build settings, with --views-per-shard 8 and --dtype float16 as it was built
    args = build_args(synth_root, out, "--resume", "--views-per-shard", "8", "--dtype", "float16",
                      "--batch-size", "4")
    res = CliRunner().invoke(cache_cli, args)
    assert res.exit_code == 1 and "format version 1" in res.output and "Traceback" not in \
        res.output


def test_a_version_1_store_still_trains(synth_root, tmp_path):
    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    cfg = FitConfig(dataset="ucf101", data_root=str(synth_root), out_dir=str(tmp_path / "run"),
                    num_frames=4, size=32, model_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]},
                    alpha=0.5, epochs=2, warmup_epochs=1, batch_size=4, workers=0, device="cpu",
                    cache=str(V1_STORE))
    summary = fit(cfg)
    assert (tmp_path / "run" / "last.pt").exists() and summary is not None


def test_a_mixed_per_frame_cache_trains(mixed_store, synth_root, tmp_path):
    import json

    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    out, _, _ = mixed_store
    cfg = FitConfig(dataset="ucf101", data_root=str(synth_root), out_dir=str(tmp_path / "run"),
                    num_frames=4, size=32, model_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]},
                    alpha=0.5, epochs=1, warmup_epochs=0, batch_size=4, workers=0, device="cpu",
                    cache=str(out))
    summary = fit(cfg)
    assert summary["final"]["mixed"] == 1.0 and 0 < summary["final"]["cutmix_share"] < 1
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["mixed"] == 1.0


def test_the_trainer_replays_per_frame_jitter_from_an_unmixed_cache(synth_root, synth_index,
                                                                    tmp_path):
    from dvfl_train.train_data import plan_epoch

    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.decode import open_video
    from dvfl_cache.data.views import ViewSampler

    out = tmp_path / "frame.zarr"
    run_cli(build_args(synth_root, out, "--jitter", "0.4,0.4,0.4,0.1", "--jitter-mode", "frame"))
    reader = CacheReader(out)
    assert reader.meta.mix is None and reader.meta.jitter_mode == "frame"
    plan = plan_epoch(2, synth_index, reader=reader)  # epoch 2 replays view 1
    sampler = ViewSampler.from_dict({k: v for k, v in reader.meta.sampler.params.items()
                                     if k != "size"})
    for view in plan.views:
        with open_video(synth_index.abspath(view.video)) as v:
            assert view == sampler.sample(view.video, 1, v.info)  # per-frame records included
        assert view.per_frame


def test_a_mixed_build_resumes_to_the_same_store(synth_root, tmp_path):
    import zarr

    ref, out = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    run_cli(build_args(synth_root, ref, *MIX))
    shutil.copytree(ref, out)
    g = zarr.open_group(str(out), mode="r+")
    for s in (1, 3):  # as if killed before these shards were written
        g["shard_done"][s] = 0
        for name in ("logits", "mix_op", "partner_frames", "frame_jitter"):
            arr = g[name]
            arr[s * 4:(s + 1) * 4] = np.zeros((4, *arr.shape[1:]), arr.dtype)
    res = run_cli(build_args(synth_root, out, *MIX, "--resume"))
    assert "8 views in 2 shards written by this process" in res.output
    a, b = store_arrays(out), store_arrays(ref)
    for name in RECORDS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)
