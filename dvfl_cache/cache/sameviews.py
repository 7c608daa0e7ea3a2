"""Stores over the same views: `build --views-from STORE` (another teacher on exactly STORE's
views and mixes) and the check that two stores' view columns are equal.

Why by construction and then by comparison: a view is a pure function of (sampler, seed,
video, view number) and a mix of (mix seed, video, view), so taking STORE's sampler, seed,
mixing, frames, views per video and shard size makes the same views; the column comparison
(streamed shard by shard) then proves it, and refuses in one line naming the first column that
differs, for stores built apart (an ensemble's teachers must score the same clips).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dvfl_cache.cache.build_config import recorded_settings
from dvfl_cache.cache.format import CacheMeta
from dvfl_cache.cache.store import CacheReader
from dvfl_cache.errors import CacheError

__all__ = ["VALUE_COLUMNS", "check_same_views", "first_view_difference", "views_from_config"]

# Per-row columns that are the teacher's output or bookkeeping, not the view.
VALUE_COLUMNS = frozenset({"logits", "features", "logits_codes", "logits_params",
                           "features_codes", "features_params", "valid"})


def views_from_config(cfg: Any, store: str, storage_options: dict | None = None, *,
                      index: Any = None) -> Any:
    """`cfg` (a BuildConfig) with every setting that decides the views taken from `store`.

    Refused here, before a teacher is loaded or a byte written: `store` as the build's own
    --out (--overwrite would replace the views it reads), and, given the build's `index`, a
    store of another dataset, split, subset, index or class list (its views are of other
    videos; the column check after the build would only say so once the teacher had run over
    every view)."""
    if _same_place(cfg.out, store):
        raise CacheError(f"--out {cfg.out} is the --views-from store: a store cannot be "
                         "rebuilt over its own views; write the new teacher's store elsewhere")
    reader = CacheReader(store, storage_options=storage_options)
    if index is not None:
        try:
            reader.check_compatible(dataset=index)
        except CacheError as exc:  # "STORE: cache built for another run: WHAT DIFFERS"
            raise CacheError(f"--views-from {exc}; its views are of other videos than this "
                             "build's, so nothing was built") from None
    meta = reader.meta
    keep = {"dtype", "features"}  # the new teacher's storage is its own
    rec = {k: v for k, v in recorded_settings(meta).items() if k not in keep}
    return dataclasses.replace(cfg, **rec, views_per_video=meta.views_per_video)


def _same_place(a: str, b: str) -> bool:
    """Whether two store addresses name one store (local paths resolved, URLs as written)."""
    import os

    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _layout_difference(a: CacheMeta, b: CacheMeta) -> str | None:
    for what, x, y in (("num_videos", a.num_videos, b.num_videos),
                       ("views_per_video", a.views_per_video, b.views_per_video),
                       ("num_frames", a.num_frames, b.num_frames),
                       ("dataset index digest", a.dataset.index_digest, b.dataset.index_digest)):
        if x != y:
            return f"{what} ({x} vs {y})"
    return None


def first_view_difference(a: CacheReader, b: CacheReader, *, chunk_rows: int = 1 << 16
                          ) -> str | None:
    """The first view column (and row) where two complete stores differ, or None.

    Reads `chunk_rows` rows of one column at a time: memory does not grow with the store.
    """
    layout = _layout_difference(a.meta, b.meta)
    if layout:
        return layout
    cols_a = [c for c in a.meta.row_arrays() if c not in VALUE_COLUMNS]
    cols_b = [c for c in b.meta.row_arrays() if c not in VALUE_COLUMNS]
    for c in cols_a:
        if c not in cols_b:
            return f"column '{c}' (only in {a.location})"
    for c in cols_b:
        if c not in cols_a:
            return f"column '{c}' (only in {b.location})"
    for c in cols_a:
        for start in range(0, a.num_rows, chunk_rows):
            stop = min(start + chunk_rows, a.num_rows)
            x, y = a.read(c, start, stop), b.read(c, start, stop)
            if x.shape != y.shape or x.dtype != y.dtype:
                return f"column '{c}' ({x.dtype}{x.shape[1:]} vs {y.dtype}{y.shape[1:]})"
            rows = np.flatnonzero((x != y).reshape(len(x), -1).any(axis=1))
            if len(rows):
                return f"column '{c}' at row {start + int(rows[0])}"
    return None


def check_same_views(a: CacheReader, b: CacheReader) -> None:
    """Refuse, in one line naming the first differing column, stores over different views."""
    diff = first_view_difference(a, b)
    if diff is not None:
        raise CacheError(f"{a.location} and {b.location} are not over the same views: "
                         f"{diff} differs")
