"""A read-only zarr store over a packed .zip behind a URL, reading only the bytes asked for.

Why this exists: reading a zip member through Python's zipfile (and so through fsspec's
`zip::` chain) seeks by reading and discarding everything before the offset, and the remote file
under it fetches whole read-ahead blocks: a packed cache read over HTTP moved 3-12x the bytes of
the epoch block it returned. Here the central directory is read once, when the store opens;
after that a request for bytes [a, b) of a member is one ranged read of exactly those bytes
(plus, the first time a member is touched, its 30-byte local header, whose length fields say
where the data starts). Packs are ZIP_STORED, so member bytes are the file's bytes.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import zipfile
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (ByteRequest, OffsetByteRequest, RangeByteRequest, Store,
                            SuffixByteRequest)
from zarr.core.buffer import Buffer, BufferPrototype

from dvfl_cache.errors import CacheError, storage_error

__all__ = ["ZipRangeStore"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length
_LOCAL_SIG = b"PK\x03\x04"


class ZipRangeStore(Store):
    """Members of the ZIP_STORED zip at `path` on filesystem `fs`, read by byte range."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, fs, path: str, *, where: str | None = None):
        super().__init__(read_only=True)
        self.fs, self.path = fs, path
        self.where = where or path
        self._lock = threading.Lock()
        # key -> [local header offset, size, data offset once known]
        self._members: dict[str, list] = {}
        try:
            with fs.open(path, "rb", cache_type="none") as f:
                with zipfile.ZipFile(f) as zf:
                    infos = zf.infolist()
        except zipfile.BadZipFile as e:
            raise CacheError(f"{self.where}: not a zip file ({e})") from None
        except FileNotFoundError:
            raise CacheError(f"{self.where}: no such file") from None
        except Exception as e:
            raise storage_error(self.where, e) from None
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise CacheError(f"{self.where}: member {info.filename} is compressed; a "
                                 "packed cache must be uncompressed (ZIP_STORED), as "
                                 "`dvfl-cache pack` writes it")
            if not info.is_dir():
                self._members[info.filename] = [info.header_offset, info.file_size, None]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZipRangeStore) and (other.fs, other.path) == (self.fs, self.path)

    def __repr__(self) -> str:
        return f"ZipRangeStore({self.where!r})"

    def _data_offset(self, key: str) -> int:
        entry = self._members[key]
        with self._lock:
            if entry[2] is not None:
                return entry[2]
        head = self.fs.cat_file(self.path, start=entry[0], end=entry[0] + _LOCAL_HEADER.size)
        sig, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        if sig != _LOCAL_SIG:
            raise CacheError(f"{self.where}: damaged zip: no local header for {key}")
        with self._lock:
            entry[2] = entry[0] + _LOCAL_HEADER.size + name_len + extra_len
        return entry[2]

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if key not in self._members:
            return None
        size = self._members[key][1]
        if byte_range is None:
            start, end = 0, size
        elif isinstance(byte_range, RangeByteRequest):
            start, end = byte_range.start, min(byte_range.end, size)
        elif isinstance(byte_range, OffsetByteRequest):
            start, end = byte_range.offset, size
        elif isinstance(byte_range, SuffixByteRequest):
            start, end = max(size - byte_range.suffix, 0), size
        else:
            raise TypeError(f"unexpected byte range {byte_range!r}")
        if end <= start:
            return b""
        off = self._data_offset(key)
        return self.fs.cat_file(self.path, start=off + start, end=off + end)

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return key in self._members

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(f"{self.where}: a packed cache is read-only")

    async def delete(self, key: str) -> None:
        raise PermissionError(f"{self.where}: a packed cache is read-only")

    async def list(self) -> AsyncIterator[str]:
        for key in list(self._members):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in list(self._members):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        seen: set[str] = set()
        for key in list(self._members):
            if prefix:
                if not key.startswith(prefix + "/"):
                    continue
                rest = key[len(prefix) + 1:]
            else:
                rest = key
            child = rest.split("/", 1)[0]
            if child and child not in seen:
                seen.add(child)
                yield child
