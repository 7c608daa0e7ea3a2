"""How several teachers' cached logits make one target (an ensemble of caches of the same
views, `dvfl-cache build --views-from`), declared once for the trainer's --teacher-mix choices
and the public CachedClips. Light on purpose: settings import it to build their options."""

from __future__ import annotations

__all__ = ["TEACHER_MIXES", "combine_logits"]

TEACHER_MIXES = ("mean-logits", "mean-probs")


def combine_logits(blocks: list[np.ndarray], mix: str) -> np.ndarray:
    """One (N, C) float32 target from K teachers' (N, C) logits l_1..l_K.

    - ``mean-logits``: (1/K) sum_k l_k;
    - ``mean-probs``: log((1/K) sum_k softmax(l_k)), i.e. logits whose softmax is the mean of
      the teachers' probabilities at tau 1; the student's KD temperature then applies to it as
      to any teacher's logits (so one target serves every tau of a sweep).
    """
    if mix not in TEACHER_MIXES:
        raise ValueError(f"unknown teacher mix {mix!r}; known: {', '.join(TEACHER_MIXES)}")
    import numpy as np

    x = np.stack([np.asarray(b, np.float64) for b in blocks])
    if mix == "mean-logits":
        return x.mean(axis=0).astype(np.float32)
    x -= x.max(axis=2, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=2, keepdims=True)
    return np.log(p.mean(axis=0)).astype(np.float32)
