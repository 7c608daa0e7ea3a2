"""`verify --recompute N`: run the teacher again on N stored rows and compare its logits.

Checksums prove the bytes are the ones written; only a recompute proves they are the teacher's
output on the clip the row describes, which is what a user of a shared cache has to trust
(mixed rows most of all: their clip is rebuilt from two videos, two view records, an operation,
lambda and box). Rows are rebuilt exactly as a student's loader does (stored records ->
`replay_clip`), so a pass also proves the replay path.

The tolerance depends on how the stored logits were made and stored: the teacher's recorded
precision (float32 on a CPU is deterministic to ~1e-6; a GPU under bfloat16 autocast is only
good to a few 1e-2) and the stored dtype (float16 rounds to 2^-11 relative).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dvfl_cache.cache.format import CacheMeta
from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

# (atol, rtol) per teacher precision: |recomputed - stored| <= atol + rtol * |stored|.
_CPU_F32 = (1e-4, 0.0)
_GPU_F32 = (1e-3, 1e-3)      # cuDNN may use TF32 convolutions
_AUTOCAST = (5e-2, 2 ** -6)  # bfloat16 keeps 8 mantissa bits
_FLOAT16_RTOL = 2 ** -11     # float16 storage: half an ulp


def _precision_tol(p: Mapping[str, Any] | None) -> tuple[float, float]:
    if p is None:  # version-1 stores did not record it; GPU builds ran under bfloat16
        return _AUTOCAST
    if p.get("autocast"):
        return _AUTOCAST
    return _CPU_F32 if p.get("device") == "cpu" else _GPU_F32


def recompute_tolerance(meta: CacheMeta, device_type: str = "cpu") -> tuple[float, float]:
    """(atol, rtol) allowed between stored logits and a float32 recompute on `device_type`."""
    stored = _precision_tol(meta.teacher_precision)
    now = _precision_tol({"device": device_type, "autocast": None})
    atol, rtol = max(stored[0], now[0]), max(stored[1], now[1])
    if meta.dtype == "float16":
        rtol += _FLOAT16_RTOL
    return atol, rtol


def pick_rows(valid: np.ndarray, mixed: np.ndarray | None, n: int) -> np.ndarray:
    """n valid rows spread evenly over the store; with mixed rows, half of them mixed."""
    ok = np.flatnonzero(valid)
    if n < 1 or len(ok) == 0:
        return np.zeros(0, np.int64)

    def spread(rows: np.ndarray, k: int) -> np.ndarray:
        k = min(k, len(rows))
        return rows[np.unique(np.linspace(0, len(rows) - 1, k).round().astype(np.int64))] \
            if k else rows[:0]

    if mixed is None or not mixed[ok].any() or mixed[ok].all():
        return spread(ok, n)
    m, u = ok[mixed[ok]], ok[~mixed[ok]]
    km = max(1, n // 2)
    return np.sort(np.concatenate([spread(m, km), spread(u, n - km)]))


def _read_rows(reader: CacheReader, names: list[str], rows: np.ndarray
               ) -> dict[str, np.ndarray]:
    """`rows` of each array, reading each shard that holds some of them once."""
    per = reader.meta.views_per_shard
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for s in np.unique(rows // per).tolist():
        span = reader.shard_rows(s)
        sel = rows[rows // per == s] - span.start
        for k in names:
            parts[k].append(reader.read(k, span.start, span.stop)[sel])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _replayed_teacher(teacher: str, m: Any) -> dict[str, Any]:
    """load_teacher's options as the store recorded them: a registry teacher's constructor
    options; an hf:/py: teacher's factory options, input layout/normalisation and class
    mapping, so the recompute feeds the model exactly what the build did."""
    from dvfl_cache.models.registry import is_foreign

    config = m.teacher.config
    if os.path.isfile(teacher):
        return {"opts": None}
    if not is_foreign(teacher):
        return {"opts": config}
    stored = config.get("input") or {}
    return {"opts": config.get("options") or {}, "size": stored.get("size"),
            "teacher_input": stored or None,
            "classes": tuple(m.dataset.classes), "class_map": config.get("class_map")}


def recompute(store: str | os.PathLike, index: DatasetIndex, *, teacher: str, n: int,
              weights: str | None = None, device: str | None = None, batch_size: int = 8,
              progress: Callable[[int], None] | None = None,
              storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-run the teacher on `n` rows; raise CacheError naming the worst row above tolerance."""
    import torch

    from dvfl_cache.cache.build import load_teacher
    from dvfl_cache.data.dataset import replay_clip
    from dvfl_cache.data.mix import mixes_from_arrays
    from dvfl_cache.data.transforms import to_float
    from dvfl_cache.data.views import views_from_arrays
    from dvfl_cache.runtime import resolve_device

    reader = CacheReader(store, storage_options=storage_options)
    m = reader.meta
    reader.check_compatible(dataset=index)
    if not reader.complete:
        raise CacheError(f"{reader.location}: incomplete store; finish it with --resume first")
    size = m.sampler.params.get("size")
    if not isinstance(size, int):
        raise CacheError(f"{reader.location}: sampler.params has no teacher input size")
    dev = resolve_device(device)
    random_weights = weights is None and m.teacher.weights_sha256 is None \
        and not os.path.isfile(teacher)
    model, tinfo = load_teacher(teacher, weights=weights, random_weights=random_weights,
                                num_classes=m.num_classes, num_frames=m.num_frames,
                                seed=m.sampler.seed, **_replayed_teacher(teacher, m))
    reader.check_compatible(teacher=tinfo)
    model.to(dev)

    valid = reader.read("valid", 0, m.num_rows) == 1
    mixed = reader.read("mix_op", 0, m.num_rows) > 0 if m.mix is not None else None
    rows = pick_rows(valid, mixed, n)
    if len(rows) == 0:
        raise CacheError(f"{reader.location}: no valid rows to recompute")
    names = [k for k in m.row_arrays() if k not in ("features", "label", "valid")]
    recs = _read_rows(reader, names, rows)
    stored = recs.pop("logits").astype(np.float32)
    views = views_from_arrays(recs)
    mixes = mixes_from_arrays(recs, recs["view"]) if m.mix is not None else [None] * len(rows)

    out = np.zeros_like(stored)
    for start in range(0, len(rows), batch_size):
        clips = []
        for view, mix in zip(views[start:start + batch_size], mixes[start:start + batch_size]):
            clips.append(to_float(replay_clip(index, view, mix, size)))
        with torch.inference_mode():
            logits = model(torch.stack(clips).to(dev)).float().cpu().numpy()
        out[start:start + len(clips)] = logits
        if progress is not None:
            progress(len(clips))

    atol, rtol = recompute_tolerance(m, dev.type)
    diff = np.abs(out - stored)
    excess = diff - (atol + rtol * np.abs(stored))
    worst = int(np.unravel_index(np.argmax(excess), excess.shape)[0])
    result = {"store": str(reader.location), "rows": len(rows),
              "mixed_rows": int(sum(x is not None for x in mixes)),
              "max_abs_diff": float(diff.max()), "atol": atol, "rtol": rtol,
              "teacher_precision": m.teacher_precision, "worst_row": int(rows[worst])}
    if excess.max() > 0:
        mix = mixes[worst]
        what = f"mixed ({mix.op} with video {mix.partner.video})" if mix else "unmixed"
        raise CacheError(
            f"{reader.location}: recomputed logits differ from the stored ones by up to "
            f"{diff.max():.3g} (row {int(rows[worst])}, video {views[worst].video}, {what}; "
            f"tolerance {atol:g} + {rtol:g} x |logit| for a {m.dtype} store from a teacher "
            f"run as {m.teacher_precision or 'unrecorded precision'})")
    return result
