"""The fewer-frames recipe end to end through both CLIs: a 4-frame teacher cache with features,
a 2-frame student with the representation term, its GMACs next to its accuracy, and the two
refusals (no features for --beta, more student frames than the cache has)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

TEACHER_FRAMES, STUDENT_FRAMES, SIZE = 4, 2, 32
TEACHER_OPTS = ("embed_dim=8", "depths=[1,1,1,1]")   # 8 * 2**3 = 64 features
STUDENT_OPTS = ("embed_dim=4", "depths=[1,1,1,1]")   # 32 features: P is a real 32 -> 64 map
ALPHA, TAU, BETA = 0.5, 2.0, 1.0



def _build(root: Path, out: Path, *features: str) -> Path:
    from dvfl_cache.cli import main

    args = ["build", "--dataset", "ucf101", "--root", str(root), "--teacher", "vfl-nano",
            "--random-weights", *[a for o in TEACHER_OPTS for a in ("--teacher-opt", o)],
            "--frames", str(TEACHER_FRAMES), "--size", str(SIZE), "--dtype", "float32",
            "--batch-size", "8", "--workers", "0", "--device", "cpu", "--out", str(out),
            *features]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def caches(synth_root, tmp_path_factory) -> tuple[Path, Path]:
    """(with features, without features), both of the same random 4-frame teacher."""
    tmp = tmp_path_factory.mktemp("fewer_frames")
    return (_build(synth_root, tmp / "feat.zarr", "--features"),
            _build(synth_root, tmp / "plain.zarr"))


def _fit_args(root: Path, cache: Path, out: Path, *, frames: int = STUDENT_FRAMES,
              beta: float = BETA) -> list[str]:
    return ["fit", "--dataset", "ucf101", "--root", str(root), "--cache", str(cache),
            "--frames", str(frames), "--size", str(SIZE),
            *[a for o in STUDENT_OPTS for a in ("--model-opt", o)],
            "--alpha", str(ALPHA), "--tau", str(TAU), "--beta", str(beta),
            "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0",
            "--device", "cpu", "--out", str(out)]


def _eval(checkpoint: Path, root: Path, out: Path, *extra: str) -> dict:
    from dvfl_train.cli import main

    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(checkpoint), "--dataset",
                                       "ucf101", "--root", str(root), "--workers", "0",
                                       "--device", "cpu", "--out", str(out), *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "GMACs/view" in result.output and "top-1 (%)" in result.output
    return json.loads((out / "eval_1.json").read_text())


def test_two_frame_student_distils_from_a_four_frame_cache(synth_root, synth_index, caches,
                                                           tmp_path, monkeypatch):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data import decode_frames, subsample_positions, views_from_arrays
    from dvfl_cache.models import count_gmacs, create_model
    from dvfl_cache.data.dataset import Cut
    from dvfl_train.cli import main

    # Record what the student was actually fed: the view and the decoded uint8 frames.
    fed: list[tuple] = []
    real_render = Cut.render

    def recording_render(self, frames, view):
        if self.as_uint8:  # the training cut (validation renders float clips)
            fed.append((view, np.array(frames)))
        return real_render(self, frames, view)

    monkeypatch.setattr(Cut, "render", recording_render)
    run = tmp_path / "student"
    result = CliRunner().invoke(main, _fit_args(synth_root, caches[0], run),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert ", feat " in result.output  # the epoch line shows the representation term

    # Epoch 1 replays cached view 0 of every training video, keeping positions 0 and 3 of 4.
    positions = subsample_positions(TEACHER_FRAMES, STUDENT_FRAMES)
    assert positions == [0, 3]
    cached = {v.video: v for v in views_from_arrays(CacheReader(caches[0]).epoch_block(0))}
    assert sorted(view.video for view, _ in fed) == list(range(len(synth_index)))
    for view, frames in fed:
        stored = cached[view.video]
        assert len(stored.frames) == TEACHER_FRAMES
        assert view.frames == tuple(stored.frames[p] for p in positions)
        assert (view.crop, view.flip, view.jitter, view.gray) == (
            stored.crop, stored.flip, stored.jitter, stored.gray)
        np.testing.assert_array_equal(
            frames, decode_frames(synth_index.abspath(view.video), view.frames))

    # The epoch's losses: the feature term is there, and the total is exactly the weighted sum
    # (clip-weighted means are linear), so beta really entered the objective.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (epoch,) = [r for r in records if r["type"] == "epoch"]
    assert math.isfinite(epoch["feat"]) and epoch["feat"] > 0.0 and epoch["kd"] > 0.0
    assert epoch["loss"] == pytest.approx(
        ALPHA * epoch["kd"] + (1 - ALPHA) * epoch["ce"] + BETA * epoch["feat"], rel=1e-6)
    assert json.loads((run / "config.json").read_text())["beta"] == BETA

    # best.pt is the plain network; the projector P (student 32 -> teacher 64) rides beside it.
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["projector"]["weight"].shape == (64, 32)
    assert best["projector"]["bias"].shape == (64,)
    assert not any(k.startswith("proj") for k in best["model"])
    assert CacheReader(caches[0]).meta.feature_dim == 64

    # Evaluation prints GMACs beside accuracy; the same weights at 4 frames cost twice as much.
    two = _eval(run / "best.pt", synth_root, tmp_path / "eval2")
    four = _eval(run / "best.pt", synth_root, tmp_path / "eval4", "--frames", "4")
    # top-1 is the confusion matrix's diagonal over the videos, whose rows are the 2 test videos
    # of each of the 4 classes (every video decoded)
    assert two["num_videos"] == 8 and two["num_failed"] == 0
    assert [sum(row) for row in two["confusion"]] == [2, 2, 2, 2]
    assert two["top1"] == sum(two["confusion"][i][i] for i in range(4)) / 8
    assert two["gmacs_per_view"] / four["gmacs_per_view"] == pytest.approx(0.5, rel=0.05)
    student = create_model("vfl-nano", num_classes=4, num_frames=STUDENT_FRAMES, img_size=SIZE,
                           embed_dim=4, depths=[1, 1, 1, 1])
    assert two["gmacs_per_view"] == pytest.approx(
        count_gmacs(student, frames=STUDENT_FRAMES, size=SIZE), rel=1e-9)


def test_beta_without_cached_features_is_refused(synth_root, caches, tmp_path):
    from dvfl_train.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, _fit_args(synth_root, caches[1], out))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert str(caches[1]) in lines[0] and "dvfl-cache build --features" in lines[0]
    assert not (out / "config.json").exists()  # refused before the run directory was set up
    # beta 0 (KD only) from the same cache is fine
    ok = CliRunner().invoke(main, _fit_args(synth_root, caches[1], out, beta=0.0))
    assert ok.exit_code == 0, ok.output


def test_more_student_frames_than_cached_is_refused(synth_root, caches, tmp_path):
    from dvfl_train.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, _fit_args(synth_root, caches[0], out, frames=8))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert str(caches[0]) in lines[0]
    assert "4 frames" in lines[0] and "cannot replay 8" in lines[0]
    assert not (out / "config.json").exists()


def test_student_validates_and_tests_on_the_teacher_span(synth_root, synth_index, caches,
                                                         tmp_path, monkeypatch, caplog):
    """With --test-span 4, a 2-frame student of a 4-frame cache is validated in fit, and tested
    by eval, on the 4-frame test views cut to 2 frames; without it, a warning says so."""
    from dvfl_cache.data import SubsampledViews, ViewSampler, open_video, subsample_view
    from dvfl_train.cli import main

    from dvfl_cache.data.dataset import AllViews

    used = []
    real = AllViews.draw
    monkeypatch.setattr(AllViews, "draw",
                        lambda self, i, info: used.append(self.sampler) or real(self, i, info))
    run = tmp_path / "spanned"
    args = _fit_args(synth_root, caches[1], run, beta=0.0)
    with caplog.at_level("WARNING", logger="dvfl_train.trainer"):
        result = CliRunner().invoke(main, args + ["--test-span", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if "--test-span" in r.getMessage()]
    assert json.loads((run / "config.json").read_text())["test_span"] == 4
    base = ViewSampler(num_frames=TEACHER_FRAMES, mode="test")
    assert used and all(s == SubsampledViews(base, STUDENT_FRAMES) for s in used)
    with open_video(synth_index.abspath(0)) as v:
        info = v.info
    view = used[0].sample(0, 0, info)
    assert view == subsample_view(base.sample(0, 0, info), STUDENT_FRAMES)
    assert len(view.frames) == STUDENT_FRAMES and view.frames != ViewSampler(
        num_frames=STUDENT_FRAMES, mode="test").sample(0, 0, info).frames

    # eval takes the span from the checkpoint; --test-span 0 asks for plain 2-frame views
    used.clear()
    spanned = _eval(run / "best.pt", synth_root, tmp_path / "e_span")
    assert spanned["span"] == 4 and isinstance(used[0], SubsampledViews)
    (val,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"val_top1"' in line]
    assert spanned["top1"] == val["val_top1"]  # what fit validated on is what eval tests
    used.clear()
    plain = _eval(run / "best.pt", synth_root, tmp_path / "e_plain", "--test-span", "0")
    assert plain["span"] is None and isinstance(used[0], ViewSampler)
    short = CliRunner().invoke(main, ["eval", "--checkpoint", str(run / "best.pt"), "--dataset",
                                      "ucf101", "--root", str(synth_root), "--test-span", "1"])
    assert short.exit_code == 2 and "cannot hold the model's 2 frames" in short.output

    caplog.clear()
    with caplog.at_level("WARNING", logger="dvfl_train.trainer"):
        result = CliRunner().invoke(main, _fit_args(synth_root, caches[1], tmp_path / "plain",
                                                    beta=0.0), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert any("--test-span 4" in r.getMessage() for r in caplog.records)
