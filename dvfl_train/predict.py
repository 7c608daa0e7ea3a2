"""Top-k classes of one video file, with the same deterministic test views as evaluation.

The video's score is the mean softmax over its views, computed exactly as ``evaluate`` does for
a video of a dataset, so a file predicted here and the same file in an evaluation get the same
probabilities.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from dvfl_cache.data.decode import short_video, video_info
from dvfl_cache.data.index import DatasetIndex, VideoEntry
from dvfl_cache.data.views import TestView
from dvfl_cache.errors import VideoDecodeError
from dvfl_train.evaluate import ViewLayout, score_videos

__all__ = ["Prediction", "predict_video"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Prediction:
    """``top``: (class name, probability) best first; ``probs``: the full (C,) mean softmax."""

    path: str
    top: tuple[tuple[str, float], ...]
    probs: np.ndarray
    views: str
    num_views: int


def predict_video(model: torch.nn.Module, path: str | os.PathLike, view: TestView, *,
                  classes: tuple[str, ...] | list[str] | None = None,
                  layout: ViewLayout = ViewLayout(), topk: int = 5, batch_size: int = 8,
                  device: str | torch.device = "cpu", amp: bool = False,
                  threads: int = 0) -> Prediction:
    """Mean softmax over the video's ``layout`` test views and its ``topk`` classes.

    ``model`` must be on ``device``; the scores come from evaluation's own loop
    (``score_videos``) over a one-video index. Without ``classes`` the names are "class <i>".
    Ties rank the lower class index first (a stable sort), as in ``dvfl_train.metrics``. A file
    that cannot be decoded raises ``VideoDecodeError`` naming it.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if classes is not None and num_classes and len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {num_classes} outputs")
    if not num_classes:  # a bare callable: learn the width from one forward
        num_classes = len(classes) if classes is not None else _width(model, view, device)
    try:  # one line if the file cannot give the clip's frames (the scores stand: eval's rule)
        short = short_video(path, video_info(path), view.span or view.num_frames)
    except VideoDecodeError:
        short = None  # scoring below names the failure
    if short:
        log.warning("%s", short)
    one = DatasetIndex(kind="file", split=0, subset="predict",
                       classes=tuple(f"class {i}" for i in range(num_classes)),
                       videos=(VideoEntry(path=str(path), label=0, video_id=str(path)),), root="")
    (probs,), _, failed = score_videos([model], one, view, layout=layout,
                                       num_classes=num_classes, batch_size=batch_size,
                                       device=device, amp=amp, threads=threads)
    if failed:
        raise VideoDecodeError(str(path), failed[0][1])
    probs = probs[0]
    names = tuple(classes) if classes is not None else one.classes
    order = np.argsort(-probs, kind="stable")[:min(topk, num_classes)]
    top = tuple((names[i], float(probs[i])) for i in order)
    log.info("%s: %s (%s)", path, top[0][0], layout.describe())
    return Prediction(path=str(path), top=top, probs=probs, views=layout.label,
                      num_views=layout.num_views)


def _width(model: torch.nn.Module, view: TestView, device: str | torch.device) -> int:
    x = torch.zeros(1, view.num_frames, 3, view.size, view.size, device=torch.device(device))
    with torch.inference_mode():
        return int(model(x).shape[1])
