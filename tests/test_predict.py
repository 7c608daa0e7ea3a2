"""Top-k prediction for one video file, and the `dvfl-train predict` command."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from conftest import write_counter_video
from dvfl_cache.data import DatasetIndex, VideoEntry
from dvfl_cache.models import create_model, save_checkpoint
from dvfl_train.cli import main
from dvfl_train.evaluate import TestView, ViewLayout, evaluate
from dvfl_train.predict import predict_video

FRAMES, SIZE, CLASSES = 2, 32, ("walk", "run", "jump", "sit")



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    net = create_model("vfl-nano", embed_dim=8, depths=[1, 1, 1, 1], num_frames=FRAMES,
                       img_size=SIZE, num_classes=4, drop_path_rate=0.0)
    with torch.no_grad():
        net.head.weight.mul_(20)
    return net.eval()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_counter_video(tmp_path_factory.mktemp("pred") / "clip.mp4", 12, codec="mpeg4")


class ConstantLogits(nn.Module):
    """Equal logits for every class: every probability is exactly 1/C."""

    training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 4)


@pytest.mark.parametrize("clips, crops", [(1, 1), (4, 3)])
def test_prediction_equals_evaluation_of_the_same_file(model, video, clips, crops):
    index = DatasetIndex(kind="list", split=1, subset="test", classes=CLASSES,
                         videos=(VideoEntry(path=video.name, label=0, video_id="clip"),),
                         root=str(video.parent))
    evaluated = evaluate(model, index, TestView(num_frames=FRAMES, size=SIZE),
                         layout=ViewLayout(clips, crops))
    pred = predict_video(model, video, TestView(num_frames=FRAMES, size=SIZE),
                         layout=ViewLayout(clips, crops), classes=CLASSES, topk=3)
    np.testing.assert_allclose(pred.probs, evaluated.probs[0], rtol=0, atol=1e-6)
    assert pred.probs.sum() == pytest.approx(1.0, abs=1e-6)
    order = np.argsort(-pred.probs)[:3]
    assert [name for name, _ in pred.top] == [CLASSES[i] for i in order]
    assert [p for _, p in pred.top] == [float(pred.probs[i]) for i in order]
    assert pred.num_views == clips * crops


def test_ties_rank_lower_class_first_and_topk_is_clamped(video):
    pred = predict_video(ConstantLogits(), video, TestView(num_frames=FRAMES, size=SIZE), topk=10)
    assert pred.top == tuple((f"class {i}", 0.25) for i in range(4))


def test_predict_refuses_wrong_class_names(model, video):
    with pytest.raises(ValueError, match="3 class names for a model with 4 outputs"):
        predict_video(model, video, TestView(num_frames=FRAMES, size=SIZE), classes=CLASSES[:3])


def test_predict_command_prints_topk(model, video, tmp_path):
    save_checkpoint(tmp_path / "m.pt", model, classes=list(CLASSES))
    res = CliRunner().invoke(main, ["predict", str(video), "--checkpoint", str(tmp_path / "m.pt"),
                                    "--views", "4x3", "--topk", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = re.findall(r"^\s*(\d)\. (\S+)\s+([0-9.]+)$", res.output, re.MULTILINE)
    expected = predict_video(model, video, TestView(num_frames=FRAMES, size=SIZE),
                             layout=ViewLayout(4, 3), classes=CLASSES, topk=2).top
    assert [(int(r), n, float(p)) for r, n, p in rows] == \
        [(i + 1, n, round(p, 4)) for i, (n, p) in enumerate(expected)]
    assert "4 clips x 3 crops" in res.output


def test_predict_command_without_class_names(model, video, tmp_path):
    save_checkpoint(tmp_path / "m.pt", model)
    res = CliRunner().invoke(main, ["predict", str(video), "--checkpoint", str(tmp_path / "m.pt"),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len(re.findall(r"^\s*\d\. class \d", res.output, re.MULTILINE)) == 4


def test_predict_command_undecodable_video_is_one_clean_line(model, tmp_path):
    save_checkpoint(tmp_path / "m.pt", model)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 definitely not a video" * 100)
    res = CliRunner().invoke(main, ["predict", str(bad), "--checkpoint", str(tmp_path / "m.pt"),
                                    "--device", "cpu"])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1
    assert res.output.startswith(f"Error: failed to decode {bad}: ")
