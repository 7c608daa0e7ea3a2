"""`dvfl-cache extend`: add views V..V2-1 to a finished store, equal to a store built with V2.

Why it is cheap and safe: rows are `view * num_videos + video`, so new views append whole
epoch blocks at the end of every array, and shards are fixed-size row ranges, so every
complete shard file of the old store stays as it is (byte for byte). Only the last shard, when
partly filled, is rewritten: its old rows are copied from the store (never recomputed, so a
GPU teacher's rounding cannot change them) and its new rows computed.

The grow step, each part idempotent so a kill anywhere resumes by running extend again:
1. a marker `provenance/extend-<s>.json` says rows [start, keep) of the partial shard `s`
   are final (written before anything else changes, so a resume knows the old rows are real);
2. `shard_done[s]` is cleared (a reader never sees the shard while it is rewritten);
3. each array's zarr.json gets the new row count (readers accept arrays longer than the
   store's `num_rows`, see store.py);
4. the root zarr.json gets the new `views_per_video`, last, in one atomic write.
After that, extend is `build --resume` of the V2 store (same claims), except that the partial
shard's old rows are copied instead of computed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import zarr

from dvfl_cache.cache import codecs
from dvfl_cache.models.registry import is_foreign
from dvfl_cache.cache.build import BuildResult, _distributed, prepare, write_pending
from dvfl_cache.cache.build_config import BuildConfig, recorded_settings
from dvfl_cache.cache.claims import ShardClaims, put_atomic
from dvfl_cache.cache.format import PROVENANCE_ONLY, SHARD_DONE, CacheMeta, TeacherInfo
from dvfl_cache.cache.layout import CREATE_WAIT_S, PROVENANCE_GROUP, exists_fresh, layout_files
from dvfl_cache.cache.location import check_writable, open_writable, target_fs
from dvfl_cache.cache.store import CacheReader, CacheWriter
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.errors import CacheError
from dvfl_cache.failbudget import check_failed
from dvfl_cache.models.weights import STRUCTURAL_OPTIONS
from dvfl_cache.runtime import resolve_device

__all__ = ["extend_cache"]

log = logging.getLogger(__name__)

GROW_CLAIM = "grow"  # claims/grow/: who is growing the store (one extend at a time)


def _marker(root: str, s: int) -> str:
    return f"{root}/{PROVENANCE_GROUP}/extend-{s}.json"


def _read_marker(fs, root: str, s: int) -> int | None:
    """The end of the final old rows of shard `s`, or None when it has no marker."""
    path = _marker(root, s)
    if not exists_fresh(fs, path):
        return None
    try:
        return int(json.loads(fs.cat_file(path))["keep_stop"])
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{path}: unreadable extend marker ({e}); delete it and rebuild "
                         "the last shard with build --resume") from None


def _grow(path: str, so: dict | None, old: CacheMeta, new: CacheMeta) -> None:
    """Turn the V store at `path` into the V2 store `new` (the module docstring's steps)."""
    fs, root = target_fs(path, so)
    reader = CacheReader(path, storage_options=so)
    last = old.num_shards - 1
    partial = old.num_rows % old.views_per_shard != 0
    marker = _read_marker(fs, root, last) if partial else None
    pending = reader.pending_shards()
    if pending and not (pending == [last] and marker == old.num_rows):
        raise CacheError(f"{path}: the store is unfinished (shards {pending[:10]} pending); "
                         "finish it with `dvfl-cache build --resume` before extending it")
    if partial:
        put_atomic(fs, _marker(root, last), json.dumps(
            {"shard": last, "keep_stop": old.num_rows,
             "views_per_video": [old.views_per_video, new.views_per_video]}).encode())
        group = zarr.open_group(store=open_writable(path, so), mode="r+", zarr_format=3)
        group[SHARD_DONE][last] = 0
    for key, data in layout_files(new).items():
        if key == "zarr.json" or json.loads(data).get("node_type") != "array":
            continue
        put_atomic(fs, f"{root}/{key}", data)
    put_atomic(fs, f"{root}/zarr.json", layout_files(new)["zarr.json"])
    log.info("%s: grown from %d to %d views per video (%d -> %d shards)", path,
             old.views_per_video, new.views_per_video, old.num_shards, new.num_shards)


def _grow_once(path: str, so: dict | None, new: CacheMeta) -> None:
    """`_grow` by exactly one of the processes extending the store at once.

    Two identical extends started together both read the V store; the one that came second
    to the grow step found the store already grown (its new shards pending) and refused it as
    unfinished. The grow step is claimed like store creation (`GROW_CLAIM`): one grows, the
    others wait for its claim, read the store again and find it grown; then they all share the
    new shards through the usual shard claims."""
    fs, root = target_fs(path, so)
    with ShardClaims(fs, root, ttl_s=60.0) as claims:
        deadline = time.monotonic() + CREATE_WAIT_S
        while not claims.try_claim(GROW_CLAIM):
            if time.monotonic() > deadline:
                raise CacheError(f"{path}: another process has been growing this store for "
                                 f"{CREATE_WAIT_S:.0f} s; is it stuck?")
            time.sleep(0.1)
        try:
            now = CacheReader(path, storage_options=so).meta  # as it is now, not as it was
            if now.views_per_video < new.views_per_video:
                _grow(path, so, now, new)
            elif now.views_per_video > new.views_per_video:
                raise CacheError(f"{path}: another process extended the store to "
                                 f"{now.views_per_video} views per video meanwhile; "
                                 f"--views-per-video {new.views_per_video} would shrink it")
            else:
                log.info("%s: already grown to %d views per video by another process", path,
                         now.views_per_video)
        finally:
            claims.release(GROW_CLAIM)  # nobody waits for its expiry


def _merge_error(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None
                 ) -> dict[str, Any] | None:
    """Two per-shard storage_error records as one (worst: max; mean: weighted by rows)."""
    if not a or not b:
        return dict(a or b) if (a or b) else None
    out: dict[str, Any] = {}
    for field in set(a) | set(b):
        x, y = a.get(field), b.get(field)
        if not x or not y:
            out[field] = dict(x or y)
            continue
        n, m = int(x["rows"]), int(y["rows"])
        rec: dict[str, Any] = {"rows": n + m}
        for key in x:
            if key == "rows":
                continue
            if isinstance(x[key], Mapping):
                rec[key] = {t: (max(float(x[key][t]), float(y[key][t])) if key.endswith("_worst")
                                else (n * float(x[key][t]) + m * float(y[key][t])) / max(n + m, 1))
                            for t in x[key]}
            else:
                rec[key] = (max(float(x[key]), float(y[key])) if key.endswith("_worst")
                            else (n * float(x[key]) + m * float(y[key])) / max(n + m, 1))
        out[field] = rec
    return out


class _ExtendTarget:
    """The build loop's writer for an extended store: the partial shard's old rows [start,
    keep) are not computed again; `write_shard` puts them back (copied) before writing."""

    def __init__(self, writer: CacheWriter, keep: Mapping[int, int], fs, root: str,
                 storage_options: dict | None):
        self.writer, self.keep, self.fs, self.root = writer, dict(keep), fs, root
        self.meta = writer.meta
        self._so = storage_options

    def claims(self, **kw):
        return self.writer.claims(**kw)

    def is_done(self, s: int) -> bool:
        return self.writer.is_done(s)

    def pending_shards(self, **kw) -> list[int]:
        return self.writer.pending_shards(**kw)

    def shard_rows(self, s: int) -> range:
        rows = self.writer.shard_rows(s)
        return range(self.keep[s], rows.stop) if s in self.keep else rows

    def empty_shard(self, s: int, *, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        full = self.writer.empty_shard(s, labels=labels)
        cut = self.shard_rows(s).start - self.writer.shard_rows(s).start
        return {k: v[cut:] for k, v in full.items()}

    def write_shard(self, s: int, arrays: Mapping[str, np.ndarray],
                    failures: Iterable[Mapping[str, Any]] = (), *,
                    fp16_kl: Mapping[Any, float] | None = None) -> None:
        if s not in self.keep:
            self.writer.write_shard(s, arrays, failures, fp16_kl=fp16_kl)
            return
        rows, keep = self.writer.shard_rows(s), self.keep[s]
        reader = CacheReader(self.writer.path, storage_options=self._so)
        meta = self.meta
        new = dict(arrays)
        storage_error = None
        for name in list(new):
            codec = meta.codec(name)
            if codec is not None:  # the old rows are copied as stored parts: encode the new
                values = np.asarray(new.pop(name), np.float32)
                parts = codecs.encode(codec, values)
                new.update({f"{name}_{p}": a for p, a in parts.items()})
                valid = np.asarray(arrays["valid"]).astype(bool)
                if valid.any():
                    dec = codecs.decode(codec, {p: a[valid] for p, a in parts.items()})
                    err = (codecs.kl_error(values[valid], dec) if name == "logits"
                           else codecs.cosine_error(values[valid], dec))
                    storage_error = _merge_error(storage_error,
                                                 {name: {"rows": int(valid.sum()), **err}})
        merged = {name: np.concatenate([reader.read(name, rows.start, keep, allow_pending=True),
                                        np.asarray(new[name])])
                  for name in meta.row_arrays()}
        old = reader.shard_record(s) or {}
        old_video = merged["video"][:keep - rows.start]
        old_valid = merged["valid"][:keep - rows.start]  # a view: what follows updates merged
        # A video that decoded at build time and fails now: a failure record covers every row
        # of its video in the shard, so its old rows here are marked missing with it.
        gone = np.isin(old_video, [f["video"] for f in failures if "row" not in f]) & (
            old_valid == 1)
        if gone.any():
            log.warning("%s: shard %d: video(s) %s failed to decode now but not when the store "
                        "was built; their %d old row(s) in this shard are marked missing too",
                        self.writer.path, s, sorted(set(old_video[gone].tolist()))[:10],
                        int(gone.sum()))
            old_valid[gone] = 0
        kept = [f for f in old.get("failures", [])
                if ("row" in f and f["row"] < keep)
                or ("row" not in f and not old_valid[old_video == f["video"]].any()
                    and (old_video == f["video"]).any())]
        seen = {(f["video"], f.get("row")) for f in kept}
        records = kept + [f for f in failures if (f["video"], f.get("row")) not in seen]
        kl = dict(old.get("fp16_kl") or {})
        for tau, v in (fp16_kl or {}).items():
            key = f"{float(tau):g}"
            kl[key] = max(float(kl.get(key, v)), float(v))
        if meta.codec("logits") is not None:
            storage_error = _merge_error(old.get("storage_error"), storage_error)
        self.writer.write_shard(s, merged, records, fp16_kl=kl or None,
                                storage_error=storage_error)
        self.fs.rm(_marker(self.root, s))


# Teacher options that change what an eval-mode forward pass with loaded weights computes (the
# structural ones, the classes and the frames); img_size, drop rates, checkpointing and init
# values do not.
_FUNCTION_OPTIONS = (*STRUCTURAL_OPTIONS, "num_classes", "num_frames")


def same_teacher(a: TeacherInfo, b: TeacherInfo) -> bool:
    """Whether two teacher records denote one network: equal records, or the same weights file
    (sha256) under the same function-defining options, however it was named (``--teacher
    CKPT`` records the checkpoint's architecture name, ``--teacher NAME --weights CKPT`` the
    registry name, and the two record other img_size or drop rates). A random teacher (no
    weights file) is its whole record: its init depends on every option."""
    if a == b:
        return True
    if a.weights_sha256 is None or a.weights_sha256 != b.weights_sha256:
        return False
    if is_foreign(a.name) or is_foreign(b.name):  # hf:/py: records hold their input: all of it
        return a.name == b.name and a.config == b.config
    return all(a.config.get(k) == b.config.get(k) for k in _FUNCTION_OPTIONS)


def _teacher_differences(want: TeacherInfo, have: TeacherInfo) -> list[tuple[str, Any, Any]]:
    """(field, given, stored) of two teacher records, most telling first: the weights file,
    the options that shape what the network computes, the name, then the other options."""
    keys = [*_FUNCTION_OPTIONS, *sorted(set(want.config) | set(have.config))]
    out = [("teacher.weights_sha256", want.weights_sha256, have.weights_sha256)]
    out += [(f"teacher.config.{k}", want.config.get(k), have.config.get(k))
            for k in dict.fromkeys(keys)]
    out.insert(1 + len(_FUNCTION_OPTIONS), ("teacher.name", want.name, have.name))
    return [d for d in out if d[1] != d[2]]


def _first_leaf(field: str, want: Any, have: Any) -> tuple[str, Any, Any]:
    """The first (sorted) key path below ``field`` where two JSON values differ: the field a
    reader must change, not two records cut short."""
    while isinstance(want, dict) and isinstance(have, dict):
        key = next(k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k))
        field, want, have = f"{field}.{key}", want.get(key), have.get(key)
    return field, want, have


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def extend_cache(cfg: BuildConfig, index: DatasetIndex, *,
                 progress: Callable[[int], None] | None = None,
                 on_start: Callable[[int], None] | None = None) -> BuildResult:
    """Extend (or resume extending) the store at `cfg.out` to `cfg.views_per_video` views.

    Only the teacher, the videos and the run settings (batch, workers, device) of `cfg` count;
    the sampler, seed, mixing, dtype and shard size are the store's."""
    check_writable(cfg.out)  # before the teacher is loaded or anything is read
    so = dict(cfg.storage_options) or None
    stored = CacheReader(cfg.out, storage_options=so).meta
    V2 = cfg.views_per_video
    if stored.views_per_video > V2:
        raise CacheError(f"{cfg.out}: the store already has {stored.views_per_video} views per "
                         f"video; --views-per-video {V2} would shrink it")
    cfg = dataclasses.replace(cfg, **recorded_settings(stored), resume=True, overwrite=False)
    if is_foreign(cfg.teacher) and not cfg.teacher_input and stored.teacher.config.get("input"):
        # the store's record of the teacher's input is replayed, as verify --recompute does
        cfg = dataclasses.replace(cfg, teacher_input=dict(stored.teacher.config["input"]))
    rank, world, barrier = _distributed()
    device = resolve_device(cfg.device)
    teacher, meta, sampler = prepare(cfg, index)
    diffs = meta.differences(stored, ignore=(*PROVENANCE_ONLY, "views_per_video"))
    if same_teacher(meta.teacher, stored.teacher):  # another spelling of the store's teacher
        diffs = [d for d in diffs if not d[0].startswith("teacher.")]
    else:  # the teacher's own record first, its weights before its options
        diffs = [*_teacher_differences(meta.teacher, stored.teacher), *diffs]
    if diffs:
        field, want, have = _first_leaf(*diffs[0])
        raise CacheError(f"{cfg.out}: extend must run the store's teacher on its videos; "
                         f"{field} differs: stored {_shown(have)}, given {_shown(want)}")
    new = stored.replace(views_per_video=V2)
    if stored.views_per_video < V2 and rank == 0:
        _grow_once(cfg.out, so, new)
    if barrier is not None:
        barrier()
    teacher.to(device)
    writer = CacheWriter(cfg.out, new, storage_options=so)
    if rank == 0 and cfg.command:
        writer.record_build(list(cfg.command), world_size=world)
    fs, root = target_fs(cfg.out, so)
    keep = {}
    for s in writer.pending_shards():
        stop = _read_marker(fs, root, s)
        if stop is not None:
            keep[s] = stop
    target = _ExtendTarget(writer, keep, fs, root, so)
    if on_start is not None:
        on_start(sum(len(target.shard_rows(s)) for s in target.pending_shards()))
    labels = np.array([v.label for v in index.videos], np.int32)
    written: list[int] = []
    with target.claims(ttl_s=cfg.claim_ttl_s) as claims:
        written += write_pending(cfg, index, sampler, teacher, device, new, target, claims,
                                 labels, progress, rank=rank, world=world)
    if barrier is not None:
        barrier()
    reader = CacheReader(cfg.out, storage_options=so)
    result = BuildResult(path=str(cfg.out),
                         rows_written=sum(len(target.shard_rows(s)) for s in written),
                         shards_written=len(written), shards_total=new.num_shards,
                         failed=reader.failed_videos(), complete=reader.complete,
                         fp16_kl=reader.fp16_kl(), failed_rows=reader.failed_rows(),
                         storage_error=reader.storage_error())
    if result.complete:  # the build's rule: a store with too many failed videos has failed
        check_failed([(index.videos[v].path, r) for v, r in sorted(result.failed.items())],
                     len(index), cfg.max_failed,
                     kept=f"the store {cfg.out} is kept (complete, those views marked missing)")
    return result
