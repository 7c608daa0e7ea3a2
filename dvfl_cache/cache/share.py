"""Moving caches around: pack a finished store into one zip, export to and import from HDF5.

Packing copies the finished files into the zip with `zipfile` (ZIP_STORED, so every chunk stays
addressable by byte range and the zip can be served over HTTP as is). Zarr is never asked to
write into a zip incrementally: a zip cannot rewrite a member, so shard rewrites would pile up
duplicate entries. Outputs are written to a temporary name and renamed, so an interrupted
pack or export never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dvfl_cache.atomic import atomic_path
from dvfl_cache.cache.format import SHARD_DONE, CacheMeta
from dvfl_cache.cache.location import locate
from dvfl_cache.cache.store import CacheReader, CacheWriter
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

HDF5_FORMAT = "dvfl-teacher-cache-hdf5"
# JSON travels in scalar string datasets, not HDF5 attributes: attributes are capped at 64 KiB
# and a store's failure records can be longer than that.
H5_META = "meta_json"
H5_RECORDS = "shard_records_json"


def _check_output(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise CacheError(f"{out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)


def pack(store: str | os.PathLike, out: str | os.PathLike, *, allow_incomplete: bool = False,
         overwrite: bool = False, progress: Callable[[int], None] | None = None
         ) -> dict[str, Any]:
    """Copy a finished store directory into one uncompressed zip readable by CacheReader."""
    loc = locate(store)
    if loc.kind != "dir":
        raise CacheError(f"{store}: pack needs a store directory (got a {loc.kind})")
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise CacheError(f"{out}: a packed store must end in .zip (readers recognise it by that)")
    root = Path(loc.target).resolve()
    if out.resolve().is_relative_to(root):
        raise CacheError(f"{out}: cannot pack a store into itself")
    with CacheReader(store) as reader:
        done = reader.shard_done()
    if not done.all() and not allow_incomplete:
        raise CacheError(f"{store}: incomplete ({int(done.sum())} of {len(done)} shards done); "
                         "finish it with --resume or pass --allow-incomplete")
    _check_output(out, overwrite=overwrite)
    files: list[str] = []
    for dirpath, _dirs, names in os.walk(root):
        files += [os.path.relpath(os.path.join(dirpath, f), root) for f in names
                  if not f.endswith(".partial")]  # leftovers of killed writes, not data
    # Root metadata first: a reader streaming the zip meets the description before the data.
    files.sort(key=lambda f: (f != "zarr.json", f))
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for rel in files:
                z.write(root / rel, arcname=Path(rel).as_posix())
                if progress is not None:
                    progress(1)
    log.info("packed %s -> %s (%d files)", store, out, len(files))
    return {"zip": str(out), "files": len(files), "bytes": out.stat().st_size,
            "complete": bool(done.all())}


def export_hdf5(store: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                storage_options: dict[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write every array (one dataset each, same names) plus meta and per-shard records as
    JSON to an HDF5 file. Rows of unfinished shards stay zero, as in the store."""
    import h5py

    out = Path(out)
    _check_output(out, overwrite=overwrite)
    with atomic_path(out) as tmp:
        with CacheReader(store, storage_options=storage_options) as reader, \
                h5py.File(tmp, "w") as h:
            m = reader.meta
            done = reader.shard_done()
            h.attrs["format"] = HDF5_FORMAT
            h.create_dataset(H5_META, data=json.dumps(m.to_dict()), dtype=h5py.string_dtype())
            records = {str(s): reader.shard_record(s) for s in np.flatnonzero(done).tolist()}
            h.create_dataset(H5_RECORDS, data=json.dumps(records), dtype=h5py.string_dtype())
            h.create_dataset(SHARD_DONE, data=done.astype(np.uint8))
            specs = m.row_arrays()
            for name, (dtype, trail) in specs.items():
                h.create_dataset(name, shape=(m.num_rows, *trail), dtype=dtype, fillvalue=0)
            for s in np.flatnonzero(done).tolist():
                rows = reader.shard_rows(s)
                for name in specs:
                    h[name][rows.start:rows.stop] = reader.read(name, rows.start, rows.stop)
                if progress is not None:
                    progress(1)
    log.info("exported %s -> %s", store, out)
    return {"hdf5": str(out), "shards": int(done.sum()), "bytes": out.stat().st_size}


def import_hdf5(src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Rebuild a store from `export_hdf5` output; finished shards go through write_shard, so
    the imported data is checked exactly like freshly built data."""
    import h5py

    src = Path(src)
    if not src.is_file():
        raise CacheError(f"{src}: no such file")
    try:
        h = h5py.File(src, "r")
    except OSError as e:
        raise CacheError(f"{src}: not an HDF5 file ({e})") from None
    with h:
        if h.attrs.get("format") != HDF5_FORMAT or H5_META not in h:
            raise CacheError(f"{src}: not a dvfl cache export (attribute 'format' is "
                             f"{h.attrs.get('format')!r}, expected {HDF5_FORMAT!r})")
        meta = CacheMeta.from_dict(json.loads(_text(h[H5_META])), source=str(src))
        records = json.loads(_text(h[H5_RECORDS])) if H5_RECORDS in h else {}
        specs = meta.row_arrays()
        for name, (dtype, trail) in specs.items():
            if name not in h:
                raise CacheError(f"{src}: dataset '{name}' is missing")
            want = (meta.num_rows, *trail)
            if h[name].shape != want or h[name].dtype != dtype:
                raise CacheError(f"{src}: dataset '{name}' is {h[name].shape} {h[name].dtype}, "
                                 f"expected {want} {dtype}")
        if SHARD_DONE not in h or h[SHARD_DONE].shape != (meta.num_shards,):
            raise CacheError(f"{src}: dataset '{SHARD_DONE}' is missing or has the wrong shape")
        done = np.asarray(h[SHARD_DONE][:]) == 1
        writer = CacheWriter.create(out, meta, overwrite=overwrite)
        for s in np.flatnonzero(done).tolist():
            rows = writer.shard_rows(s)
            record = records.get(str(s))
            if record is None:
                raise CacheError(f"{src}: shard {s} is marked done but has no record in "
                                 f"'{H5_RECORDS}'")
            arrays = {name: h[name][rows.start:rows.stop] for name in specs}
            writer.write_shard(s, arrays, record.get("failures", []),
                               fp16_kl=record.get("fp16_kl"),
                               storage_error=record.get("storage_error"))
            if progress is not None:
                progress(1)
    log.info("imported %s -> %s (%d shards)", src, out, int(done.sum()))
    return {"store": str(out), "shards": int(done.sum())}


def _text(dataset) -> str:
    value = dataset[()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
