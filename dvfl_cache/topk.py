"""Top-k accuracy with one tie rule, shared by cache inspection and student evaluation.

A class ranks above another if its score is higher, or equal with a lower class index (the order
a stable descending sort gives). So the top-1 prediction is the first maximal class
(``argmax``), ties never depend on the device, the library or the run, and the teacher accuracy
``dvfl-cache info`` reports is computed exactly as a student's. Plain numpy (no torch), since
``info`` must stay light. NaN scores are refused: they compare false to everything and would
otherwise count as correct.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["rank_of_target", "topk_correct"]


def rank_of_target(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's true class: higher scores, then equal scores at lower indices.

    Float16 scores are compared as float32 (exact). Raises ``ValueError`` on NaN or bad labels.
    """
    scores = np.asarray(scores)
    target = np.asarray(target)
    if scores.ndim != 2 or target.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, C) and target (N,), got {scores.shape} and "
                         f"{target.shape}")
    if target.size and not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"targets must be integer class indices, got dtype {target.dtype}")
    if target.size and (target.min() < 0 or target.max() >= scores.shape[1]):
        raise ValueError(f"targets must be in [0, {scores.shape[1]}), found "
                         f"{int(target.min())}..{int(target.max())}")
    if scores.dtype == np.float16:
        scores = scores.astype(np.float32)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    target = target.astype(np.int64)
    true = np.take_along_axis(scores, target[:, None], axis=1)
    classes = np.arange(scores.shape[1])
    ahead = (scores > true) | ((scores == true) & (classes[None, :] < target[:, None]))
    return ahead.sum(axis=1)


def topk_correct(scores: np.ndarray, target: np.ndarray,
                 ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """Rows whose true class is among the k best, for each k (k beyond C counts every row)."""
    ks = tuple(ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    rank = rank_of_target(scores, target)
    return {k: int((rank < k).sum()) for k in ks}
