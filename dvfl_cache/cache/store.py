"""CacheWriter and CacheReader over a sharded Zarr v3 group (directory, zip, or HTTP URL).

Why this shape:
- Rows are views, laid out view-major (row = r * num_videos + v), so one epoch of training is
  one contiguous slice per array: a few large reads instead of per-sample random reads.
- A shard (`views_per_shard` rows of every array) is written whole by exactly one writer and
  then flagged in `shard_done`, an array with one chunk (one file) per shard. Zarr loses chunks
  when two processes write into one shard file, and loses keys when processes rewrite the same
  JSON attributes; per-shard files are the only completion record concurrent ranks cannot lose.
- Root attributes are written once, at creation: every other metadata file first, then the
  root zarr.json with a create-if-absent write, so a store either exists whole or not at all
  (on a disk or an object store, which has no rename) and other ranks can wait for it.
- Concurrent writers split the pending shards with create-if-absent claims (``claims.py``).
- Readers open lazily per process (a forked DataLoader worker reopens by itself) and accept a
  directory, a packed .zip, or an http(s) URL of either (``location.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import zarr
from zarr.storage import WrapperStore

from dvfl_cache.cache import codecs
from dvfl_cache.cache.claims import DEFAULT_TTL_S, ShardClaims, put_atomic
from dvfl_cache.cache.format import FAILURES_GROUP, SHARD_DONE, CacheMeta
from dvfl_cache.cache.layout import (CREATE_CLAIM, CREATE_WAIT_S, EMPTY_GROUP, MAX_CHUNK_ROWS,
                                     PROVENANCE_GROUP, WRITE_CONFIG, chunk_rows,
                                     diagnose_missing, exists_fresh, list_entries,
                                     only_layout_leftovers, refuse_if_being_written,
                                     remove_store, write_layout)
from dvfl_cache.cache.location import (Location, check_writable, is_url, locate, open_store,
                                       open_writable, storage_error, target_fs)
from dvfl_cache.cache.shard_check import check_failures, check_shard_arrays, json_record
from dvfl_cache.errors import CacheError

__all__ = ["MAX_CHUNK_ROWS", "CacheReader", "CacheWriter", "MissingChunkError", "chunk_rows",
           "shard_error", "shard_rows"]

log = logging.getLogger(__name__)


def shard_rows(meta: CacheMeta, s: int) -> range:
    if not 0 <= s < meta.num_shards:
        raise IndexError(f"shard {s} out of range: the cache has {meta.num_shards} shards")
    start = s * meta.views_per_shard
    return range(start, min(start + meta.views_per_shard, meta.num_rows))


def _open_group(store, loc: Location, mode: str = "r") -> zarr.Group:
    try:
        return zarr.open_group(store=store, mode=mode, zarr_format=3)
    except (FileNotFoundError, KeyError) as e:
        raise CacheError(f"{loc}: not a cache store (no readable zarr.json: {e})") from None


def _array_problem(meta: CacheMeta, group: zarr.Group, name: str) -> str | None:
    """Why array `name` does not have the layout `meta` promises, or None."""
    if name == SHARD_DONE:
        dtype, shape = np.dtype("uint8"), (meta.num_shards,)
    elif name in meta.row_arrays():
        dt, trail = meta.row_arrays()[name]
        dtype, shape = dt, (meta.num_rows, *trail)
    elif meta.codec(name) is not None:
        return (f"'{name}' is stored coded as {', '.join(meta.coded_parts(name))} "
                f"(dtype {meta.dtype}); read it with CacheReader.read")
    else:
        return f"no array '{name}' in this cache's layout"
    try:
        arr = group[name]
    except KeyError:
        return f"array '{name}' is missing"
    except Exception as e:  # crafted or damaged metadata zarr refuses (a bad chunk-key rule)
        return f"array '{name}' has unreadable metadata ({name}/zarr.json): {_first_line(e)}"
    if not isinstance(arr, zarr.Array):
        return f"'{name}' is a group, expected an array"
    have = tuple(arr.shape)
    # An array longer than the root metadata says is a store being extended (extend.py grows
    # every array before the root): its first rows are this meta's.
    if have[:1] >= shape[:1] and have[1:] == shape[1:] and np.dtype(arr.dtype) == dtype:
        return None
    if have != shape or np.dtype(arr.dtype) != dtype:
        return (f"array '{name}' has shape {tuple(arr.shape)} {arr.dtype}, expected "
                f"{shape} {dtype}")
    return None


# --- writing ---------------------------------------------------------------------------------

class CacheWriter:
    """Writes whole shards of one store; several writers (ranks, concurrent resumes, machines)
    may share a store if each writes the shards it claimed (`claims()`). Make one with
    `create` or `open_for_rank`. `path` is a directory or an fsspec URL (s3://, gs://, ...)."""

    def __init__(self, path: str | os.PathLike, meta: CacheMeta, *,
                 storage_options: dict[str, Any] | None = None):
        self.path = os.fspath(path)
        self.meta = meta
        self._storage_options = storage_options
        self._fs, self._root_path = target_fs(self.path, storage_options)
        self._store = open_writable(self.path, storage_options)
        loc = Location("url" if is_url(self.path) else "dir", self.path)
        try:
            self._root = _open_group(self._store, loc, mode="r+")
        except CacheError:
            raise
        except Exception as e:
            raise storage_error(self.path, e) from None
        stored = CacheMeta.from_dict(self._root.attrs.asdict(), source=str(self.path))
        if stored.format_version != meta.format_version:
            raise CacheError(f"{self.path}: the existing cache is in format version "
                             f"{stored.format_version} and this dvfl writes version "
                             f"{meta.format_version}; finish it with the dvfl that started it, "
                             "or pass --overwrite to rebuild it")
        diffs = meta.differences(stored)
        if diffs:
            field, want, have = diffs[0]
            more = f" (and {len(diffs) - 1} more: {', '.join(d[0] for d in diffs[1:])})" \
                if len(diffs) > 1 else ""
            raise CacheError(f"{self.path}: the existing cache was built with a different "
                             f"{field}: stored {_short(have)}, requested {_short(want)}{more}; "
                             "pass --overwrite to replace it or write to another path")
        # Keep the stored provenance: resuming must not pretend the store is newer than it is.
        self.meta = stored
        for name in [*meta.row_arrays(), SHARD_DONE]:
            problem = _array_problem(meta, self._root, name)
            if problem:
                raise CacheError(f"{self.path}: damaged cache layout: {problem}")
        self._arrays = {name: self._root[name].with_config(WRITE_CONFIG)
                        for name in [*meta.row_arrays(), SHARD_DONE]}

    def claims(self, *, ttl_s: float = DEFAULT_TTL_S) -> ShardClaims:
        """Create-if-absent shard claims for this store (see claims.py)."""
        return ShardClaims(self._fs, self._root_path, ttl_s=ttl_s)

    @classmethod
    def create(cls, path: str | os.PathLike, meta: CacheMeta, *, overwrite: bool = False,
               resume: bool = False, storage_options: dict[str, Any] | None = None
               ) -> CacheWriter:
        """A new store at `path`, or the existing one when resuming with the same meta."""
        where = os.fspath(path)
        if overwrite and resume:
            raise CacheError(f"{where}: pass only one of --resume and --overwrite")
        check_writable(where)
        fs, root = target_fs(where, storage_options)
        if list_entries(fs, root):
            is_store = exists_fresh(fs, f"{root}/zarr.json")
            if is_store and resume:
                writer = cls(where, meta, storage_options=storage_options)
                log.info("resuming %s: %d of %d shards pending", where,
                         len(writer.pending_shards()), meta.num_shards)
                return writer
            if is_store and not overwrite:
                raise CacheError(f"{where} already exists; pass --resume to finish it or "
                                 "--overwrite to replace it")
            if is_store:
                refuse_if_being_written(fs, root, where,
                                         open_writable(where, storage_options))
                log.info("overwriting %s", where)
                remove_store(fs, root)
            elif not (fs.isdir(root) and only_layout_leftovers(fs, root)):
                if overwrite:
                    raise CacheError(f"{where}: exists and is not a cache store; refusing to "
                                     "delete it with --overwrite")
                raise CacheError(f"{where} already exists and is not a cache store" +
                                 ("; cannot resume" if resume else ""))
        # Absent, or the metadata of a creation in progress or killed: creating is itself
        # claimed, so concurrent creators wait for one another instead of trampling.
        with ShardClaims(fs, root, ttl_s=60.0) as claims:
            deadline = time.monotonic() + CREATE_WAIT_S
            while not claims.try_claim(CREATE_CLAIM):
                if exists_fresh(fs, f"{root}/zarr.json"):
                    break
                if time.monotonic() > deadline:
                    raise CacheError(f"{where}: another process has been creating this store "
                                     f"for {CREATE_WAIT_S:.0f} s; is it stuck?")
                time.sleep(0.2)
            created = not exists_fresh(fs, f"{root}/zarr.json") and write_layout(fs, root, meta)
            claims.release(CREATE_CLAIM)  # done (or not ours): nobody waits for its expiry
        if not created:
            if resume:  # another resume created it a moment ago: join it
                return cls(where, meta, storage_options=storage_options)
            raise CacheError(f"{where}: another process created this store at the same moment; "
                             "pass --resume to join it")
        log.info("created %s: %d rows in %d shards", where, meta.num_rows, meta.num_shards)
        return cls(where, meta, storage_options=storage_options)

    @classmethod
    def open_for_rank(cls, path: str | os.PathLike, meta: CacheMeta, *, rank: int,
                      world_size: int, overwrite: bool = False, resume: bool = False,
                      barrier: Callable[[], Any] | None = None, timeout_s: float = 600.0,
                      poll_s: float = 0.2, storage_options: dict[str, Any] | None = None
                      ) -> CacheWriter:
        """One writer per rank; only rank 0 creates (or overwrites, or resumes) the store.

        With `barrier` (e.g. torch.distributed.barrier, which needs no shared file system) the
        others open it after rank 0 is done. Without one they poll for the root zarr.json (the
        last file creation writes) until `timeout_s`; that cannot tell an old store from the
        one rank 0 is about to replace, so overwriting with several ranks needs a barrier.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if rank == 0:
            writer = cls.create(path, meta, overwrite=overwrite, resume=resume,
                                storage_options=storage_options)
            if barrier is not None:
                barrier()
            return writer
        if barrier is not None:
            barrier()
            return cls(path, meta, storage_options=storage_options)
        if overwrite:
            raise CacheError(f"{path}: --overwrite with {world_size} ranks needs a barrier so "
                             "ranks > 0 do not open the store rank 0 is replacing")
        fs, root = target_fs(path, storage_options)
        deadline = time.monotonic() + timeout_s
        while not exists_fresh(fs, f"{root}/zarr.json"):
            if time.monotonic() > deadline:
                raise CacheError(f"{path}: rank {rank} waited {timeout_s:.0f} s for rank 0 to "
                                 "create the cache; did rank 0 fail?")
            time.sleep(poll_s)
        return cls(path, meta, storage_options=storage_options)

    def record_build(self, command: list[str], *, world_size: int = 1, **extra: Any) -> None:
        """Keep the command that (re)built this store, for its card (never a credential: the
        caller redacts storage options), with ``extra`` JSON facts of that run (e.g. its
        ``teacher_check``). One new file per invocation: no shared JSON."""
        now = _dt.datetime.now(_dt.timezone.utc)
        record = {"command": command, "world_size": world_size,
                  "started": now.isoformat(timespec="seconds"), **extra}
        base = f"{self._root_path}/{PROVENANCE_GROUP}"
        if not exists_fresh(self._fs, f"{base}/zarr.json"):
            put_atomic(self._fs, f"{base}/zarr.json", EMPTY_GROUP)
        name = f"build-{now.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
        put_atomic(self._fs, f"{base}/{name}", json.dumps(record, indent=1).encode())

    @property
    def num_shards(self) -> int:
        return self.meta.num_shards

    def shard_rows(self, s: int) -> range:
        return shard_rows(self.meta, s)

    def is_done(self, s: int) -> bool:
        self.shard_rows(s)
        return bool(self._arrays[SHARD_DONE][s])

    def pending_shards(self, *, rank: int = 0, world_size: int = 1) -> list[int]:
        """Shards not yet marked done (those of `rank` when work is split round-robin)."""
        done = np.asarray(self._arrays[SHARD_DONE][:self.num_shards])
        return [s for s in range(self.num_shards) if not done[s] and s % world_size == rank]

    def clear_done(self, s: int) -> None:
        """Mark shard `s` pending again (`build --repair`; call while holding its claim).

        Its files are removed too: the shard is rewritten whole, and a write into a partly
        filled shard (the store's last) would first read back the damaged file it replaces."""
        from zarr.core.sync import sync

        self.shard_rows(s)
        self._arrays[SHARD_DONE][s] = 0
        for name, arr in self._arrays.items():
            if name != SHARD_DONE:
                sync(self._store.delete(_shard_key(name, s, arr)))

    def record_decoder_version(self, version: int | str) -> None:
        """After `build --repair` re-ran every row whose frames changed: the store now holds the
        frames of decoder `version` (the one root attribute a repair rewrites)."""
        self._root.attrs.update({"decoder_version": version})
        self.meta = self.meta.replace(decoder_version=version)

    def empty_shard(self, s: int, *, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Zeroed arrays for shard `s` with the row layout (video, view) and, given the
        per-video `labels`, the label of every row filled in; every row starts invalid."""
        rows = np.arange(self.shard_rows(s).start, self.shard_rows(s).stop)
        out = {name: np.zeros((len(rows), *trail), dtype=dt)
               for name, (dt, trail) in self.meta.value_arrays().items()}
        out["video"][:] = rows % self.meta.num_videos
        out["view"][:] = rows // self.meta.num_videos
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (self.meta.num_videos,):
                raise ValueError(f"labels must have shape ({self.meta.num_videos},), "
                                 f"got {labels.shape}")
            out["label"][:] = labels[out["video"]]
        return out

    def write_shard(self, s: int, arrays: Mapping[str, np.ndarray],
                    failures: Iterable[Mapping[str, Any]] = (), *,
                    fp16_kl: Mapping[Any, float] | None = None,
                    storage_error: Mapping[str, Any] | None = None) -> None:
        """Write every array of shard `s`, its failure record, then mark it done.

        `arrays` are the value arrays (`meta.value_arrays()`, as `empty_shard` makes them).
        A coded field (dtype q8) is encoded here and the error that costs on this shard's valid
        rows is recorded (see `storage_error`); it may also be given as its stored parts
        (copied from another store), with the error measured when it was encoded passed in
        `storage_error`.

        `failures` lists the videos of this shard that could not be decoded:
        {"video": int, "reason": str, "path": str (optional)}; their rows must be valid=0.
        A mixed row whose partner failed is listed by itself: {"video", "row": int,
        "partner": int, "reason", "path" (the partner's)}; that row must be valid=0. Every
        invalid row belongs to a listed video or is a listed row. Rewriting a shard is harmless:
        the flag is cleared first, so a crash mid-rewrite leaves the shard pending, not half-done.
        """
        rows = self.shard_rows(s)
        prepared, measured = check_shard_arrays(self.meta, f"{self.path}: shard {s}", rows,
                                                arrays)
        storage_error = measured or storage_error
        record: dict[str, Any] = {"failures": check_failures(self.path, s, failures, rows,
                                                              prepared["video"],
                                                              prepared["valid"])}
        if fp16_kl is not None:
            # "1" and 1.0 are the same temperature; keys must agree across shards.
            record["fp16_kl"] = {f"{float(k):g}": float(v) for k, v in fp16_kl.items()}
        if storage_error is not None:
            record["storage_error"] = json_record(self.path, s, storage_error)
        done = self._arrays[SHARD_DONE]
        if done[s]:
            done[s] = 0
        self._root[FAILURES_GROUP].create_group(str(s), attributes=record, overwrite=True)
        for name, values in prepared.items():
            self._arrays[name][rows.start:rows.stop] = values
        done[s] = 1
        log.debug("%s: wrote shard %d (rows %d-%d, %d failures)", self.path, s, rows.start,
                  rows.stop - 1, len(record["failures"]))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- reading ---------------------------------------------------------------------------------

class MissingChunkError(CacheError):
    """A data file of the store is absent where zarr would read fill values (zeros)."""

    def __init__(self, key: str):
        super().__init__(f"file {key} is missing")
        self.key = key


class _RefuseMissingChunks(WrapperStore):
    """A read-only store in which a row array's absent chunk (shard) file is an error.

    Why: zarr reads an absent chunk as the array's fill value, so a shard file lost from a
    directory, a zip, a web server or a bucket would read as zero logits, marked valid=0 or
    not, and a student would train on them. The one rule, for every location: the data files
    of the row arrays (`data_arrays`, set once the metadata is read) must be there when read;
    `shard_done`'s per-shard files stay optional (absent means "not done").
    """

    def __init__(self, store, data_arrays: frozenset[str] = frozenset()):
        super().__init__(store)
        self.data_arrays = data_arrays

    def _with_store(self, store):
        return type(self)(store, self.data_arrays)

    def _is_chunk(self, key: str) -> bool:
        name, sep, rest = key.partition("/")
        return bool(sep) and name in self.data_arrays and rest != "zarr.json"

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if buf is None and self._is_chunk(key):
            raise MissingChunkError(key)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        out = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buf in zip(key_ranges, out):
            if buf is None and self._is_chunk(key):
                raise MissingChunkError(key)
        return out


class CacheReader:
    """Read access to a finished (or partly finished) store.

    Holds only the address between uses: handles are opened per process on first use, so a
    reader created in a parent works in forked or spawned DataLoader workers.
    """

    def __init__(self, path_or_url: str | os.PathLike, *,
                 storage_options: dict[str, Any] | None = None):
        self.location = locate(path_or_url)
        self._storage_options = storage_options
        self._data_arrays: frozenset[str] = frozenset()
        self._reset()
        self.meta = CacheMeta.from_dict(self._group().attrs.asdict(), source=str(self.location))
        self._data_arrays = frozenset(self.meta.row_arrays())
        self._store.data_arrays = self._data_arrays
        self._done_all = False

    def _reset(self) -> None:
        self._pid: int | None = None
        self._store = None
        self._root: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}

    def _group(self) -> zarr.Group:
        if self._pid != os.getpid():
            # A forked child inherits the parent's handles (zip file offsets, HTTP sessions,
            # event loops); never touch them, open fresh ones.
            self._reset()
            try:
                self._store = _RefuseMissingChunks(
                    open_store(self.location, storage_options=self._storage_options),
                    self._data_arrays)
                self._root = _open_group(self._store, self.location)
            except CacheError:
                if self.location.kind == "url":
                    diagnose_missing(str(self.location), self._storage_options)
                raise
            except Exception as e:
                raise storage_error(self.location, e) from None
            self._pid = os.getpid()
        return self._root

    def array(self, name: str) -> zarr.Array:
        root = self._group()
        if name not in self._arrays:
            problem = _array_problem(self.meta, root, name)
            if problem:
                raise CacheError(f"{self.location}: {problem}")
            self._arrays[name] = root[name]
        return self._arrays[name]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pid=None, _store=None, _root=None, _arrays={})
        return state

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._reset()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CacheReader({str(self.location)!r})"

    # layout
    @property
    def num_rows(self) -> int:
        return self.meta.num_rows

    @property
    def num_shards(self) -> int:
        return self.meta.num_shards

    def shard_rows(self, s: int) -> range:
        return shard_rows(self.meta, s)

    def shard_done(self) -> np.ndarray:
        """Completion flags, one per shard (re-read until the store is complete)."""
        if self._done_all:
            return np.ones(self.num_shards, dtype=bool)
        done = np.asarray(self.array(SHARD_DONE)[:self.num_shards]) == 1
        self._done_all = bool(done.all())
        return done

    @property
    def complete(self) -> bool:
        return bool(self.shard_done().all())

    def pending_shards(self) -> list[int]:
        return np.flatnonzero(~self.shard_done()).tolist()

    # data
    def read(self, name: str, start: int, stop: int, *, allow_pending: bool = False
             ) -> np.ndarray:
        """Rows [start, stop) of one array, in one read; pending shards are refused."""
        if not 0 <= start <= stop <= self.num_rows:
            raise IndexError(f"rows [{start}, {stop}) outside [0, {self.num_rows})")
        if not allow_pending and stop > start:
            per = self.meta.views_per_shard
            first, last = start // per, (stop - 1) // per
            done = self.shard_done()[first:last + 1]
            if not done.all():
                pending = [first + i for i in np.flatnonzero(~done).tolist()]
                raise CacheError(f"{self.location}: rows {start}-{stop - 1} lie in unfinished "
                                 f"shards {pending[:10]}; finish the cache with --resume")
        codec = self.meta.codec(name)
        if codec is not None:
            # A coded field reads as float32 values: its parts, decoded.
            parts = {p.removeprefix(f"{name}_"): self.read(p, start, stop, allow_pending=True)
                     for p in self.meta.coded_parts(name)}
            return codecs.decode(codec, parts)
        arr = self.array(name)
        try:
            return np.asarray(arr[start:stop])
        except Exception as e:
            raise self._read_error(name, start, stop, e) from None

    def _read_error(self, name: str, start: int, stop: int, err: Exception) -> CacheError:
        """Name the shard a failed read came from (re-reading shard by shard, errors only)."""
        arr = self.array(name)
        per = self.meta.views_per_shard
        for s in range(start // per, (max(stop, start + 1) - 1) // per + 1):
            rows = self.shard_rows(s)
            try:
                arr[rows.start:rows.stop]
            except Exception as e:
                return CacheError(f"{self.location}: {shard_error(name, s, arr, e)}; repair it "
                                  f"with `dvfl-cache build --out {self.location} ... --repair` "
                                  "(the build's other options as before)")
        return CacheError(f"{self.location}: reading array '{name}' rows {start}-{stop - 1} "
                          f"failed: {err}")

    def epoch_block(self, r: int, *, names: Iterable[str] | None = None
                    ) -> dict[str, np.ndarray]:
        """View `r` of every video: rows [r*V, (r+1)*V) of each array, one slice per array."""
        if not 0 <= r < self.meta.views_per_video:
            raise IndexError(f"view {r} outside [0, {self.meta.views_per_video})")
        V = self.meta.num_videos
        names = list(self.meta.value_arrays()) if names is None else list(names)
        return {name: self.read(name, r * V, (r + 1) * V) for name in names}

    def shard_key(self, name: str, s: int) -> str:
        """The store key (relative file name) holding shard `s` of array `name`."""
        return _shard_key(name, s, self.array(name))

    def key_exists(self, key: str) -> bool:
        from zarr.core.sync import sync

        self._group()
        return bool(sync(self._store.exists(key)))

    def shard_record(self, s: int) -> dict[str, Any] | None:
        """The per-shard record {"failures": [...], "fp16_kl": {...}}, None if never written."""
        self.shard_rows(s)
        try:
            node = self._group()[f"{FAILURES_GROUP}/{s}"]
        except KeyError:
            return None
        return node.attrs.asdict()

    def failures(self) -> list[dict[str, Any]]:
        """Every failure record of the finished shards, each with its "shard"."""
        out: list[dict[str, Any]] = []
        for s in np.flatnonzero(self.shard_done()).tolist():
            record = self.shard_record(s) or {}
            out.extend({**f, "shard": s} for f in record.get("failures", []))
        return sorted(out, key=lambda f: (f["video"], f["shard"]))

    def build_records(self) -> list[dict[str, Any]]:
        """The recorded build commands (oldest first); [] for stores built without records."""
        self._group()
        from zarr.core.sync import sync

        async def _collect() -> list[str]:
            return [k async for k in self._store.list_prefix(f"{PROVENANCE_GROUP}/")]

        out = []
        for key in sorted(sync(_collect())):
            if key.rsplit("/", 1)[-1].startswith("build-") and key.endswith(".json"):
                raw = sync(self._store.get(key, zarr.core.buffer.default_buffer_prototype()))
                if raw is not None:
                    out.append(json.loads(raw.to_bytes()))
        return sorted(out, key=lambda r: r.get("started", ""))

    def failed_videos(self) -> dict[int, str]:
        """video -> reason (the first recorded) for every video that failed to decode.

        Mixed rows whose partner failed are not failures of their own video: `failed_rows`.
        """
        out: dict[int, str] = {}
        for f in self.failures():
            if "row" not in f:
                out.setdefault(f["video"], f["reason"])
        return out

    def failed_rows(self) -> dict[int, dict[str, Any]]:
        """row -> record {"video", "row", "partner", "path", "reason"} for every mixed row
        made invalid by its partner's failure."""
        return {f["row"]: f for f in self.failures() if "row" in f}

    def fp16_kl(self) -> dict[str, float] | None:
        """Worst recorded float16 rounding KL per temperature over the finished shards."""
        worst: dict[str, float] = {}
        for s in np.flatnonzero(self.shard_done()).tolist():
            for tau, kl in ((self.shard_record(s) or {}).get("fp16_kl") or {}).items():
                worst[tau] = max(worst.get(tau, -math.inf), float(kl))
        return worst or None

    def storage_error(self) -> dict[str, dict[str, Any]] | None:
        """The codec error the finished shards recorded, per field ("logits", "features"):
        `*_worst` is the worst over shards, `*_mean` the mean weighted by each shard's "rows"
        (the rows it measured). None when no shard recorded one (raw float storage)."""
        merged: dict[str, dict[str, Any]] = {}
        for s in np.flatnonzero(self.shard_done()).tolist():
            for field, err in ((self.shard_record(s) or {}).get("storage_error") or {}).items():
                m = merged.setdefault(field, {"rows": 0})
                n = int(err["rows"])
                m["rows"] += n
                for key, value in err.items():
                    if key.endswith("_worst"):
                        m[key] = _merge(m.get(key), value, lambda a, v: v if a is None
                                        else max(a, v))
                    elif key.endswith("_mean"):
                        m[key] = _merge(m.get(key), value, lambda a, v, n=n: (a or 0.0) + n * v)
        for m in merged.values():
            for key in [k for k in m if k.endswith("_mean")]:
                m[key] = _merge(None, m[key], lambda a, v, n=max(m["rows"], 1): v / n)
        return merged or None

    def check_compatible(self, *, teacher: Any = None, dataset: Any = None,
                         num_classes: int | None = None) -> None:
        """Refuse a cache made for another run, naming every mismatch.

        teacher: a registry name or a TeacherInfo (name and weights sha256 compared);
        dataset: a DatasetIndex or DatasetInfo (kind, split, subset, classes, index digest).
        """
        m = self.meta
        wrong: list[str] = []

        def cmp(what: str, have: Any, want: Any) -> None:
            if have != want:
                wrong.append(f"{what} {_short(have)} (run expects {_short(want)})")

        if teacher is not None:
            if isinstance(teacher, str):
                cmp("teacher", m.teacher.name, teacher)
            else:
                cmp("teacher", m.teacher.name, teacher.name)
                cmp("teacher weights sha256", m.teacher.weights_sha256, teacher.weights_sha256)
        if dataset is not None:
            cmp("dataset kind", m.dataset.kind, dataset.kind)
            cmp("split", m.dataset.split, dataset.split)
            cmp("subset", m.dataset.subset, dataset.subset)
            classes = tuple(dataset.classes)
            if len(classes) != len(m.dataset.classes):
                cmp("class count", len(m.dataset.classes), len(classes))
            else:
                cmp("class names", list(m.dataset.classes), list(classes))
            digest = getattr(dataset, "index_digest", None) or getattr(dataset, "digest", None)
            cmp("dataset index digest", m.dataset.index_digest, digest)
        if num_classes is not None:
            cmp("class count", m.num_classes, num_classes)
        if wrong:
            raise CacheError(f"{self.location}: cache built for another run: "
                             + "; ".join(dict.fromkeys(wrong)))


def _merge(acc: Any, value: Any, f: Callable[[Any, float], float]) -> Any:
    """f applied to a number, or per key to a {tau: number} mapping."""
    if isinstance(value, Mapping):
        acc = acc or {}
        return {**acc, **{k: f(acc.get(k), float(v)) for k, v in value.items()}}
    return f(acc, float(value))


def _shard_key(name: str, s: int, arr: zarr.Array) -> str:
    return f"{name}/{arr.metadata.encode_chunk_key((s,) + (0,) * (arr.ndim - 1))}"


def shard_error(name: str, s: int, arr: zarr.Array, err: Exception) -> str:
    """One line naming the array, the shard and its file for a failed shard read."""
    if isinstance(err, MissingChunkError):
        return f"array '{name}' shard {s}: {err}"
    what = "checksum mismatch (corrupt data)" if "checksum" in str(err).lower() else str(err)
    return f"array '{name}' shard {s} ({_shard_key(name, s, arr)}): {what}"
