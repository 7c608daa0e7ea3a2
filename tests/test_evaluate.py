"""Evaluation: view layouts, mean-of-softmax aggregation, failed videos as misses, checkpoints,
and the `dvfl-train eval` command on the tiny synthetic dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import write_counter_video
from dvfl_cache.data import (DatasetIndex, VideoEntry, ViewSampler, apply_view, decode_frames,
                             open_video, save_index)
from dvfl_cache.errors import CheckpointError, DvflError
from dvfl_cache.models import create_model, save_checkpoint
from dvfl_train.checkpoint import RunDir, training_state
from dvfl_train.cli import main
from dvfl_train.config import FitConfig
from dvfl_train.evaluate import (TestView, ViewLayout, check_classes, evaluate, evaluate_many,
                                 load_for_eval, parse_views, report_with_misses)

FRAMES, SIZE, CLASSES = 2, 32, ("a", "b", "c", "d")



def tiny_model(num_classes: int = 4, seed: int = 0, num_frames: int = FRAMES):
    torch.manual_seed(seed)
    model = create_model("vfl-nano", embed_dim=8, depths=[1, 1, 1, 1], num_frames=num_frames,
                         img_size=SIZE, num_classes=num_classes, drop_path_rate=0.0)
    with torch.no_grad():  # a sharper head, so views and videos get clearly different scores
        model.head.weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def wide_index(tmp_path_factory) -> DatasetIndex:
    """Three 64x48 videos (not square, so the three crops differ) of 12 frames."""
    root = tmp_path_factory.mktemp("wide")
    videos = []
    for i in range(3):
        write_counter_video(root / f"v{i}.mp4", 12 + i, codec="mpeg4")
        videos.append(VideoEntry(path=f"v{i}.mp4", label=i, video_id=f"v{i}"))
    return DatasetIndex(kind="list", split=1, subset="test", classes=CLASSES,
                        videos=tuple(videos), root=str(root))


def with_broken(index: DatasetIndex, directory: Path, *, label: int = 1) -> DatasetIndex:
    """`index` plus one file of random bytes that no demuxer can open."""
    bad = directory / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rel = os.path.relpath(bad, index.root)
    return index.with_videos(index.videos + (VideoEntry(path=rel, label=label,
                                                        video_id="broken"),))


def manual_probs(model, index: DatasetIndex, clips: int, crops: int) -> np.ndarray:
    """One forward per view, straight from the sampler: the definition evaluate must match."""
    sampler = ViewSampler(mode="test", clips=clips, crops=crops, num_frames=FRAMES)
    out = []
    with torch.no_grad():
        for i in range(len(index)):
            with open_video(index.abspath(i)) as v:
                info = v.info
            per_view = []
            for j in range(clips * crops):
                view = sampler.sample(i, j, info)
                x = apply_view(decode_frames(index.abspath(i), view.frames), view, SIZE)
                per_view.append(model(x[None]).softmax(dim=1)[0])
            out.append(torch.stack(per_view).mean(0).numpy())
    return np.stack(out)


# -- view layouts -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, clips, crops, label", [
    ("1", 1, 1, "1"), ("1x1", 1, 1, "1"), ("4x3", 4, 3, "4x3"), (" 2X1 ", 2, 1, "2x1")])
def test_parse_views(text, clips, crops, label):
    layout = parse_views(text)
    assert (layout.clips, layout.crops, layout.label) == (clips, crops, label)
    assert layout.num_views == clips * crops


@pytest.mark.parametrize("text", ["12", "0x3", "4x0", "4x", "x3", "ax3", "4x3x1", ""])
def test_parse_views_refuses(text):
    with pytest.raises(ValueError, match="expected 1 or NxC"):
        parse_views(text)


# -- aggregation --------------------------------------------------------------------------------

@pytest.mark.parametrize("clips, crops, batch_size", [(1, 1, 8), (4, 3, 8), (4, 3, 5)])
def test_aggregation_is_mean_of_per_view_softmax(model, wide_index, clips, crops, batch_size):
    result = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE),
                      layout=ViewLayout(clips, crops), batch_size=batch_size)
    expected = manual_probs(model, wide_index, clips, crops)
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=2e-6)
    assert result.num_views == clips * crops and result.views == ViewLayout(clips, crops).label
    assert result.num_failed == 0 and result.num_videos == 3
    top1 = (expected.argmax(1) == result.labels).mean()
    assert result.report.top1 == top1
    assert result.report.top5 == 1.0  # 4 classes: the true class is always in the top 5


def test_test_span_cuts_longer_views(wide_index):
    from dvfl_cache.data import SubsampledViews, subsample_view
    from dvfl_train.evaluate import test_sampler

    plain = test_sampler(TestView(num_frames=2, size=32, span=2), layout=ViewLayout(4, 3))
    assert plain == ViewSampler(mode="test", clips=4, crops=3, num_frames=2)
    cut = test_sampler(TestView(num_frames=2, size=32, temporal="stride", stride=2, span=6),
                       layout=ViewLayout(4, 3))
    long = ViewSampler(mode="test", clips=4, crops=3, num_frames=6, temporal="stride", stride=2)
    assert cut == SubsampledViews(long, 2)
    assert cut.views_per_video == 12 and cut.num_frames == 2
    with open_video(wide_index.abspath(0)) as v:
        for j in range(12):
            view = cut.sample(0, j, v.info)
            assert view == subsample_view(long.sample(0, j, v.info), 2)
            assert view.frames[1] - view.frames[0] == 10  # the 6-frame view's first and last
    with pytest.raises(ValueError, match="cannot hold"):
        test_sampler(TestView(num_frames=4, size=32, span=3))
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        SubsampledViews(ViewSampler(mode="test", num_frames=4), 5)


def test_views_of_4x3_are_the_documented_layout(wide_index):
    """4 temporal positions x left/centre/right squares of the full short side."""
    sampler = ViewSampler(mode="test", clips=4, crops=3, num_frames=FRAMES)
    with open_video(wide_index.abspath(0)) as v:  # 64x48, 12 frames
        views = [sampler.sample(0, j, v.info) for j in range(12)]
    assert [v.frames for v in views[::3]] == [(0, 6), (2, 8), (3, 9), (5, 11)]
    # (y0, x0, h, w): full height, width 48/64; every fraction here is exact in binary
    assert [v.crop for v in views[:3]] == [(0.0, 0.0, 1.0, 0.75), (0.0, 0.125, 1.0, 0.75),
                                           (0.0, 0.25, 1.0, 0.75)]
    assert {v.crop for v in views} == {v.crop for v in views[:3]}
    # 1 view: short side 256 -> centre 224, i.e. a 42 px square of the 48 px short side
    one = ViewSampler(mode="test", num_frames=FRAMES).sample(0, 0, v.info)
    assert one.crop == ((48 - 42) / 2 / 48, (64 - 42) / 2 / 64, 42 / 48, 42 / 64)


def test_mean_of_softmax_is_not_softmax_of_mean_logits(model, wide_index):
    """The views disagree enough that the aggregation test above can tell the two apart."""
    result = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE),
                      layout=ViewLayout(4, 3))
    sampler = ViewSampler(mode="test", clips=4, crops=3, num_frames=FRAMES)
    with open_video(wide_index.abspath(0)) as v:
        clips = torch.stack([apply_view(v.frames(view.frames), view, SIZE) for view in
                             (sampler.sample(0, j, v.info) for j in range(12))])
    with torch.no_grad():
        logit_mean = model(clips).mean(0).softmax(0).numpy()
    assert np.abs(logit_mean - result.probs[0]).max() > 1e-3


def test_evaluation_is_deterministic_and_restores_mode(model, wide_index):
    model.train()
    a = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE), layout=ViewLayout(2, 3))
    assert model.training
    model.eval()
    b = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE),
                 layout=ViewLayout(2, 3), batch_size=4)
    c = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE),
                 layout=ViewLayout(2, 3), batch_size=4)
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(b.probs, c.probs)
    assert (b.report.top1, b.report.top5) == (c.report.top1, c.report.top5)
    np.testing.assert_array_equal(b.report.confusion, c.report.confusion)


def test_worker_processes_give_the_same_numbers(model, wide_index):
    a = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE), workers=0)
    b = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE), workers=1)
    np.testing.assert_array_equal(a.probs, b.probs)


def test_progress_counts_every_video(model, wide_index, tmp_path):
    index = with_broken(wide_index, tmp_path)
    done = []
    evaluate(model, index, TestView(num_frames=FRAMES, size=SIZE), batch_size=2,
             progress=done.append)
    assert sum(done) == len(index) == 4


def test_many_models_share_one_decode_and_match_their_own_evaluation(wide_index, tmp_path,
                                                                      monkeypatch):

    index = with_broken(wide_index, tmp_path, label=3)
    models = [tiny_model(seed=s) for s in (0, 1, 2)]
    models[1].train()
    alone = [evaluate(m, index, TestView(num_frames=FRAMES, size=SIZE), layout=ViewLayout(2, 3),
                      batch_size=4)
             for m in models]
    import dvfl_cache.data.dataset as ds

    decodes = []
    real = ds.open_video
    monkeypatch.setattr(ds, "open_video", lambda *a, **k: decodes.append(a[0]) or
                        real(*a, **k))
    together = evaluate_many(models, index, TestView(num_frames=FRAMES, size=SIZE),
                             layout=ViewLayout(2, 3), batch_size=4)
    assert len(decodes) == len(index) == 4  # each video once, not once per model
    assert [m.training for m in models] == [False, True, False]
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.probs, b.probs)
        assert (a.report.top1, a.report.top5, a.failed) == (b.report.top1, b.report.top5,
                                                              b.failed)
    # the models really differ, so equal results are not one model's scores copied
    assert np.abs(together[0].probs[:3] - together[1].probs[:3]).max() > 1e-3
    with pytest.raises(ValueError, match="at least one model"):
        evaluate_many([], index, TestView(num_frames=FRAMES, size=SIZE))


# -- failures count as misses ---------------------------------------------------------------------

def test_broken_video_is_a_reported_miss(model, wide_index, tmp_path):
    index = with_broken(wide_index, tmp_path, label=3)
    result = evaluate(model, index, TestView(num_frames=FRAMES, size=SIZE), layout=ViewLayout(2, 3))
    good = manual_probs(model, wide_index, 2, 3)
    assert result.num_videos == 4 and result.num_failed == 1
    path, reason = result.failed[0]
    assert path.endswith("broken.mp4") and reason
    assert np.isnan(result.probs[3]).all()
    np.testing.assert_allclose(result.probs[:3], good, rtol=0, atol=2e-6)
    hits = int((good.argmax(1) == np.arange(3)).sum())
    assert result.report.top1 == hits / 4
    assert result.report.top5 == 3 / 4  # the broken video misses even at k >= num_classes
    assert result.report.per_class[3] == 0.0
    assert result.report.confusion.sum() == 3  # decoded videos only
    assert result.summary().endswith("of which 1 failed to decode and count as misses")


def test_report_with_misses_closed_form():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [np.nan] * 3, [0.2, 0.5, 0.3]],
                     np.float32)
    labels = np.array([0, 1, 1, 1])
    ok = np.array([True, True, False, True])
    r = report_with_misses(probs, labels, ok, 3)
    assert r.count == 4
    assert r.top1 == 2 / 4            # videos 0 and 3
    assert r.top5 == 3 / 4            # every decoded video; the failed one is still a miss
    np.testing.assert_array_equal(r.per_class[:2], [1.0, 1 / 3])
    assert np.isnan(r.per_class[2])   # no videos of class 2
    np.testing.assert_array_equal(r.confusion, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert r.mean_class_accuracy == pytest.approx((1 + 1 / 3) / 2)


def test_report_when_every_video_failed():
    r = report_with_misses(np.full((2, 3), np.nan), np.array([0, 2]), np.zeros(2, bool), 3)
    assert (r.top1, r.top5, r.confusion.sum()) == (0.0, 0.0, 0)
    np.testing.assert_array_equal(r.per_class[[0, 2]], [0.0, 0.0])


def test_evaluate_refuses_mismatched_model(wide_index):
    with pytest.raises(DvflError, match="5 classes.*has 4"):
        evaluate(tiny_model(num_classes=5), wide_index, TestView(num_frames=FRAMES, size=SIZE))
    with pytest.raises(DvflError, match="takes 2-frame clips.*4 frames"):
        evaluate(tiny_model(), wide_index, TestView(num_frames=4, size=SIZE))


# -- checkpoints ----------------------------------------------------------------------------------

def run_checkpoint(run: Path, model, *, classes=CLASSES, sampler=None, name="best") -> Path:
    cfg = FitConfig(dataset="ucf101", data_root="/data", out_dir=str(run), num_frames=FRAMES,
                    size=SIZE, sampler=sampler or {}, alpha=0.0, model_opts={"embed_dim": 8})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = training_state(model, opt, epoch=3, step=30, best_metric=0.5, config=cfg)
    state["classes"] = list(classes)
    return RunDir(run, overwrite=True).save(name, state)


def test_load_run_checkpoint(model, tmp_path):
    path = run_checkpoint(tmp_path / "run", model,
                          sampler={"temporal": "stride", "stride": 2})
    loaded, classes, info = load_for_eval(path)
    info = {**info, **info["view"].to_dict()}
    assert classes == CLASSES
    assert {k: info[k] for k in ("kind", "num_frames", "size", "temporal", "stride", "epoch")} \
        == {"kind": "run", "num_frames": 2, "size": 32, "temporal": "stride", "stride": 2,
            "epoch": 3}
    x = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not loaded.training


def test_load_plain_model_checkpoint(model, tmp_path):
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, classes, info = load_for_eval(tmp_path / "m.pt")
    info = {**info, **info["view"].to_dict()}
    assert classes is None
    assert (info["kind"], info["num_frames"], info["size"], info["temporal"]) == \
        ("model", 2, 32, "segment")
    save_checkpoint(tmp_path / "named.pt", model, classes=list(CLASSES))
    assert load_for_eval(tmp_path / "named.pt")[1] == CLASSES
    loaded, _, info = load_for_eval(tmp_path / "m.pt", num_frames=4)
    assert loaded.num_frames == 4 and info["view"].num_frames == 4


def test_unusable_checkpoints(model, tmp_path):
    torch.save({"state_dict": model.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not a dvfl run or model checkpoint"):
        load_for_eval(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_for_eval(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "three.pt", model, classes=["a", "b", "c"])
    with pytest.raises(CheckpointError, match="3 class names but the model has 4 outputs"):
        load_for_eval(tmp_path / "three.pt")


def test_check_classes(model, wide_index):
    check_classes("x.pt", model, CLASSES, wide_index)
    check_classes("x.pt", model, None, wide_index)
    with pytest.raises(CheckpointError, match="x.pt: the model has 5 classes but the list test "
                                              "index has 4"):
        check_classes("x.pt", tiny_model(num_classes=5), None, wide_index)
    with pytest.raises(CheckpointError, match="class 2 is 'z' in the checkpoint but 'c'"):
        check_classes("x.pt", model, ("a", "b", "z", "d"), wide_index)


# -- the command ----------------------------------------------------------------------------------

def test_eval_command_writes_json_and_counts_failures(model, synth_root, synth_test_index,
                                                      tmp_path):
    classes = synth_test_index.classes
    ckpt = run_checkpoint(tmp_path / "run", model, classes=classes)
    index = with_broken(synth_test_index, tmp_path, label=0)
    save_index(index, tmp_path / "index.json")
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(ckpt), "--index",
                                    str(tmp_path / "index.json"), "--views", "1", "--views",
                                    "2x3", "--workers", "0", "--device", "cpu",
                                    "--threads", "2", "--max-failed", "0.2"])
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == 2  # the command applied --threads (tests run at 1)
    assert "top-1 (%)" in res.output and "GMACs/view" in res.output
    assert res.output.count("over 9 videos") == 2
    assert "of which 1 failed to decode and count as misses" in res.output

    direct = evaluate(model, index, TestView(num_frames=FRAMES, size=SIZE), layout=ViewLayout(2, 3))
    for name, layout in (("eval_1.json", "1"), ("eval_2x3.json", "2x3")):
        record = json.loads((tmp_path / "run" / name).read_text())
        assert record["views"] == layout and record["num_videos"] == 9
        assert record["num_failed"] == 1
        assert record["failed"][0]["path"].endswith("broken.mp4")
        assert record["classes"] == list(classes)
        assert len(record["per_class"]) == 4
        confusion = np.array(record["confusion"])
        assert confusion.shape == (4, 4) and confusion.sum() == 8
        assert record["dataset"]["digest"] == index.digest
        assert record["checkpoint"] == str(ckpt) and record["epoch"] == 3
        assert record["gmacs_per_view"] > 0
    record = json.loads((tmp_path / "run" / "eval_2x3.json").read_text())
    assert record["top1"] == direct.report.top1 and record["top5"] == direct.report.top5
    assert record["confusion"] == direct.report.confusion.tolist()


def test_eval_command_on_a_dataset_folder(model, synth_root, synth_test_index, tmp_path):
    ckpt = run_checkpoint(tmp_path / "run", model, classes=synth_test_index.classes)
    out = tmp_path / "results"
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(ckpt), "--dataset", "ucf101",
                                    "--root", str(synth_root), "--workers", "0", "--out",
                                    str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "over 8 videos (1 view (centre crop)), all decoded" in res.output
    record = json.loads((out / "eval_1.json").read_text())
    assert record["dataset"]["subset"] == "test" and record["num_failed"] == 0
    assert np.array(record["confusion"]).sum() == 8
    assert not (tmp_path / "run" / "eval_1.json").exists()


def test_eval_command_refuses_wrong_class_count(synth_root, tmp_path):
    save_checkpoint(tmp_path / "five.pt", tiny_model(num_classes=5))
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(tmp_path / "five.pt"),
                                    "--dataset", "ucf101", "--root", str(synth_root),
                                    "--device", "cpu"])
    assert res.exit_code == 1
    assert "five.pt: the model has 5 classes but the ucf101 test index has 4" in res.output
    assert "Traceback" not in res.output


def test_eval_command_refuses_bad_views(synth_root, tmp_path, model):
    save_checkpoint(tmp_path / "m.pt", model)
    res = CliRunner().invoke(main, ["eval", "--checkpoint", str(tmp_path / "m.pt"), "--dataset",
                                    "ucf101", "--root", str(synth_root), "--views", "12"])
    assert res.exit_code == 2 and "expected 1 or NxC" in res.output


def test_wrapped_model_is_evaluated_and_checked_through_the_wrapper(model, wide_index):
    """The trainer may hand in a DDP-style wrapper (the network under `.module`)."""
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, x):
            return self.module(x)

    plain = evaluate(model, wide_index, TestView(num_frames=FRAMES, size=SIZE))
    wrapped = evaluate(Wrapper(model), wide_index, TestView(num_frames=FRAMES, size=SIZE))
    np.testing.assert_array_equal(plain.probs, wrapped.probs)
    with pytest.raises(DvflError, match="5 classes"):
        evaluate(Wrapper(tiny_model(num_classes=5)), wide_index,
                 TestView(num_frames=FRAMES, size=SIZE))


def test_non_finite_scores_are_misses_not_failures(wide_index):
    """A diverged model scores nothing right, and its videos are not reported as undecodable."""
    class Diverged(torch.nn.Module):
        num_frames, num_classes = FRAMES, 4

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 4)
            logits[:, 0] = float("nan")
            return logits

    result = evaluate(Diverged(), wide_index, TestView(num_frames=FRAMES, size=SIZE))
    assert result.num_failed == 0 and np.isnan(result.probs).all()
    assert (result.report.top1, result.report.top5, result.report.confusion.sum()) == (0, 0, 0)
