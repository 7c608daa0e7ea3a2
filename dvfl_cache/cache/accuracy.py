"""The teacher's accuracy on its own cached views: a fact about a store that `info` shows, the
dataset card records and `verify` checks against the card."""

from __future__ import annotations

from typing import Any

import numpy as np

from dvfl_cache.cache.store import CacheReader
from dvfl_cache.topk import topk_correct

__all__ = ["teacher_accuracy"]


def teacher_accuracy(reader: CacheReader) -> dict[str, Any]:
    """Top-1/top-5 of the stored logits against the stored labels, valid rows of done shards
    (ties: the lower class index ranks first, ``dvfl_cache.topk``), with the counts of valid
    rows and of all rows of done shards (a failed video's rows are not valid)."""
    n = c1 = c5 = done = 0
    for s in np.flatnonzero(reader.shard_done()).tolist():
        rows = reader.shard_rows(s)
        done += len(rows)
        valid = reader.read("valid", rows.start, rows.stop) == 1
        if not valid.any():
            continue
        logits = reader.read("logits", rows.start, rows.stop)[valid].astype(np.float32)
        labels = reader.read("label", rows.start, rows.stop)[valid]
        n += len(labels)
        finite = np.isfinite(logits).all(axis=1)  # a non-finite row is a miss, never a hit
        hits = topk_correct(logits[finite], labels[finite], ks=(1, 5))
        c1 += hits[1]
        c5 += hits[5]
    return {"valid_rows": n, "done_rows": done, "teacher_top1": c1 / n if n else None,
            "teacher_top5": c5 / n if n else None}
