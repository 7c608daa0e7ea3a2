"""topk_correct and accuracy_report on hand-computed examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dvfl_train.metrics import accuracy_report, topk_correct

# 5 samples, 4 classes. Rank of the true class per row: 0, 2, 1, 3, 0.
LOGITS = torch.tensor([
    [5.0, 1.0, 0.0, -1.0],   # true 0 -> rank 0, predicted 0
    [0.0, 3.0, 1.0, 2.0],    # true 2 -> behind 1 and 3: rank 2, predicted 1
    [0.1, 0.3, 0.2, 0.0],    # true 2 -> behind 1: rank 1, predicted 1
    [4.0, 3.0, 2.0, 1.0],    # true 3 -> rank 3, predicted 0
    [0.0, 0.0, 0.0, 9.0],    # true 3 -> rank 0, predicted 3
])
TARGET = torch.tensor([0, 2, 2, 3, 3])


def test_topk_counts():
    assert topk_correct(LOGITS, TARGET, ks=(1, 2, 3, 4)) == {1: 2, 2: 3, 3: 4, 4: 5}
    assert topk_correct(LOGITS, TARGET) == {1: 2, 5: 5}  # k beyond C counts everything


def test_ties_rank_lower_class_first():
    scores = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 2.0]])
    # equal scores: class 0 ranks before class 1, and 0 before 1 before 2
    assert topk_correct(scores, torch.tensor([0, 1, 2]), ks=(1, 2)) == {1: 1, 2: 2}
    rep = accuracy_report(scores, torch.tensor([0, 1, 2]), 3)
    assert rep.confusion.tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]


def test_accuracy_report_hand_computed():
    rep = accuracy_report(LOGITS, TARGET, 4)
    assert rep.count == 5
    assert rep.top1 == pytest.approx(2 / 5)
    assert rep.top5 == 1.0
    assert rep.confusion.dtype == np.int64
    # rows are the true class, columns the predicted one
    assert rep.confusion.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1]]
    assert rep.per_class[0] == 1.0 and rep.per_class[2] == 0.0 and rep.per_class[3] == 0.5
    assert math.isnan(rep.per_class[1])  # no samples of class 1
    assert rep.mean_class_accuracy == pytest.approx(0.5)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["per_class"] == [1.0, None, 0.0, 0.5]
    assert d["confusion"] == rep.confusion.tolist()


def test_top5_with_more_classes():
    scores = torch.arange(8.0).repeat(3, 1)  # class 7 best, class 0 worst in every row
    rep = accuracy_report(scores, torch.tensor([7, 3, 2]), 8)  # ranks 0, 4, 5
    assert rep.top1 == pytest.approx(1 / 3)
    assert rep.top5 == pytest.approx(2 / 3)


def test_numpy_probabilities_give_the_same_report():
    probs = torch.softmax(LOGITS, dim=1).numpy()
    a = accuracy_report(LOGITS, TARGET, 4)
    b = accuracy_report(probs, TARGET.numpy(), 4)
    assert (a.top1, a.top5) == (b.top1, b.top5)
    assert np.array_equal(a.confusion, b.confusion)
    assert np.array_equal(a.per_class, b.per_class, equal_nan=True)


@pytest.mark.parametrize("scores, target, match", [
    (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), "NaN"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), r"in \[0, 3\)"),
    (torch.zeros(2, 3), torch.tensor([0, -1]), r"in \[0, 3\)"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer"),
    (torch.zeros(2, 3), torch.tensor([0]), "target"),
])
def test_bad_inputs(scores, target, match):
    with pytest.raises(ValueError, match=match):
        topk_correct(scores, target)
    with pytest.raises(ValueError, match=match):
        accuracy_report(scores, target, 3 if scores.shape[1] == 3 else 2)


def test_report_checks_class_count_and_emptiness():
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        accuracy_report(LOGITS, TARGET, 5)
    with pytest.raises(ValueError, match="no predictions"):
        accuracy_report(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 4)
