"""Distilling from an ensemble: several caches of different teachers over the same views.

Why caches and not models: each teacher ran once (`dvfl-cache build --views-from`); the
ensemble is a per-epoch combination of their blocks, no teacher runs during training. The
caches must hold the same views (checked column by column, refused in one line naming the
first differing column), or a student would be taught one clip's answer on another clip.

The combined target, per row, from teacher logits l_1..l_K:
- ``mean-logits``: (1/K) sum_k l_k;
- ``mean-probs``: log((1/K) sum_k softmax(l_k)), i.e. logits whose softmax is the mean of the
  teachers' probabilities at tau 1; the student's KD temperature then applies to it as to any
  teacher's logits (so one target serves every tau of a sweep).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from dvfl_cache.cache.sameviews import check_same_views
from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.index import DatasetIndex
from dvfl_train.train_data import EpochPlan, plan_epoch
from dvfl_train.teachers import CachedTeacher

__all__ = ["TEACHER_MIXES", "EnsembleTeacher", "combine_logits"]

log = logging.getLogger(__name__)

TEACHER_MIXES = ("mean-logits", "mean-probs")


def combine_logits(blocks: list[np.ndarray], mix: str) -> np.ndarray:
    """One (N, C) float32 target from K teachers' (N, C) logits (formulas in the docstring)."""
    if mix not in TEACHER_MIXES:
        raise ValueError(f"unknown teacher mix {mix!r}; known: {', '.join(TEACHER_MIXES)}")
    x = np.stack([np.asarray(b, np.float64) for b in blocks])
    if mix == "mean-logits":
        return x.mean(axis=0).astype(np.float32)
    x -= x.max(axis=2, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=2, keepdims=True)
    return np.log(p.mean(axis=0)).astype(np.float32)


class EnsembleTeacher(CachedTeacher):
    """CachedTeacher over K caches; rows invalid in any cache are left out of the epoch."""

    kind = "cached"

    def __init__(self, readers: list[CacheReader], *, mix: str, num_classes: int,
                 view_frames: int):
        if mix not in TEACHER_MIXES:
            raise ValueError(f"unknown teacher mix {mix!r}; known: {', '.join(TEACHER_MIXES)}")
        for other in readers[1:]:
            check_same_views(readers[0], other)
        super().__init__(readers[0], num_classes=num_classes, view_frames=view_frames)
        self.readers, self.mix = list(readers), mix

    def plan(self, epoch: int, index: DatasetIndex) -> EpochPlan:
        plans = [plan_epoch(epoch, index, reader=r, views=self.views) for r in self.readers]
        first = plans[0]
        ok = set(first.videos.tolist())
        for p in plans[1:]:
            ok &= set(p.videos.tolist())
        keep = [i for i, v in enumerate(first.videos.tolist()) if v in ok]
        invalid = sorted(set().union(*(p.invalid for p in plans)))
        logits = combine_logits([p.teacher_logits for p in plans], self.mix)
        plan = dataclasses.replace(first, videos=first.videos[keep],
                                   views=tuple(first.views[i] for i in keep),
                                   teacher_logits=logits, invalid=tuple(invalid))
        self.use_block(torch.from_numpy(logits))
        return plan
