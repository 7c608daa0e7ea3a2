"""The teacher-logit cache: a sharded, checksummed Zarr v3 store (see docs/cache-format.md).

Importing this package loads zarr; CLI commands import it inside their function bodies.
"""

from __future__ import annotations

from dvfl_cache.cache.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CacheMeta,
    DatasetInfo,
    SamplerInfo,
    TeacherInfo,
    fp16_kl_error,
)
from dvfl_cache.cache.store import CacheReader, CacheWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CacheMeta",
    "CacheReader",
    "CacheWriter",
    "DatasetInfo",
    "SamplerInfo",
    "TeacherInfo",
    "fp16_kl_error",
]
