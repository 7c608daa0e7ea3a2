"""Is a finished store fit to train from, and which shards need the teacher again?

Why a module of its own: three stages ask the same questions. `verify` reports them, `build
--repair` redoes the shards they name (and only those), and a student checks them before its
first epoch, so that a flipped byte or a wrong `--root` at build time is a one-line refusal
naming the fix instead of a crash hours in or a student trained on nothing.

- `broken_shards`: every chunk of every finished shard read back (zarr checks each chunk's
  crc32c), plus chunk files that are missing.
- `valid_rows`: how many rows hold teacher outputs (the rest are videos that failed).
- `stale_videos`: videos whose frame numbering changed since the store's decoder version
  (edit lists, rotation; `dvfl_cache.data.decode`), and the shards holding their rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from dvfl_cache.cache.store import CacheReader, shard_error
from dvfl_cache.errors import CacheError

__all__ = ["broken_shards", "check_for_training", "check_replayable", "repair_command", "shards_of_videos",
           "stale_videos", "valid_rows"]

log = logging.getLogger(__name__)


def repair_command(location: object) -> str:
    return (f"`dvfl-cache build --out {location} ... --repair` (the build's other options as "
            "before)")


def broken_shards(reader: CacheReader, shards: Sequence[int] | None = None, *,
                  progress: Callable[[int], None] | None = None) -> dict[int, str]:
    """shard -> the first problem found reading its chunks (missing file, checksum mismatch),
    over `shards` (default: every finished shard)."""
    if shards is None:
        shards = np.flatnonzero(reader.shard_done()).tolist()
    names = list(reader.meta.row_arrays())
    out: dict[int, str] = {}
    for s in shards:
        rows = reader.shard_rows(s)
        for name in names:
            arr = reader.array(name)
            key = reader.shard_key(name, s)
            if not reader.key_exists(key):
                out[s] = f"array '{name}': file {key} is missing"
                break
            try:
                np.asarray(arr[rows.start:rows.stop])
            except Exception as e:  # any decode failure is a finding, not a crash
                out[s] = shard_error(name, s, arr, e)
                break
        if progress is not None:
            progress(1)
    return out


def valid_rows(reader: CacheReader) -> tuple[int, int]:
    """(rows holding teacher outputs, rows) over the finished shards: one read of the u8
    `valid` array when the store is complete (a byte a row, even from a bucket)."""
    done = reader.shard_done()
    if done.all():
        return int(np.count_nonzero(reader.read("valid", 0, reader.num_rows))), reader.num_rows
    valid = total = 0
    for s in np.flatnonzero(done).tolist():
        rows = reader.shard_rows(s)
        valid += int(np.count_nonzero(reader.read("valid", rows.start, rows.stop)))
        total += len(rows)
    return valid, total


def shards_of_videos(reader: CacheReader, videos: Sequence[int]) -> list[int]:
    """The shards holding any row of `videos` (row r * num_videos + v holds view r of v)."""
    m = reader.meta
    return sorted({(r * m.num_videos + v) // m.views_per_shard
                   for v in videos for r in range(m.views_per_video)})


def stale_videos(reader: CacheReader, index, *, workers: int = 1) -> tuple[list[int], str | None]:
    """(videos whose frame numbering changed since the store was built, the one-line error).

    Free for a store of the current decoder version; an older one opens every video once.
    """
    from dvfl_cache.data.decode import DECODER_VERSION, numbering_changed, stale_videos_error

    version = reader.meta.decoder_version
    version = version if isinstance(version, int) else None
    if (version or 1) >= DECODER_VERSION:
        return [], None
    paths = [index.abspath(v) for v in range(len(index))]
    message = stale_videos_error(version, paths, workers=workers)
    if message is None:
        return [], None
    stale = [v for v, p in enumerate(paths) if numbering_changed(p) is not None]
    return stale, message


def check_for_training(reader: CacheReader, index, *, workers: int = 1) -> None:
    """Refuse, in one line naming the fix, a store a student must not replay: no valid rows,
    broken chunks (a local store is read through once, seconds beside training; a remote one
    is not read up front, its reads name the shard and the repair when they fail), or rows
    decoded with another frame numbering than today's on these videos."""
    where = reader.location
    valid, total = valid_rows(reader)
    if valid == 0:
        raise CacheError(f"{where}: the cache has no valid rows (all {total} views failed when it "
                         "was built; was --root right?); rebuild it with the videos in place")
    if not getattr(where, "is_remote", False):
        broken = broken_shards(reader)
        if broken:
            first = next(iter(sorted(broken)))
            raise CacheError(f"{where}: {len(broken)} shard(s) unreadable (shards "
                             f"{sorted(broken)[:10]}; shard {first}: {broken[first]}); repair "
                             f"with {repair_command(where)}")
    _, message = stale_videos(reader, index, workers=workers)
    if message is not None:
        raise CacheError(f"{where}: {message}")
    log.info("%s: %d of %d rows valid, chunks checked", where, valid, total)


def check_replayable(reader: CacheReader, index, *, num_frames: int, need_features: bool = False,
                     workers: int = 1) -> None:
    """Refuse in one line a store a student of ``num_frames`` frames cannot replay over
    ``index``: built for other videos, unfinished, fewer frames than asked, no features when
    the feature term needs them, or failing `check_for_training`. `dvfl-train` and the public
    `CachedClips` both ask this, so the two refuse the same stores alike."""
    path = reader.location
    reader.check_compatible(dataset=index, num_classes=index.num_classes)
    if not reader.complete:
        raise CacheError(f"{path}: cache is unfinished (shards {reader.pending_shards()[:10]} "
                         "pending); finish it with `dvfl-cache build --resume`")
    if num_frames > reader.meta.num_frames:
        raise CacheError(f"{path}: the teacher saw {reader.meta.num_frames} frames per view; a "
                         f"student cannot replay {num_frames} of them (use --frames <= "
                         f"{reader.meta.num_frames})")
    if need_features and reader.meta.feature_dim is None:
        raise CacheError(f"{path}: the feature term (beta > 0) needs teacher features; rebuild "
                         "the cache with `dvfl-cache build --features`")
    check_for_training(reader, index, workers=workers)
