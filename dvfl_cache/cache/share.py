"""Moving caches around: pack a finished store into one zip, export to and import from HDF5,
write its card (only for a store that verifies: `verify` lives above the card module).

Packing copies the finished files into the zip with `zipfile` (ZIP_STORED, so every chunk stays
addressable by byte range and the zip can be served over HTTP as is). Zarr is never asked to
write into a zip incrementally: a zip cannot rewrite a member, so shard rewrites would pile up
duplicate entries. Outputs are written to a temporary name and renamed, so an interrupted
pack or export never leaves a file that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dvfl_cache.atomic import discard
from dvfl_cache.cache.format import SHARD_DONE, CacheMeta
from dvfl_cache.cache.card import (CARD_NAME, MANIFEST_NAME, card_fields, is_data_key,
                                   make_card, manifest_text, render_card, store_get,
                                   store_keys)
from dvfl_cache.cache.claims import put_atomic
from dvfl_cache.cache.location import is_url, local_path, locate, storage_error, target_fs
from dvfl_cache.cache.store import (CacheReader, CacheWriter, MissingChunkError,
                                    shard_error)
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

HDF5_FORMAT = "dvfl-teacher-cache-hdf5"
# JSON travels in scalar string datasets, not HDF5 attributes: attributes are capped at 64 KiB
# and a store's failure records can be longer than that.
H5_META = "meta_json"
H5_RECORDS = "shard_records_json"


def _check_output(out: str, *, overwrite: bool,
                  storage_options: dict[str, Any] | None = None) -> None:
    fs, path = target_fs(out, storage_options)
    try:
        exists = fs.exists(path)
    except Exception as e:
        raise storage_error(out, e) from None
    if exists and not overwrite:
        raise CacheError(f"{out} already exists; pass --overwrite to replace it")
    if not is_url(out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _tmp_for(out: str) -> Path:
    """A temporary file to write `out` into: beside it on disk (then renamed), or in the
    system's temporary folder for a URL (then uploaded in one PUT, which is atomic)."""
    if is_url(out):
        return Path(tempfile.gettempdir()) / f"dvfl-{uuid.uuid4().hex[:8]}.partial"
    p = Path(local_path(out))
    return p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.partial")


@contextmanager
def _writing(out: str) -> Iterator[None]:
    """A failed write of `out` (full or read-only disk, file size limit) as one CacheError
    naming `out` and the disk's reason, never a library's traceback."""
    try:
        yield
    except CacheError:
        raise
    except (OSError, RuntimeError) as e:  # h5py reports a failed flush as RuntimeError
        raise CacheError(f"{out}: cannot write: {_disk_reason(e)}") from None


def _disk_reason(e: BaseException) -> str:
    found = re.search(r"error message = '([^']*)'", str(e))
    if found:
        return found.group(1)
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


@contextmanager
def _hdf5_for_writing(h5py, path: Path) -> Iterator[Any]:
    """An HDF5 file written through a Python file object.

    Why: with HDF5's own file driver a failed write (full disk, size limit) surfaces as a
    RuntimeError at close, then errors from every object's deallocation and a crash at exit;
    through a file object the disk's OSError comes back as itself, once, and nothing crashes.
    """
    with open(path, "w+b") as f, h5py.File(f, "w") as h:
        yield h


def _publish(tmp: Path, out: str, storage_options: dict[str, Any] | None) -> int:
    """Move a finished temporary into place; returns its size."""
    size = tmp.stat().st_size
    if not is_url(out):
        os.replace(tmp, local_path(out))
        return size
    fs, path = target_fs(out, storage_options)
    try:
        fs.put_file(str(tmp), path)
    except Exception as e:
        raise storage_error(out, e) from None
    return size


def pack(store: str | os.PathLike, out: str | os.PathLike, *, allow_incomplete: bool = False,
         overwrite: bool = False, storage_options: dict[str, Any] | None = None,
         progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Copy a finished store (directory or object-store URL) into one uncompressed zip readable
    by CacheReader, with its dataset card (README.md) and manifest inside."""
    store, out = os.fspath(store), os.fspath(out)
    loc = locate(store)
    if loc.kind not in ("dir", "url") or store.lower().startswith("http"):
        raise CacheError(f"{store}: pack needs a store directory or an object-store URL "
                         f"(got a {loc.kind})")
    if not out.lower().endswith(".zip"):
        raise CacheError(f"{out}: a packed store must end in .zip (readers recognise it by that)")
    if loc.kind == "dir" and not is_url(out):
        root = Path(loc.target).resolve()
        if Path(local_path(out)).resolve().is_relative_to(root):
            raise CacheError(f"{out}: cannot pack a store into itself")
    with CacheReader(store, storage_options=storage_options) as reader:
        done = reader.shard_done()
        if not done.all() and not allow_incomplete:
            raise CacheError(f"{store}: incomplete ({int(done.sum())} of {len(done)} shards "
                             "done); finish it with --resume or pass --allow-incomplete")
        _check_output(out, overwrite=overwrite, storage_options=storage_options)
        keys = [k for k in store_keys(reader) if is_data_key(k)]
        _refuse_missing_files(reader, done, set(keys))
        # Root metadata first: a reader streaming the zip meets the description before the data.
        keys.sort(key=lambda f: (f != "zarr.json", f))
        tmp = _tmp_for(out)
        digests: dict[str, str] = {}
        size_bytes = 0
        try:
            with _writing(out), zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                allowZip64=True) as z:
                for key in keys:
                    data = store_get(reader, key)
                    if data is None:
                        continue
                    digests[key] = hashlib.sha256(data).hexdigest()
                    size_bytes += len(data)
                    z.writestr(_member(key), data)
                    if progress is not None:
                        progress(1)
                fields = card_fields(reader, digests, address=out, size_bytes=size_bytes)
                z.writestr(_member(MANIFEST_NAME), manifest_text(digests))
                z.writestr(_member(CARD_NAME), render_card(fields))
            size = _publish(tmp, out, storage_options)
        finally:
            discard(tmp)
    log.info("packed %s -> %s (%d files)", store, out, len(digests))
    return {"zip": out, "files": len(digests), "bytes": size, "complete": bool(done.all()),
            "manifest": fields["manifest"]["sha256"]}


def _refuse_missing_files(reader: CacheReader, done: np.ndarray, present: set[str]) -> None:
    """A done shard whose file is absent must not be copied on as if it were whole (a reader
    of the copy would refuse it only when it reaches that shard, and a card would vouch for
    it): the reader's own rule (`MissingChunkError`), checked up front on the listing."""
    from dvfl_cache.cache.health import repair_command

    for s in np.flatnonzero(done).tolist():
        for name in reader.meta.row_arrays():
            key = reader.shard_key(name, s)
            if key not in present:
                what = shard_error(name, s, reader.array(name), MissingChunkError(key))
                raise CacheError(f"{reader.location}: {what}; repair it with "
                                 f"{repair_command(reader.location)}")


def write_card(store: str | os.PathLike, *, storage_options: dict[str, Any] | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write README.md and manifest.sha256 into a store directory or object-store URL.

    A card vouches for a store, so only a store that passes `verify` (every chunk read back,
    complete, consistent with its metadata) gets one; an old card is not checked, it is being
    replaced."""
    from dvfl_cache.cache.inspect import verify

    address = os.fspath(store)
    with CacheReader(address, storage_options=storage_options) as reader:
        if reader.location.kind in ("zip", "url-zip") or address.lower().startswith("http"):
            raise CacheError(f"{address}: cannot write a card into a zip or http(s) store; "
                             "`pack` writes one into the zip it makes")
        try:
            verify(address, storage_options=storage_options, against_card=False)
        except CacheError as e:
            raise CacheError(f"{address}: no card for a store that does not verify: "
                             f"{str(e).removeprefix(f'{reader.location}: ')}") from None
        card, manifest, fields = make_card(reader, address=address, progress=progress)
    fs, root = target_fs(address, storage_options)
    put_atomic(fs, f"{root}/{MANIFEST_NAME}", manifest.encode())
    put_atomic(fs, f"{root}/{CARD_NAME}", card.encode())
    log.info("wrote the card of %s (manifest %s)", address, fields["manifest"]["sha256"])
    return fields


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def export_hdf5(store: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                storage_options: dict[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write every array (one dataset each, same names) plus meta and per-shard records as
    JSON to an HDF5 file. Rows of unfinished shards stay zero, as in the store."""
    import h5py

    out = os.fspath(out)
    _check_output(out, overwrite=overwrite, storage_options=storage_options)
    tmp = _tmp_for(out)
    try:
        with CacheReader(store, storage_options=storage_options) as reader, \
                _writing(out), _hdf5_for_writing(h5py, tmp) as h:
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
        size = _publish(tmp, out, storage_options)
    finally:
        discard(tmp)
    log.info("exported %s -> %s", store, out)
    return {"hdf5": out, "shards": int(done.sum()), "bytes": size}


def import_hdf5(src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                storage_options: dict[str, Any] | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Rebuild a store (directory or object-store URL) from `export_hdf5` output (a file or a
    URL); finished shards go through write_shard, so the imported data is checked exactly
    like freshly built data."""
    import h5py

    src, out = os.fspath(src), os.fspath(out)
    fs, path = target_fs(src, storage_options)
    try:
        if not fs.isfile(path):
            raise CacheError(f"{src}: no such file")
        handle = fs.open(path, "rb") if is_url(src) else path
    except CacheError:
        raise
    except Exception as e:
        raise storage_error(src, e) from None
    try:
        h = h5py.File(handle, "r")
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
        writer = CacheWriter.create(out, meta, overwrite=overwrite,
                                    storage_options=storage_options)
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
    return {"store": out, "shards": int(done.sum())}


def _text(dataset) -> str:
    value = dataset[()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- columnar export --------------------------------------------------------------------------

PARQUET_FORMAT = "dvfl-teacher-cache-parquet"
# Suffixes each exporter writes; any other is refused rather than written under a wrong name.
EXPORT_SUFFIXES = {"hdf5": (".h5", ".hdf5"), "parquet": (".parquet", ".pq")}
# uint8 flags of the store that read as booleans in a table
_FLAGS = ("valid", "flip", "gray", "partner_flip", "partner_gray")


def export_format(out: str, fmt: str | None) -> str:
    """The format to write ``out`` in: ``fmt`` when its suffix agrees, else the one its suffix
    names; a suffix no exporter writes, or one that disagrees with ``fmt``, is refused in one
    line (an .parquet file holding HDF5 would mislead every reader)."""
    suffix = Path(out.split("?", 1)[0]).suffix.lower()
    by_suffix = next((f for f, sx in EXPORT_SUFFIXES.items() if suffix in sx), None)
    known = "; ".join(f"{f}: {', '.join(sx)}" for f, sx in EXPORT_SUFFIXES.items())
    if by_suffix is None:
        raise CacheError(f"{out}: export writes {known}; the suffix {suffix or '(none)'!r} "
                         "names none of them")
    if fmt is not None and fmt != by_suffix:
        raise CacheError(f"{out}: --format {fmt} writes {', '.join(EXPORT_SUFFIXES[fmt])}, "
                         f"not {suffix!r}")
    return by_suffix


def _arrow_column(pa, name: str, values: np.ndarray):
    """A store array (n, *trail) as an Arrow column: scalars as themselves, vectors and
    matrices as fixed-size lists (what pandas, DuckDB and HF datasets read as lists)."""
    from dvfl_cache.data.mix import OPS

    if name == "mix_op":
        return pa.array(np.asarray(OPS, dtype=object)[values.astype(np.int64)], pa.string())
    if name in _FLAGS:
        return pa.array(values.astype(bool))
    if values.dtype == np.float16:
        values = values.astype(np.float32)  # half floats are not read everywhere
    arr = pa.array(np.ascontiguousarray(values).reshape(-1))
    for width in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(width))
    return arr


def export_parquet(store: str | os.PathLike, out: str | os.PathLike, *, index=None,
                   overwrite: bool = False, storage_options: dict[str, Any] | None = None,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One Parquet row per cached view of the finished shards: ``row``, the view record
    (``video_index``, ``view``, ``frames``, ``crop``, ``flip``, ``jitter``, ``gray``, per-frame
    jitter when stored, and for a mixed store ``mix_op``, ``mix_lambda``, ``mix_box`` and the
    partner's view), ``label``, ``valid``, ``logits`` (float32, decoded), ``features`` when
    stored, and with ``index`` (the store's `DatasetIndex`, checked against it) the ``video``
    path (and ``partner_path``) relative to the index's root. The store's metadata is the file's
    key-value metadata ``dvfl`` (JSON). One row group per shard, read and written in turn, so
    memory stays at one shard whatever the store's size."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CacheError(f"{out}: the Parquet export needs pyarrow: pip install "
                         "'dvfl[parquet]'") from None

    out = os.fspath(out)
    _check_output(out, overwrite=overwrite, storage_options=storage_options)
    tmp = _tmp_for(out)
    rows_written = 0
    try:
        with CacheReader(store, storage_options=storage_options) as reader, _writing(out):
            m = reader.meta
            if index is not None:
                reader.check_compatible(dataset=index)
                paths = np.asarray([v.path for v in index.videos], dtype=object)
            done = reader.shard_done()
            names = list(m.value_arrays())
            order = ["video", "view", "label", "valid"]
            names = order + [k for k in names if k not in order]
            meta = {"dvfl": json.dumps(m.to_dict()), "dvfl_format": PARQUET_FORMAT}
            writer = None
            try:
                for s in np.flatnonzero(done).tolist():
                    rows = reader.shard_rows(s)
                    cols = {"row": pa.array(np.arange(rows.start, rows.stop, dtype=np.int64))}
                    raw = {name: reader.read(name, rows.start, rows.stop) for name in names}
                    for name, values in raw.items():
                        col = "video_index" if name == "video" else name
                        cols[col] = _arrow_column(pa, name, values)
                    if index is not None:
                        cols["video"] = pa.array(paths[raw["video"].astype(np.int64)],
                                                 pa.string())
                        if "partner_video" in raw:  # unmixed rows have no partner: null
                            cols["partner_path"] = pa.array(
                                paths[raw["partner_video"].astype(np.int64)], pa.string(),
                                mask=raw["mix_op"] == 0)
                    table = pa.table(cols)
                    if writer is None:
                        schema = table.schema.with_metadata(meta)
                        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                    writer.write_table(table.replace_schema_metadata(meta))
                    rows_written += len(rows)
                    if progress is not None:
                        progress(1)
                if writer is None:  # no finished shard: an empty table of the right columns
                    raise CacheError(f"{store}: no finished shard to export")
            finally:
                if writer is not None:
                    writer.close()
        size = _publish(tmp, out, storage_options)
    finally:
        discard(tmp)
    log.info("exported %s -> %s (%d rows)", store, out, rows_written)
    return {"parquet": out, "shards": int(done.sum()), "rows": rows_written, "bytes": size}
