"""`dvfl-train explain`: the modulators it draws are the ones the model used, the files it writes,
its agreement with `predict`, its error lines and the wiring of every option."""

from __future__ import annotations

from dvfl_cache.data.views import TestView

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import write_counter_video
from dvfl_cache.data.decode import open_video
from dvfl_cache.models import create_model, save_checkpoint
from dvfl_cache.models.video_focalnet import SpatioTemporalFocalModulation
from dvfl_train.cli import main
from dvfl_train.explain import (ExplainError, covered_frames, explain_video, magnitudes,
                                nearest_position, select_maps)
from dvfl_train.predict import predict_video

CLASSES = ("walk", "run", "jump", "sit", "wave", "clap")
SIZE = 32
# teacher-like: 2 stages (1 and 2 blocks), tubelets of 2 over 4 frames; student-like: 4 stages,
# 2 frames, no tubelets
TEACHER = dict(embed_dim=8, depths=[1, 2], focal_levels=[2, 2], focal_windows=[3, 3],
               num_frames=4, tubelet_size=2)
STUDENT = dict(embed_dim=8, depths=[1, 1, 1, 1], num_frames=2)


def _model(seed: int, **opts):
    torch.manual_seed(seed)
    net = create_model("vfl-nano", img_size=SIZE, num_classes=len(CLASSES), drop_path_rate=0.0,
                       **opts)
    with torch.no_grad():
        net.head.weight.mul_(30)  # distinct probabilities, so the top-5 order is meaningful
    return net.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    video = write_counter_video(d / "clip.mp4", 30, codec="mpeg4")  # 64x48, 25 fps
    teacher, student = _model(0, **TEACHER), _model(1, **STUDENT)
    (d / "teacher").mkdir()
    (d / "student").mkdir()
    save_checkpoint(d / "teacher" / "best.pt", teacher, classes=list(CLASSES))
    save_checkpoint(d / "student" / "best.pt", student, classes=list(CLASSES))
    result = explain_video(video, [d / "teacher" / "best.pt", d / "student" / "best.pt"],
                           d / "out")
    return dict(dir=d, video=video, teacher=teacher, student=student, result=result,
                record=json.loads((d / "out" / "explain.json").read_text()))


def _png_size(path) -> tuple[int, int]:
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


# --------------------------------------------------------------------------- the model's maps


@pytest.mark.parametrize("options", [{}, {"tubelet_size": 2}, {"use_postln_in_modulation": True},
                                     {"normalize_modulator": True, "use_postln": True}],
                         ids=lambda o: ",".join(o) or "defaults")
def test_returned_modulators_recombine_into_the_block_output_exactly(options):
    """query * spatial * temporal, through the block's own ln and proj, is bit for bit the
    modulation output of the same forward pass: the maps are the ones the block used. And the
    forward stashes nothing on the modules."""
    model = _model(2, embed_dim=8, depths=[1, 2, 1], focal_levels=[2, 2, 2],
                   focal_windows=[3, 3, 3], num_frames=4, **options)
    mods = [m for m in model.modules() if isinstance(m, SpatioTemporalFocalModulation)]
    before = [dict(vars(m)) for m in model.modules()]
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, args, out: outputs.append((mod, out[0])))
             for m in mods]
    x = torch.randn(2, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        features, maps = model.forward_features(x, return_modulators=True)
    for h in hooks:
        h.remove()
    assert [dict(vars(m)) for m in model.modules()] == before
    assert len(maps) == len(outputs) == 4
    assert [(m.stage, m.block) for m in maps] == [(0, 0), (1, 0), (1, 1), (2, 0)]
    for m, (mod, out) in zip(maps, outputs):
        frames = 4 // options.get("tubelet_size", 1)
        assert m.query.shape == m.spatial.shape == m.temporal.shape
        assert m.query.shape[:2] == (2, frames) and m.query.shape[-1] == mod.dim
        with torch.no_grad():
            y = m.query * m.spatial * m.temporal
            if mod.use_postln_in_modulation:
                y = mod.ln(y)
            y = mod.proj(y)
        assert torch.equal(y.reshape(out.shape), out)
        # and not trivially: the temporal modulator is not all ones
        assert not torch.allclose(m.temporal, torch.ones_like(m.temporal))
    with torch.no_grad():
        assert torch.equal(features, model.forward_features(x))


def test_magnitudes_are_channel_norms_and_blocks_average():
    model = _model(3, **TEACHER)
    x = torch.randn(1, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        _, maps = model.forward_features(x, return_modulators=True)
    mags = magnitudes(maps)
    assert sorted(mags) == [0, 1]
    assert mags[1]["spatial"].shape == (2, 2, 4, 4)  # 2 blocks, 2 token frames, 4x4 at 32 px
    np.testing.assert_allclose(mags[1]["temporal"][1],
                               maps[2].temporal[0].norm(dim=-1).numpy(), rtol=1e-6)
    s, b, shown = select_maps(mags, None, None, where="m")
    assert (s, b) == (1, None)
    np.testing.assert_allclose(shown["spatial"], mags[1]["spatial"].mean(axis=0), rtol=1e-6)
    s, b, shown = select_maps(mags, 2, 2, where="m")
    assert (s, b) == (1, 1) and np.array_equal(shown["spatial"], mags[1]["spatial"][1])
    assert select_maps(mags, 1, None, where="m")[0] == 0
    with pytest.raises(ExplainError, match="m: stage 3 does not exist; the model has stages 1-2"):
        select_maps(mags, 3, None, where="m")
    with pytest.raises(ExplainError, match="m: block 2 does not exist in stage 1"):
        select_maps(mags, 1, 2, where="m")


def test_tubelet_cover_and_nearest_frame():
    assert covered_frames([3, 11, 18, 26], 2) == [(3, 11), (18, 26)]
    assert covered_frames([7, 22], 1) == [(7,), (22,)]
    with pytest.raises(ValueError):
        covered_frames([1, 2, 3], 2)
    seen = [3, 11, 18, 26]
    assert [nearest_position(seen, f) for f in (0, 3, 7, 8, 14, 15, 30)] == [0, 0, 0, 1, 1, 2, 3]
    assert nearest_position([5, 5, 9], 5) == 0  # repeats: the first


# --------------------------------------------------------------------------- the files


def test_files_have_the_expected_sizes(setup):
    out = setup["dir"] / "out"
    # segment test views of a 30-frame video: floor((i + 1/2) * 30 / T)
    assert setup["record"]["columns"][0]["frames"] == [3, 11, 18, 26]
    assert setup["record"]["columns"][1]["frames"] == [7, 22]
    assert setup["record"]["rows"] == [3, 7, 11, 18, 22, 26]
    # modulators.png: 3 cells of 120 px per model, 120 px per row plus a 72 px head
    assert _png_size(out / "modulators.png") == (3 * 120 * 2, 120 * 6 + 72)
    # top5.png: 120 px per frame of the longest clip plus 384 px of bars; a row per model
    assert _png_size(out / "top5.png") == (120 * 4 + 384, 120 * 2 + 72)
    # the video: every frame from 3 to 26 at the source's 25 fps, tiles of 128 px under a
    # 24 px header
    with open_video(out / "modulators.mp4") as v:
        assert (v.info.num_frames, v.info.width, v.info.height) == (24, 3 * 128 * 2, 24 + 128)
        assert v.info.fps == pytest.approx(25)
        first = v.frames([0])[0, 24:].astype(np.float64)
    assert setup["record"]["video_frames"] == {"first": 3, "last": 26, "count": 24, "step": 1}
    # the heat maps are drawn: the overlay tiles differ from the plain frame tile
    assert np.abs(first[:, 128:256] - first[:, :128]).mean() > 10


def test_maps_are_aligned_by_the_frames_they_cover(setup):
    teacher, student = setup["record"]["columns"]
    assert teacher["tubelet_size"] == 2 and teacher["maps_cover"] == [[3, 11], [18, 26]]
    assert student["maps_cover"] == [[7], [22]]
    assert teacher["shown"] == {"stage": 2, "block": None}  # each model's last stage by default
    assert student["shown"] == {"stage": 4, "block": None}
    assert [s["blocks"] for s in teacher["stages"]] == [1, 2]
    assert [s["grid"] for s in teacher["stages"]] == [[8, 8], [4, 4]]
    assert len(teacher["stages"][1]["spatial"]["per_map_mean"]) == 2
    assert len(teacher["stages"][1]["temporal"]["per_block_mean"]) == 2


def test_json_stats_are_the_models_modulators(setup):
    column = setup["result"].columns[0]
    with torch.no_grad():
        from dvfl_cache.data.transforms import to_float

        _, maps = setup["teacher"].forward_features(to_float(column.pixels)[None],
                                                    return_modulators=True)
    expected = torch.stack([m.spatial[0].norm(dim=-1) for m in maps if m.stage == 1]).mean()
    got = setup["record"]["columns"][0]["stages"][1]["spatial"]["mean"]
    assert got == pytest.approx(float(expected), rel=1e-5)


def test_long_spans_play_every_kth_frame(setup, monkeypatch, tmp_path):
    import dvfl_train.explain as explain

    monkeypatch.setattr(explain, "MAX_VIDEO_FRAMES", 10)  # the span 3..26 has 24 frames
    result = explain_video(setup["video"], [setup["dir"] / "teacher" / "best.pt"], tmp_path)
    assert result.video_frames == (3, 6, 9, 12, 15, 18, 21, 24)
    with open_video(tmp_path / "modulators.mp4") as v:
        assert v.info.num_frames == 8 and v.info.fps == pytest.approx(25 / 3)


def test_json_top5_equals_predict(setup):
    for column, model in zip(setup["record"]["columns"], (setup["teacher"], setup["student"])):
        pred = predict_video(model, setup["video"], TestView(model.num_frames, SIZE),
                             classes=CLASSES, topk=5)
        assert [(t["class"], t["prob"]) for t in column["top5"]] == list(pred.top)


def test_matplotlib_missing_is_one_clear_error(setup, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(ExplainError, match=r'matplotlib is not installed.*dvfl\[plot\]'):
        explain_video(setup["video"], [setup["dir"] / "student" / "best.pt"], tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the command


def _cli(*args):
    return CliRunner().invoke(main, ["explain", *map(str, args)])


def test_command_options_reach_the_library(setup, tmp_path):
    d = setup["dir"]
    out = tmp_path / "o"
    args = [setup["video"], "--checkpoint", d / "teacher" / "best.pt", "--checkpoint",
            d / "student" / "best.pt", "--out", out, "--stage", "1", "--block", "1",
            "--test-span", "4", "--label", "T", "--label", "S"]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "explain.json").read_text())
    assert [c["label"] for c in record["columns"]] == ["T", "S"]
    assert [c["shown"] for c in record["columns"]] == [{"stage": 1, "block": 1}] * 2
    assert (record["stage"], record["block"]) == (1, 1)
    # --test-span 4: the 2-frame student sees the first and last of the 4-frame test view
    assert record["columns"][1]["span"] == 4 and record["columns"][1]["frames"] == [3, 26]
    assert record["columns"][0]["span"] is None  # 4 frames of a 4-frame span: plain views
    assert "T: " in res.output and "S: " in res.output
    # outputs exist: refused without --overwrite, replaced with it
    again = _cli(*args)
    assert again.exit_code == 1 and again.output.count("\n") == 1
    assert again.output.startswith(f"Error: {out / 'modulators.png'}: exists; pass --overwrite")
    assert _cli(*args, "--overwrite").exit_code == 0


@pytest.mark.parametrize("case", ["broken video", "no classes", "no stage", "no block",
                                  "labels", "short span"])
def test_command_errors_are_one_line(setup, tmp_path, case):
    d = setup["dir"]
    video, ckpt = setup["video"], d / "student" / "best.pt"
    extra: list = []
    if case == "broken video":
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"\x00\x01 not a video" * 100)
        expected = f"Error: failed to decode {video}: "
    elif case == "no classes":
        ckpt = tmp_path / "bare.pt"
        save_checkpoint(ckpt, setup["student"])
        expected = f"Error: {ckpt}: has no class list"
    elif case == "no stage":
        extra = ["--stage", "5"]
        expected = f"Error: {ckpt}: stage 5 does not exist; the model has stages 1-4"
    elif case == "no block":
        extra = ["--block", "2"]
        expected = f"Error: {ckpt}: block 2 does not exist in stage 4"
    elif case == "labels":
        extra = ["--label", "a", "--label", "b"]
        expected = "Error: 2 labels for 1 checkpoints"
    else:
        extra = ["--test-span", "1"]
        expected = f"Error: {ckpt}: a test span of 1 frames cannot hold the model's 2 frames"
    res = _cli(video, "--checkpoint", ckpt, "--out", tmp_path / "o", *extra)
    assert res.exit_code == 1, res.output
    assert res.output.count("\n") == 1 and res.output.startswith(expected), res.output
    assert not (tmp_path / "o" / "explain.json").exists()
