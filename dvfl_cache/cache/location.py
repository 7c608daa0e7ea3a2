"""Where a cache store lives: a directory, a packed .zip, or an fsspec URL of either.

Readers accept all four, so a cache can be shared as one file, served over HTTP or kept in an
object store (s3://, gs://, ...). Zarr reads shard indexes and chunks by byte range, so HTTP
servers are probed first: one that ignores Range requests is refused by name instead of
surfacing later as a baffling checksum error. Writers use `target_fs` and `open_writable`, so a
URL is always a URL: nothing here ever turns `s3://b/c.zarr` into a local folder of that name.
Storage failures (no endpoint, no credentials, no bucket) become one `CacheError` line via
`storage_error`; storage options (which may hold secrets) are never put into a message.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from dvfl_cache.errors import CacheError, storage_error  # noqa: F401  (re-exported)

__all__ = ["Location", "check_byte_ranges", "check_s3_endpoint", "is_url", "locate",
           "open_store", "open_writable", "storage_error", "target_fs"]

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


def is_url(path_or_url: str | os.PathLike) -> bool:
    """True for anything fsspec must open (s3://, gs://, http(s)://, zip::...), not file://."""
    s = os.fspath(path_or_url)
    return s.startswith("zip::") or ("://" in s and not s.startswith("file://"))


def local_path(path_or_url: str | os.PathLike) -> str:
    s = os.fspath(path_or_url)
    return s[len("file://"):] if s.startswith("file://") else s


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


def _s3_endpoint(storage_options: Mapping[str, Any] | None) -> str | None:
    """The endpoint an s3:// address is sent to when one is set (None: AWS's own)."""
    so = storage_options or {}
    kwargs = so.get("client_kwargs")
    return (so.get("endpoint_url") or (kwargs.get("endpoint_url") if isinstance(kwargs, Mapping)
                                       else None)
            or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


@functools.lru_cache(maxsize=16)
def _speaks_s3(endpoint: str) -> bool | None:
    """Whether `endpoint` answers an anonymous ListBuckets (GET /) as an S3 server does: with
    x-amz-* headers or an S3 XML body (a listing or an <Error>), whatever the status. None when
    it cannot be asked (unreachable: the storage call names that itself)."""
    req = urllib.request.Request(endpoint.rstrip("/") + "/", method="GET")
    try:
        with urllib.request.urlopen(req, timeout=_PROBE_TIMEOUT_S) as resp:
            headers, body = resp.headers, resp.read(4096)
    except urllib.error.HTTPError as e:
        headers, body = e.headers, e.read(4096)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if any(k.lower().startswith(("x-amz-", "x-amzn-")) for k in (headers or {}).keys()):
        return True
    text = body.decode("utf-8", "replace")
    return "<ListAllMyBucketsResult" in text or ("<Error>" in text and "<Code>" in text)


def check_s3_endpoint(target: str, storage_options: Mapping[str, Any] | None) -> None:
    """Refuse an s3:// address whose endpoint is a web server that does not speak S3 (a
    static file server given as endpoint_url): without this, its 404s read as "the bucket does
    not exist" and its 501s as "[Errno 38] Not Implemented"."""
    if not target.lower().startswith(("s3://", "s3a://")):
        return
    endpoint = _s3_endpoint(storage_options)
    if not isinstance(endpoint, str) or not endpoint.lower().startswith(("http://", "https://")):
        return
    if _speaks_s3(endpoint) is False:
        parts = urllib.parse.urlsplit(endpoint)
        shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        raise CacheError(f"{target}: the endpoint {shown} does not speak S3 (it answers like a "
                         "plain web server); give an S3 endpoint (--storage-option "
                         "endpoint_url=... or AWS_ENDPOINT_URL), or read a store that a web "
                         "server serves by its http(s):// address")


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
    if loc.kind == "url-zip":
        from dvfl_cache.cache.ziprange import ZipRangeStore

        fs, path = target_fs(loc.target, storage_options)
        return ZipRangeStore(fs, path, where=loc.target)
    check_s3_endpoint(loc.target, storage_options)
    try:
        return zarr.storage.FsspecStore.from_url(loc.target,
                                                 storage_options=_fresh(storage_options),
                                                 read_only=True)
    except (ValueError, ImportError, OSError) as e:
        raise CacheError(f"{loc}: cannot open ({e})") from None


def _fresh(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Storage options with fsspec's directory-listing cache off (unless asked for): stores
    change under a reader (shards finish, a card is written) and a cached listing would make
    new keys look missing, e.g. a finished shard's flag read as "not done"."""
    return {"use_listings_cache": False, **(storage_options or {})}


def target_fs(target: str | os.PathLike, storage_options: dict[str, Any] | None = None):
    """(filesystem, path) for a store address; plain paths and file:// give the local fs."""
    import fsspec

    s = os.fspath(target)
    if not is_url(s):
        return fsspec.filesystem("file"), os.path.abspath(local_path(s))
    check_s3_endpoint(s, storage_options)
    try:
        fs, path = fsspec.core.url_to_fs(s, **_fresh(storage_options))
    except Exception as e:
        raise storage_error(s, e) from None
    return fs, path.rstrip("/")


def check_writable(target: str | os.PathLike) -> None:
    """Refuse read-only addresses before anything is attempted there: http(s) and zip URLs,
    and a packed .zip on disk (a zip cannot rewrite a member; share.py)."""
    s = os.fspath(target)
    local_zip = (not is_url(s) and s.rstrip("/").lower().endswith(".zip")
                 and os.path.isfile(local_path(s)))
    if local_zip or s.lower().startswith(("http://", "https://", "zip::")) or (
            is_url(s) and s.rstrip("/").lower().endswith(".zip")):
        raise CacheError(f"{s}: cannot write a store there: zips and http(s) stores are "
                         "read-only (write a directory or s3://, gs://, ... and serve or pack "
                         "it)")


def open_writable(target: str | os.PathLike, storage_options: dict[str, Any] | None = None):
    """A writable zarr store at `target`: LocalStore for local paths (each file written to a
    temporary and renamed, so a killed write never leaves a torn file), zarr's FsspecStore for
    URLs (each object is one PUT, which is atomic on object stores)."""
    s = os.fspath(target)
    if not is_url(s):
        return zarr.storage.LocalStore(local_path(s))
    check_writable(s)
    check_s3_endpoint(s, storage_options)
    try:
        return zarr.storage.FsspecStore.from_url(s, storage_options=_fresh(storage_options),
                                                 read_only=False)
    except Exception as e:
        raise storage_error(s, e) from None
