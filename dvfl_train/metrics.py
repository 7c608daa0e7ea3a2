"""Classification metrics: top-k, per-class accuracy and the confusion matrix.

Ranks are defined without help from ``torch.topk``, whose order among equal scores is unspecified,
by the one rule of ``dvfl_cache.topk`` (also the cache's teacher accuracy): a class ranks above
another if its score is higher, or equal with a lower class index (the order a stable descending
sort gives). So the prediction is the first maximal class (``argmax``), and results are identical
on every device and every run. Scores may be logits or probabilities:
softmax does not change the order. NaN scores are refused, since they compare false to everything
and would otherwise count as correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dvfl_cache.topk import rank_of_target
from dvfl_cache.topk import topk_correct as _topk_correct

__all__ = ["AccuracyReport", "accuracy_report", "topk_correct"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor,
                 ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose true class is among the k best, for each k in ``ks``.

    A k larger than the number of classes counts every sample (top-5 of 3 classes is 100%).
    The rule is ``dvfl_cache.topk``'s, shared with the cache's teacher accuracy.
    """
    return _topk_correct(_numpy(logits), _numpy(target), ks)


@dataclass(frozen=True, eq=False)
class AccuracyReport:
    """Accuracies as fractions in [0, 1].

    ``per_class[c]`` is the recall of class c (NaN when class c has no samples);
    ``confusion[i, j]`` counts samples of true class i predicted as class j (rows are the truth).
    """

    count: int
    top1: float
    top5: float
    per_class: np.ndarray   # float64 (C,)
    confusion: np.ndarray   # int64 (C, C)

    @property
    def mean_class_accuracy(self) -> float:
        """Mean of per-class accuracy over the classes that have samples."""
        return float(np.nanmean(self.per_class))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN per-class entries become null."""
        return {
            "count": self.count,
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "per_class": [None if np.isnan(a) else float(a) for a in self.per_class],
            "confusion": self.confusion.tolist(),
        }


def accuracy_report(probs_or_logits: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                    num_classes: int) -> AccuracyReport:
    """Top-1, top-5, per-class accuracy and confusion matrix of (N, C) scores vs (N,) labels."""
    scores = torch.as_tensor(probs_or_logits).detach().cpu()
    labels = torch.as_tensor(targets).cpu().numpy()
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"scores must be (N, {num_classes}), got {tuple(scores.shape)}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"targets must be ({scores.shape[0]},), got {labels.shape}")
    if scores.shape[0] == 0:
        raise ValueError("no predictions to score")
    rank = rank_of_target(_numpy(scores), labels)
    labels = labels.astype(np.int64)
    pred = scores.argmax(dim=1).numpy()  # first maximal class: the rank-0 class by our rule
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / support, np.nan)
    n = int(labels.shape[0])
    return AccuracyReport(count=n, top1=float((rank < 1).sum() / n),
                          top5=float((rank < 5).sum() / n), per_class=per_class.astype(np.float64),
                          confusion=confusion)


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)
