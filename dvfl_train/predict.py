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

from dvfl_train.evaluate import ViewLayout, load_video_views, test_sampler

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


def predict_video(model: torch.nn.Module, path: str | os.PathLike, *,
                  classes: tuple[str, ...] | list[str] | None = None, clips: int = 1,
                  crops: int = 1, num_frames: int, size: int, temporal: str = "segment",
                  stride: int = 4, span: int | None = None, topk: int = 5, batch_size: int = 8,
                  device: str | torch.device = "cpu", amp: bool = False,
                  threads: int = 0) -> Prediction:
    """Mean softmax over the video's clips x crops test views and its ``topk`` classes.

    ``model`` must be on ``device``. Without ``classes`` the names are "class <i>". Ties rank the
    lower class index first (a stable sort), as in ``dvfl_train.metrics``. A file that cannot be
    decoded raises ``VideoDecodeError`` naming it.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    layout = ViewLayout(clips, crops)
    sampler = test_sampler(clips=clips, crops=crops, num_frames=num_frames, temporal=temporal,
                           stride=stride, span=span)
    views = load_video_views(path, sampler, size, threads=threads)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = []
            for start in range(0, views.shape[0], batch_size):
                x = views[start:start + batch_size].to(device)
                with torch.autocast("cuda", dtype=torch.bfloat16,
                                    enabled=amp and device.type == "cuda"):
                    logits = model(x)
                parts.append(logits.float().softmax(dim=1).cpu())
    finally:
        model.train(was_training)
    probs = torch.cat(parts).mean(dim=0).numpy()
    num_classes = probs.shape[0]
    if classes is None:
        names = tuple(f"class {i}" for i in range(num_classes))
    elif len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {num_classes} outputs")
    else:
        names = tuple(classes)
    order = np.argsort(-probs, kind="stable")[:min(topk, num_classes)]
    top = tuple((names[i], float(probs[i])) for i in order)
    log.info("%s: %s (%s)", path, top[0][0], layout.describe())
    return Prediction(path=str(path), top=top, probs=probs, views=layout.label,
                      num_views=layout.num_views)
