"""Distilling from an ensemble: several caches of different teachers over the same views (the
target here; the teacher source is teachers.EnsembleTeacher).

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

# The rule lives beside the cache's epoch plan, so the public CachedClips combines alike.
from dvfl_cache.teacher_mix import TEACHER_MIXES, combine_logits

__all__ = ["TEACHER_MIXES", "combine_logits"]
