"""`info` and `verify`: what a cache holds, and whether every byte of it can be trusted.

Both work on any address a CacheReader accepts (directory, packed zip, http(s) URL). `verify`
reads every chunk, so every crc32c checksum is checked, and collects all problems before
failing, because a user repairing a cache wants the whole list, not the first item.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from dvfl_cache.cache.accuracy import teacher_accuracy
from dvfl_cache.cache.card import card_problems
from dvfl_cache.cache.claims import CLAIMS_GROUP
from dvfl_cache.cache.format import FORMAT_NAME, SHARD_DONE
from dvfl_cache.cache.location import Location
from dvfl_cache.cache.store import CacheReader, shard_error
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

MAX_LISTED_PROBLEMS = 20


def info(path_or_url: str | os.PathLike, *, storage_options: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    """A JSON-able summary: provenance, layout, completeness, size, teacher accuracy, failures."""
    with CacheReader(path_or_url, storage_options=storage_options) as reader:
        m = reader.meta
        done = reader.shard_done()
        failures = reader.failures()
        failed: dict[int, dict[str, Any]] = {}
        for f in failures:
            failed.setdefault(f["video"], {k: v for k, v in f.items() if k != "shard"})
        per_view = {}  # stored bytes of one view's logits / features (all codec parts)
        for name in ("logits", "features"):
            if name in m.value_arrays():
                stored = m.coded_parts(name) if m.codec(name) else {name: m.row_arrays()[name]}
                per_view[name] = sum(dt.itemsize * int(np.prod(trail))
                                     for dt, trail in stored.values())
        return {
            "store": str(reader.location),
            "format": f"{FORMAT_NAME} v{m.format_version}",
            "teacher": m.teacher.name,
            "teacher_weights_sha256": m.teacher.weights_sha256,
            "teacher_input": m.teacher.config.get("input") if m.teacher.name.startswith(
                ("hf:", "py:")) else None,
            "teacher_labels": m.teacher.config.get("label_match"),
            "teacher_check": next((r["teacher_check"] for r in reversed(reader.build_records())
                                   if r.get("teacher_check")), None),
            "dataset": f"{m.dataset.kind} split {m.dataset.split} {m.dataset.subset}",
            "index_digest": m.dataset.index_digest,
            "num_classes": m.num_classes,
            "num_videos": m.num_videos,
            "views_per_video": m.views_per_video,
            "rows": m.num_rows,
            "num_frames": m.num_frames,
            "dtype": m.dtype,
            "feature_dim": m.feature_dim,
            "sampler": m.sampler.to_dict(),
            "jitter_mode": m.jitter_mode,
            "mix": None if m.mix is None else m.mix.to_dict(),
            "mixed_rows": mixed_rows(reader),
            "teacher_precision": m.teacher_precision,
            "decoder_version": m.decoder_version,
            "shards_done": int(done.sum()),
            "shards_total": m.num_shards,
            "complete": bool(done.all()),
            "size_bytes": size_on_disk(reader.location, storage_options),
            "logit_bytes": m.num_rows * sum(per_view.values()),
            "bytes_per_view": per_view,
            **teacher_accuracy(reader),
            "failed_videos": [failed[v] for v in sorted(failed)],
            "fp16_kl": reader.fp16_kl(),
            "storage_error": reader.storage_error(),
            "dvfl_version": m.dvfl_version,
            "created": m.created,
        }


def mixed_rows(reader: CacheReader) -> dict[str, int] | None:
    """Valid rows per mix operation over the finished shards (None: not a mixed cache)."""
    if reader.meta.mix is None:
        return None
    counts = {"none": 0, "mixup": 0, "cutmix": 0}
    for s in np.flatnonzero(reader.shard_done()).tolist():
        rows = reader.shard_rows(s)
        valid = reader.read("valid", rows.start, rows.stop) == 1
        op = reader.read("mix_op", rows.start, rows.stop)[valid]
        for code, name in enumerate(counts):
            counts[name] += int((op == code).sum())
    return counts


def _counted(key: str) -> bool:
    """Files that count as the store's size: not leftovers of killed writes, not claims."""
    key = key.removeprefix("./")
    return not key.endswith(".partial") and not (
        key.startswith(f"{CLAIMS_GROUP}/") and key != f"{CLAIMS_GROUP}/zarr.json")


def size_on_disk(loc: Location, storage_options: dict[str, Any] | None = None) -> int | None:
    """Bytes the store occupies (apparent size; None for a directory served over HTTP, which
    has no listing)."""
    if loc.kind == "zip":
        return os.path.getsize(loc.target)
    if loc.kind == "dir":
        total = 0
        for root, _dirs, files in os.walk(loc.target):
            rel = os.path.relpath(root, loc.target).replace(os.sep, "/")
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                         if _counted(f"{rel}/{f}"))
        return total
    if loc.kind == "url-zip" or not loc.target.lower().startswith(("http://", "https://")):
        from dvfl_cache.cache.location import target_fs

        try:
            fs, path = target_fs(loc.target, storage_options)
            if loc.kind == "url-zip":
                return int(fs.size(path))
            sizes = fs.find(path, detail=True)
            return sum(int(d["size"]) for k, d in sizes.items()
                       if _counted(k[len(path):].lstrip("/")))
        except Exception as e:  # a size is a nicety for `info`; never fail a read over it
            log.warning("%s: cannot get the size (%s)", loc, e)
            return None
    return None


def _load_index(path: str | os.PathLike):
    # The data layer owns the index format; its loader checks it and recomputes the digest.
    from dvfl_cache.data.index import load_index

    return load_index(path)


def stale_temp_files(loc: Location) -> list[str]:
    """Leftovers of writes killed mid-file (zarr writes `<key>.<uuid>.partial`, then renames)."""
    if loc.kind != "dir":
        return []
    out = []
    for root, _dirs, files in os.walk(loc.target):
        out += [os.path.relpath(os.path.join(root, f), loc.target) for f in files
                if f.endswith(".partial")]
    return sorted(out)


def verify(path_or_url: str | os.PathLike, *, index: Any = None,
           storage_options: dict[str, Any] | None = None,
           progress: Callable[[int], None] | None = None,
           against_card: bool = True) -> dict[str, Any]:
    """Read every chunk (checking checksums), completeness, shapes, finite logits, the row
    layout, failure records and, given a dataset index (a file or a DatasetIndex), the videos
    and labels; and, unless `against_card` is off (writing a new card), the store's card.

    Returns a summary; raises CacheError listing every problem found.
    """
    problems: list[str] = []
    with CacheReader(path_or_url, storage_options=storage_options) as reader:
        m = reader.meta
        names = list(m.row_arrays())
        for name in [*names, SHARD_DONE]:
            try:
                reader.array(name)
            except CacheError as e:
                problems.append(str(e).removeprefix(f"{reader.location}: "))
        if problems:
            _fail(reader.location, problems)

        idx_labels = None
        if index is not None:
            given = hasattr(index, "videos")  # a DatasetIndex rather than a file
            idx = index if given else _load_index(index)
            problems += _index_problems(m, idx, "the given index" if given else index)
            if len(idx.videos) == m.num_videos:
                idx_labels = np.array([v.label for v in idx.videos], dtype=np.int64)

        try:
            done = reader.shard_done()
        except CacheError as e:
            _fail(reader.location, [*problems, str(e).removeprefix(f"{reader.location}: ")])
        pending = np.flatnonzero(~done).tolist()
        if pending:
            problems.append(f"incomplete: {len(pending)} of {m.num_shards} shards not done "
                            f"(first: {pending[:10]})")

        seen_labels = np.full(m.num_videos, -1, dtype=np.int64)
        rows_checked = valid_rows = 0
        for s in np.flatnonzero(done).tolist():
            shard_problems = _check_shard(reader, s, names, seen_labels, idx_labels)
            problems += [f"shard {s}: {p}" for p in shard_problems]
            rows_checked += len(reader.shard_rows(s))
            if not shard_problems:
                rows = reader.shard_rows(s)
                valid_rows += int(np.count_nonzero(reader.read("valid", rows.start, rows.stop)))
            if progress is not None:
                progress(1)
        if rows_checked and not problems and valid_rows == 0:
            # A store of failures only is no teacher: a wrong --root at build time, typically.
            failed = reader.failed_videos()
            example = next(iter(failed.values()), "")
            problems.append(f"no valid rows: every one of the {rows_checked} views failed when "
                            f"the store was built ({len(failed)} videos failed; e.g. {example}); "
                            "rebuild with the videos in place (--root)")
        card, card_found = None, []
        if not problems and against_card:  # a card is only worth checking on a sound store
            card, card_found = card_problems(reader)
            problems += [f"card: {p}" for p in card_found]
        if problems:
            _fail(reader.location, problems)
        return {"store": str(reader.location), "shards_checked": int(done.sum()),
                "rows_checked": rows_checked, "valid_rows": valid_rows,
                "valid_fraction": valid_rows / rows_checked if rows_checked else 0.0,
                "index": None if index is None or hasattr(index, "videos") else str(index),
                "stale_temp_files": stale_temp_files(reader.location),
                "card": None if card is None else card["manifest"]["sha256"]}


def _fail(location: Location, problems: list[str]) -> NoReturn:
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    raise CacheError(f"{location}: verify found {len(problems)} problem(s): " + "; ".join(shown)
                     + (f"; ... and {more} more" if more else ""))


def _index_problems(m, idx, index_path) -> list[str]:
    out = []
    where = f"index {index_path}"
    for what, have, want in (("dataset kind", m.dataset.kind, idx.kind),
                             ("split", m.dataset.split, idx.split),
                             ("subset", m.dataset.subset, idx.subset)):
        if have != want:
            out.append(f"{what} {have!r} differs from {where} ({want!r})")
    if tuple(idx.classes) != m.dataset.classes:
        out.append(f"classes differ from {where} ({len(m.dataset.classes)} in the cache, "
                   f"{len(idx.classes)} in the index)")
    if len(idx.videos) != m.num_videos:
        out.append(f"{m.num_videos} videos in the cache, {len(idx.videos)} in {where}")
    if idx.digest != m.dataset.index_digest:
        out.append(f"index digest {m.dataset.index_digest} differs from {where} ({idx.digest}): "
                   "other videos, labels or order")
    return out


def _check_shard(reader: CacheReader, s: int, names: list[str], seen_labels: np.ndarray,
                 idx_labels: np.ndarray | None) -> list[str]:
    m = reader.meta
    rows = reader.shard_rows(s)
    out: list[str] = []
    data: dict[str, np.ndarray] = {}
    for name in names:
        key = reader.shard_key(name, s)
        if not reader.key_exists(key):
            out.append(f"array '{name}': file {key} is missing")
            continue
        try:
            data[name] = np.asarray(reader.array(name)[rows.start:rows.stop])
        except Exception as e:  # any decode failure is a finding, not a crash
            out.append(shard_error(name, s, reader.array(name), e))
    for name in ("logits", "features", "logits_params", "features_params"):
        if name in data and not np.isfinite(data[name]).all():
            out.append(f"array '{name}' has non-finite values")
    r = np.arange(rows.start, rows.stop)
    if "video" in data and not np.array_equal(data["video"], r % m.num_videos):
        out.append("array 'video' does not follow the row layout")
    if "view" in data and not np.array_equal(data["view"], r // m.num_videos):
        out.append("array 'view' does not follow the row layout")
    if "label" in data:
        lab = data["label"].astype(np.int64)
        if lab.min() < 0 or lab.max() >= m.num_classes:
            out.append(f"labels outside [0, {m.num_classes})")
        vids = r % m.num_videos
        if idx_labels is not None:
            bad = np.flatnonzero(lab != idx_labels[vids])
            if len(bad):
                out.append(f"{len(bad)} labels differ from the index (first: row "
                           f"{rows.start + int(bad[0])}, video {int(vids[bad[0]])})")
        prev = seen_labels[vids]
        clash = np.flatnonzero((prev >= 0) & (prev != lab))
        if len(clash):
            out.append(f"video {int(vids[clash[0]])} has different labels in different views")
        seen_labels[vids] = lab
    record = reader.shard_record(s)
    if record is None:
        out.append("failure record failures/%d is missing" % s)
    elif "valid" in data:
        records = record.get("failures", [])
        failed = {int(f["video"]) for f in records if "row" not in f}
        failed_rows = {int(f["row"]) for f in records if "row" in f}
        vids = r % m.num_videos
        invalid = {int(vids[i]) for i in np.flatnonzero(data["valid"] == 0)
                   if rows.start + int(i) not in failed_rows}
        if invalid - failed:
            out.append(f"videos {sorted(invalid - failed)[:10]} have invalid rows but no "
                       "failure record")
        valid_rows = sorted(x for x in failed_rows
                            if not (rows.start <= x < rows.stop)
                            or data["valid"][x - rows.start] == 1)
        if valid_rows:
            out.append(f"rows {valid_rows[:10]} are recorded as failed (partner) but are "
                       "valid or outside the shard")
        valid_failed = failed & set(vids[data["valid"] == 1].tolist())
        if valid_failed:
            out.append(f"videos {sorted(valid_failed)[:10]} are recorded as failed but have "
                       "valid rows")
    return out
