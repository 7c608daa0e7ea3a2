"""Creating a store's layout without rename: every metadata file, then the root zarr.json with
a create-if-absent write; and the checks around it (what is already there, who is writing it).

Why a module of its own: object stores have no rename, so "a store exists whole or not at all"
and "--overwrite never pulls a store from under a live writer" are built here from two
primitives, create-if-absent and claims (claims.py), the same on a disk and in a bucket.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from dvfl_cache.cache.claims import (CLAIMS_GROUP, ShardClaims, create_exclusive, is_local_fs,
                                     put_atomic)
from dvfl_cache.cache.format import FAILURES_GROUP, SHARD_DONE, CacheMeta
from dvfl_cache.cache.location import storage_error, target_fs
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

MAX_CHUNK_ROWS = 1024
# Build records (the commands that built a store, for its card): optional, one file each.
PROVENANCE_GROUP = "provenance"
CREATE_CLAIM = "create"  # claims/create/: who is creating the store
CREATE_WAIT_S = 600.0
EMPTY_GROUP = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'

# Fill-value chunks must still be written: a shard of all-failed videos is data, and both size
# accounting and `verify`'s "every done shard has its files" rely on it.
WRITE_CONFIG = {"write_empty_chunks": True}


def chunk_rows(views_per_shard: int) -> int:
    """Rows per inner (checksummed) chunk: the largest divisor of the shard <= 1024 rows.

    Smaller inner chunks let a ranged reader fetch part of a shard; a shard whose only small
    divisors are tiny (e.g. a prime) gets a single chunk instead of thousands of 1-row ones.
    """
    if views_per_shard <= MAX_CHUNK_ROWS:
        return views_per_shard
    best = max(d for d in range(1, MAX_CHUNK_ROWS + 1) if views_per_shard % d == 0)
    return best if best >= 64 else views_per_shard


def build_layout(store, meta: CacheMeta) -> None:
    root = zarr.create_group(store=store, zarr_format=3, attributes=meta.to_dict())
    rows, per_shard = meta.num_rows, meta.views_per_shard
    inner = chunk_rows(per_shard)
    for name, (dtype, trail) in meta.row_arrays().items():
        root.create_array(name, shape=(rows, *trail), dtype=dtype,
                          shards=(per_shard, *trail), chunks=(inner, *trail),
                          compressors=[Crc32cCodec()], fill_value=0, config=WRITE_CONFIG,
                          dimension_names=("row", *(f"{name}_{i}" for i in range(len(trail)))))
    root.create_array(SHARD_DONE, shape=(meta.num_shards,), dtype="uint8", chunks=(1,),
                      compressors=[Crc32cCodec()], fill_value=0, config=WRITE_CONFIG,
                      dimension_names=("shard",))
    root.create_group(FAILURES_GROUP)
    root.create_group(CLAIMS_GROUP)


def layout_files(meta: CacheMeta) -> dict[str, bytes]:
    """Every metadata file of a fresh store, built in memory (no data chunks yet)."""
    mem: dict = {}
    build_layout(zarr.storage.MemoryStore(mem), meta)
    return {k: v.to_bytes() for k, v in mem.items()}


def exists_fresh(fs, path: str) -> bool:
    try:
        fs.invalidate_cache(path)
        return bool(fs.exists(path))
    except Exception as e:
        raise storage_error(path, e) from None


def list_entries(fs, root: str) -> list[str]:
    """Names directly under `root` (empty when nothing is there)."""
    try:
        fs.invalidate_cache(root)
        if fs.isfile(root):
            return [root]
        return list(fs.ls(root, detail=False))
    except FileNotFoundError:
        return []
    except Exception as e:
        raise storage_error(root, e) from None


def diagnose_missing(url: str, storage_options: dict[str, Any] | None) -> None:
    """Name a missing bucket (the usual cause of "no zarr.json" in an object store)."""
    if url.lower().startswith(("http://", "https://")):
        return
    fs, path = target_fs(url, storage_options)
    bucket = path.split("/", 1)[0]
    try:
        fs.invalidate_cache(bucket)
        missing = not fs.exists(bucket)
    except Exception as e:
        raise storage_error(url, e) from None
    if missing:
        raise CacheError(f"{url}: the bucket does not exist (create it first)")


def only_layout_leftovers(fs, root: str) -> bool:
    """A creation killed before its root zarr.json: nothing but metadata and claims."""
    files = fs.find(root)
    rel = [f[len(root):].lstrip("/") for f in files]
    return all(r.endswith("zarr.json") or r.startswith(f"{CLAIMS_GROUP}/")
               or r.endswith(".partial") for r in rel)


def remove_store(fs, root: str) -> None:
    try:
        if is_local_fs(fs):
            shutil.rmtree(root)
        else:
            fs.rm(root, recursive=True)
            fs.invalidate_cache(root)
    except FileNotFoundError:
        pass
    except Exception as e:
        raise storage_error(root, e) from None


def write_layout(fs, root: str, meta: CacheMeta) -> bool:
    """Write every metadata file, the root zarr.json last and only if absent.

    No rename is needed (object stores have none): the root zarr.json, holding the CacheMeta,
    is what makes the store exist, and creating it is a create-if-absent write, so two
    processes creating one store cannot both succeed (False for the one that lost).
    """
    files = layout_files(meta)
    root_json = files.pop("zarr.json")
    for key, data in files.items():
        put_atomic(fs, f"{root}/{key}", data)
    return create_exclusive(fs, f"{root}/zarr.json", root_json)


def refuse_if_being_written(fs, root: str, where: str, store) -> None:
    """--overwrite must not pull a store from under a live writer (a claim not yet expired)."""
    try:
        group = zarr.open_group(store=store, mode="r", zarr_format=3)
        done = np.asarray(group[SHARD_DONE][:]) == 1
        shards = np.flatnonzero(~done).tolist()
    except Exception:  # a damaged store: judge every claimed shard
        shards = None
    claims = ShardClaims(fs, root)
    if shards is None:
        names = list_entries(fs, f"{root}/{CLAIMS_GROUP}")
        shards = [int(n.rsplit("/", 1)[-1]) for n in names if n.rsplit("/", 1)[-1].isdigit()]
    live = claims.live_foreign(shards)
    if live:
        raise CacheError(f"{where}: another process is writing this store ({live[0].describe()}"
                         f"{f' and {len(live) - 1} more shards' if len(live) > 1 else ''}); "
                         "refusing to --overwrite it: stop that build first, or wait until its "
                         "claims expire")
