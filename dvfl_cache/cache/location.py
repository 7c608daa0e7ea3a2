"""Where a cache store lives: a directory, a packed .zip, or an HTTP(S)/fsspec URL of either.

Readers accept all four, so a cache can be shared as one file or served over HTTP. Zarr reads
shard indexes and chunks by byte range, so HTTP servers are probed first: one that ignores Range
requests is refused by name instead of surfacing later as a baffling checksum error.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from dvfl_cache.errors import CacheError

__all__ = ["Location", "check_byte_ranges", "locate", "open_store"]

_PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Location:
    """A store's address: kind is "dir", "zip", "url" (a directory served over HTTP or any
    fsspec URL) or "url-zip" (a packed zip behind a URL)."""

    kind: str
    target: str

    def __str__(self) -> str:
        return self.target

    @property
    def is_remote(self) -> bool:
        return self.kind in ("url", "url-zip")


def locate(path_or_url: str | os.PathLike) -> Location:
    s = os.fspath(path_or_url)
    if s.startswith("zip::"):
        inner = s[len("zip::"):]
        return Location("url-zip", inner) if "://" in inner else Location("zip", inner)
    if "://" in s and not s.startswith("file://"):
        if s.rstrip("/").lower().endswith(".zip"):
            return Location("url-zip", s.rstrip("/"))
        return Location("url", s.rstrip("/"))
    if s.startswith("file://"):
        s = s[len("file://"):]
    p = Path(s)
    if not p.exists():
        raise CacheError(f"{s}: no such cache store")
    if p.is_file():
        if p.suffix.lower() != ".zip":
            raise CacheError(f"{s}: not a cache store (expected a directory or a .zip file)")
        return Location("zip", s)
    if not (p / "zarr.json").is_file():
        raise CacheError(f"{s}: not a cache store (no zarr.json in the directory)")
    return Location("dir", s)


def check_byte_ranges(url: str, *, headers: Mapping[str, str] | None = None) -> None:
    """Fail clearly when an HTTP server ignores Range (Python's stock http.server does).

    Zarr reads shard indexes and chunks by byte range; a server that answers 200 with the whole
    file would otherwise surface as a baffling checksum error, or as silently wrong bytes.
    """
    req = urllib.request.Request(url, headers={**(headers or {}), "Range": "bytes=1-4"})
    try:
        with urllib.request.urlopen(req, timeout=_PROBE_TIMEOUT_S) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise CacheError(f"{url}: not found (HTTP 404); is this the URL of a cache store "
                             "or a packed .zip?") from None
        raise CacheError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise CacheError(f"{url}: cannot reach the server ({getattr(e, 'reason', e)})") from None
    if status != 206:
        raise CacheError(f"{url}: the server ignores byte ranges (a ranged request was answered "
                         f"{status} with the full body instead of 206); serve the cache with a "
                         "server that honours HTTP Range requests")


def _probe_url(loc: Location) -> str:
    return loc.target if loc.kind == "url-zip" else f"{loc.target}/zarr.json"


def open_store(loc: Location, *, storage_options: dict[str, Any] | None = None):
    """A read-only zarr store for `loc` (probing HTTP servers for range support first)."""
    if loc.kind == "dir":
        return zarr.storage.LocalStore(loc.target, read_only=True)
    if loc.kind == "zip":
        return zarr.storage.ZipStore(loc.target, mode="r")
    if loc.target.lower().startswith(("http://", "https://")):
        check_byte_ranges(_probe_url(loc), headers=(storage_options or {}).get("headers"))
    url = f"zip::{loc.target}" if loc.kind == "url-zip" else loc.target
    try:
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options,
                                                 read_only=True)
    except (ValueError, ImportError, OSError) as e:
        raise CacheError(f"{loc}: cannot open ({e})") from None
