"""What a shard must hold before it is written: its arrays (coded fields encoded, shapes,
dtypes, the row layout, 0/1 flags, labels) and its failure records (every invalid row belongs to
a listed video or is a listed row). Kept apart from the store's reading and writing so each
stays one concept; `CacheWriter.write_shard` calls these and writes nothing they refuse."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from dvfl_cache.cache import codecs
from dvfl_cache.cache.format import CacheMeta
from dvfl_cache.errors import CacheError

__all__ = ["check_failures", "check_shard_arrays", "json_record"]


def check_shard_arrays(meta: CacheMeta, where: str, rows: range,
                       arrays: Mapping[str, np.ndarray]
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """A shard's arrays as they will be stored (coded fields encoded, dtypes and shapes
    checked, the row layout and flags checked) and the codec error measured on them."""
    arrays, measured = _encode_coded(meta, arrays, len(rows), where)
    spec = meta.row_arrays()
    missing, extra = sorted(set(spec) - set(arrays)), sorted(set(arrays) - set(spec))
    if missing or extra:
        parts = ([f"missing arrays {missing}"] if missing else []) + \
            ([f"unexpected arrays {extra}"] if extra else [])
        raise CacheError(f"{where}: {', '.join(parts)}")
    out: dict[str, np.ndarray] = {}
    for name, (dtype, trail) in spec.items():
        a = np.asarray(arrays[name])
        if a.shape != (len(rows), *trail):
            raise CacheError(f"{where}: array '{name}' has shape {a.shape}, expected "
                             f"{(len(rows), *trail)}")
        if a.dtype == np.bool_:
            a = a.astype(np.uint8)
        if not np.can_cast(a.dtype, dtype, casting="same_kind"):
            raise CacheError(f"{where}: array '{name}' has dtype {a.dtype}, expected {dtype}")
        with np.errstate(over="ignore"):  # float16 overflow is reported just below
            b = np.ascontiguousarray(a, dtype=dtype)
        if dtype.kind in "iu" and not np.array_equal(a, b):
            raise CacheError(f"{where}: array '{name}' has values outside {dtype}")
        if dtype.kind == "f" and not np.isfinite(b).all():
            hint = (" (beyond the float16 range; build with --dtype float32)"
                    if np.isfinite(a).all() else "")
            raise CacheError(f"{where}: array '{name}' has non-finite values{hint}")
        out[name] = b
    r = np.arange(rows.start, rows.stop)
    V = meta.num_videos
    if not (np.array_equal(out["video"], r % V) and np.array_equal(out["view"], r // V)):
        raise CacheError(f"{where}: 'video'/'view' do not follow the row layout "
                         "row = view * num_videos + video")
    for name in ("valid", "flip", "gray", "partner_flip", "partner_gray"):
        if name in out and out[name].max(initial=0) > 1:
            raise CacheError(f"{where}: array '{name}' must hold 0 or 1")
    if out["label"].min(initial=0) < 0 or out["label"].max(initial=0) >= meta.num_classes:
        raise CacheError(f"{where}: labels outside [0, {meta.num_classes})")
    return out, measured


def _encode_coded(meta: CacheMeta, arrays: Mapping[str, np.ndarray], n: int, where: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Replace each coded field's float values by its codec's stored parts, and measure what
    that costs on the valid rows: {field: {"rows": n, "kl_worst"/"kl_mean": {tau: KL}} for
    logits, {"rows": n, "cos_worst", "cos_mean"} for features}."""
    out = dict(arrays)
    errors: dict[str, Any] = {}
    valid = np.asarray(arrays.get("valid", np.zeros(0))).astype(bool)
    for name, (_dtype, trail) in meta.value_arrays().items():
        codec = meta.codec(name)
        if codec is None or name not in out:
            continue  # stored as is, or given as parts (checked with the other arrays)
        parts = meta.coded_parts(name)
        given = sorted(set(parts) & set(out))
        if given:
            raise CacheError(f"{where}: give either '{name}' or its parts {given}, not both")
        values = np.asarray(out.pop(name))
        if values.shape != (n, *trail):
            raise CacheError(f"{where}: array '{name}' has shape {values.shape}, expected "
                             f"{(n, *trail)}")
        try:
            encoded = codecs.encode(codec, values)
        except codecs.CodecError as e:
            raise CacheError(f"{where}: array '{name}': {e}") from None
        out.update({f"{name}_{part}": a for part, a in encoded.items()})
        if valid.shape == (n,) and valid.any():
            ref = values[valid].astype(np.float32)
            dec = codecs.decode(codec, {p: a[valid] for p, a in encoded.items()})
            err = (codecs.kl_error(ref, dec) if name == "logits"
                   else codecs.cosine_error(ref, dec))
            errors[name] = {"rows": int(valid.sum()), **err}
    return out, errors or None


def json_record(path: str, s: int, value: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise CacheError(f"{path}: shard {s}: storage error record is not JSON ({e})") from None


def _is_int(v: Any) -> bool:
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))


def check_failures(path: str, s: int, failures: Iterable[Mapping[str, Any]], rows: range,
                    video: np.ndarray, valid: np.ndarray) -> list[dict[str, Any]]:
    where = f"{path}: shard {s}"
    records: list[dict[str, Any]] = []
    for f in failures:
        v = f.get("video") if isinstance(f, Mapping) else None
        if not _is_int(v):
            raise CacheError(f"{where}: failure record {f!r} needs an integer 'video'")
        if not isinstance(f.get("reason"), str) or not f["reason"]:
            raise CacheError(f"{where}: failure record {f!r} needs a non-empty 'reason'")
        rec = {**f, "video": int(v)}
        if "row" in f:
            if not (_is_int(f["row"]) and _is_int(f.get("partner"))):
                raise CacheError(f"{where}: row failure record {f!r} needs integer 'row' and "
                                 "'partner'")
            rec.update(row=int(f["row"]), partner=int(f["partner"]))
        try:
            json.dumps(rec, allow_nan=False)
        except (TypeError, ValueError):
            raise CacheError(f"{where}: failure record {f!r} is not JSON") from None
        if "row" in rec:
            r = rec["row"]
            if r not in rows or video[r - rows.start] != rec["video"]:
                raise CacheError(f"{where}: failure record for row {r} of video {v}, which is "
                                 "not a row of this shard")
            if valid[r - rows.start]:
                raise CacheError(f"{where}: row {r} is recorded as failed but is valid")
            records.append(rec)
            continue
        sel = video == int(v)
        if not sel.any():
            raise CacheError(f"{where}: failure record for video {v}, which has no rows here")
        if valid[sel].any():
            raise CacheError(f"{where}: video {v} is recorded as failed but has valid rows")
        records.append(rec)
    failed = {r["video"] for r in records if "row" not in r}
    failed_rows = {r["row"] for r in records if "row" in r}
    bad = np.flatnonzero(valid == 0)
    unexplained = sorted({int(video[i]) for i in bad if int(video[i]) not in failed
                          and rows.start + int(i) not in failed_rows})
    if unexplained:
        raise CacheError(f"{where}: videos {unexplained[:10]} have invalid rows but no failure "
                         "record saying why")
    return records
