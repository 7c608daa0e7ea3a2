"""Atomic file writes: readers see the old file or the new one, never half of one.

Every file dvfl writes in place (indexes, checkpoints, run records, eval and sweep JSON, packed
stores) goes through here: written beside its final name as ``<name>.tmp``, flushed to disk,
then renamed over it with ``os.replace`` (atomic on POSIX and Windows). A write that fails with
an error removes its temporary file; a process killed mid-write leaves ``<name>.tmp`` behind,
which is never mistaken for the real file (run directories clear their own on resume).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["TMP_SUFFIX", "atomic_path", "discard", "tmp_path_for", "write_atomic",
           "write_json_atomic"]

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def tmp_path_for(path: str | os.PathLike) -> Path:
    """The temporary name a write of ``path`` uses."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary path to write; on success it is fsynced and renamed to ``path``."""
    path = Path(path)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except Exception:
        discard(tmp)
        raise
    os.replace(tmp, path)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, record: Any, *, indent: int | None = 2) -> Path:
    """``record`` as JSON (UTF-8, non-ASCII kept, a final newline) written atomically."""
    return write_atomic(path, json.dumps(record, indent=indent, ensure_ascii=False,
                                         allow_nan=False) + "\n")


def discard(tmp: str | os.PathLike) -> None:
    """Remove a temporary file after a failure without hiding that failure: a cleanup that
    fails too (a read-only or vanished folder) is logged, never raised over the real error."""
    try:
        Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s: %s", tmp, exc)
