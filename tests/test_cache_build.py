"""`dvfl-cache build`: stored logits are the teacher's on the stored views; resume; failures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from conftest import free_port

from dvfl_cache.cli import main as cache_cli

TINY_TEACHER = ["--teacher", "vfl-nano", "--random-weights", "--teacher-opt", "embed_dim=8",
                "--teacher-opt", "depths=[1,1,1,1]"]


def build_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "--dataset", "ucf101", "--root", str(root), "--split", "1",
            *TINY_TEACHER, "--views-per-video", "2", "--frames", "4", "--size", "32",
            "--views-per-shard", "4", "--batch-size", "3", "--workers", "0",
            "--dtype", "float32", "--out", str(out), *extra]


def run_cli(args: list[str], expect: int = 0):
    result = CliRunner().invoke(cache_cli, args, catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(a[:]) for name, a in g.arrays()}


def test_build_stores_teacher_logits_of_the_stored_views(synth_root, synth_index, tmp_path):
    from dvfl_cache.cache.build import load_teacher
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data import apply_view, decode_frames, views_from_arrays

    out = tmp_path / "c.zarr"
    run_cli(build_args(synth_root, out, "--features"))
    r = CacheReader(out)
    assert r.complete and r.meta.num_videos == len(synth_index) == 8
    a = store_arrays(out)
    n = 8 * 2
    assert a["logits"].shape == (n, 4) and a["frames"].shape == (n, 4)
    # row = view * num_videos + video
    np.testing.assert_array_equal(a["video"], np.tile(np.arange(8), 2))
    np.testing.assert_array_equal(a["view"], np.repeat(np.arange(2), 8))
    np.testing.assert_array_equal(a["label"], [v.label for v in synth_index.videos] * 2)
    assert a["valid"].all()
    # Replaying a stored view through the same (seeded) teacher gives the stored logits.
    teacher, _ = load_teacher("vfl-nano", weights=None, random_weights=True, num_classes=4,
                              num_frames=4, opts={"embed_dim": 8, "depths": [1, 1, 1, 1]})
    views = views_from_arrays({k: a[k] for k in ("video", "view", "frames", "crop", "flip",
                                                 "jitter", "gray")})
    for row in (0, 5, 11):
        v = views[row]
        clip = apply_view(decode_frames(synth_index.abspath(v.video), v.frames), v, 32)
        with torch.inference_mode():
            feats = teacher.forward_features(clip[None])
            logits = teacher.forward_head(feats)
        np.testing.assert_allclose(a["logits"][row], logits[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(a["features"][row], feats[0].numpy(), atol=1e-5)
    # The two views of a video differ (random frames/crops), so the cache holds distinct views.
    assert not np.array_equal(a["crop"][0], a["crop"][8])


def test_build_refuses_without_weights_and_over_existing_store(synth_root, tmp_path):
    out = tmp_path / "c.zarr"
    args = build_args(synth_root, out)
    no_weights = [x for x in args if x != "--random-weights"]
    res = CliRunner().invoke(cache_cli, no_weights)
    assert res.exit_code == 1 and "--random-weights" in res.output
    assert not out.exists()
    run_cli(args)
    res = CliRunner().invoke(cache_cli, args)
    assert res.exit_code == 1 and "--resume" in res.output and "--overwrite" in res.output
    # another teacher into the same store: refused, naming the difference
    res = CliRunner().invoke(cache_cli, [*args, "--resume", "--teacher-opt", "embed_dim=16"])
    assert res.exit_code == 1 and "teacher" in res.output


def test_build_records_failed_videos(synth_root, synth_index, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    bad = root / "UCF-101" / synth_index.videos[3].path
    bad.write_bytes(b"\x00not a video" * 50)
    out = tmp_path / "c.zarr"
    # 1 of 8 videos (12.5%) is past the default --max-failed 0.05: the build fails in one line
    # naming the video and the count, and keeps what it wrote (the store is complete).
    res = run_cli(build_args(root, out), expect=1)
    assert "1 of 8 videos failed to decode" in res.output and "Traceback" not in res.output
    assert synth_index.videos[3].path in res.output and CacheReader(out).complete
    res = run_cli(build_args(root, out, "--resume", "--max-failed", "0.2"))
    assert "1 video(s) failed to decode" in res.output and synth_index.videos[3].path in res.output
    r = CacheReader(out)
    assert r.complete and list(r.failed_videos()) == [3]
    a = store_arrays(out)
    assert (a["valid"][a["video"] == 3] == 0).all() and (a["valid"][a["video"] != 3] == 1).all()


def _build_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dvfl_cache.cli", *build_args(root, out, *extra)]


def test_build_killed_mid_way_resumes_to_identical_store(synth_root, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "killed.zarr"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Enough shards (8 videos x 4 views / 4 per shard = 8) that the kill lands mid-build.
    more = ["--views-per-video", "4", "--views-per-shard", "4", "--batch-size", "1"]
    ref = tmp_path / "ref.zarr"
    run_cli([*build_args(synth_root, ref), *more])
    proc = subprocess.Popen(_build_cmd(synth_root, out, *more), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "zarr.json").exists():
            try:
                done = int(CacheReader(out).shard_done().sum())
            except Exception:  # store still being created
                done = 0
            if done >= 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "build finished before it could be killed; make it bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = CacheReader(out)
    pending = partial.pending_shards()
    assert 0 < len(pending) < partial.num_shards
    res = run_cli([*build_args(synth_root, out), *more, "--resume"])
    # Only the pending shards were computed again.
    rows = sum(len(partial.shard_rows(s)) for s in pending)
    assert f"{rows} views in {len(pending)} shards written by this process" in res.output
    a, b = store_arrays(out), store_arrays(ref)
    for name in b:
        if name == "logits":
            np.testing.assert_allclose(a[name], b[name], atol=1e-5)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert CacheReader(out).complete


def test_torchrun_two_ranks_split_the_shards(synth_root, tmp_path):
    ref = tmp_path / "ref.zarr"
    run_cli(build_args(synth_root, ref))
    out = tmp_path / "ddp.zarr"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", free_port(), "-m", "dvfl_cache.cli",
           *build_args(synth_root, out)[0:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = store_arrays(out), store_arrays(ref)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_area_option_bounds_the_stored_crops_and_bad_ranges_are_refused(synth_root, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "c.zarr"
    run_cli(build_args(synth_root, out, "--area", "0.6,0.9"))
    assert tuple(CacheReader(out).meta.sampler.params["area"]) == (0.6, 0.9)
    crop = store_arrays(out)["crop"]  # (y0, x0, h, w) as fractions of the frame
    area = crop[:, 2] * crop[:, 3]
    # pixel rounding of a 32x32 frame moves the area by at most a few percent
    assert area.min() > 0.55 and area.max() < 0.95, (area.min(), area.max())
    bad_values = [("--area", "0.9,0.1"), ("--area", "0,1"), ("--area", "half"),
                  ("--jitter", "0.1,0.2"), ("--jitter", "a,b,c,d")]
    for flag, bad in bad_values:
        res = CliRunner().invoke(cache_cli, build_args(synth_root, tmp_path / "x.zarr",
                                                       flag, bad))
        assert res.exit_code == 2 and flag in res.output, res.output
        assert not (tmp_path / "x.zarr").exists()


def test_recorded_build_command_names_dvfl_cache_however_launched(synth_root, tmp_path):
    """Launched as `python -m dvfl_cache.cli` (how torchrun runs it), the store records
    `dvfl-cache build ...`, not `dvfl-cache -m dvfl_cache.cli build ...`; the card shows it."""
    from dvfl_cache.cache.card import make_card
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "c.zarr"
    result = CliRunner().invoke(cache_cli, build_args(synth_root, out),
                                prog_name="python -m dvfl_cache.cli", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    reader = CacheReader(out)
    command = reader.build_records()[0]["command"]
    assert command[:4] == ["dvfl-cache", "build", "--dataset", "ucf101"]
    fields = make_card(reader, address=str(out))[2]
    assert fields["built_with"][0].startswith("dvfl-cache build --dataset")
