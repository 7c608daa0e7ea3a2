"""One way for every stage to name its videos: a dataset on disk, or an index JSON file."""

from __future__ import annotations

import os

from dvfl_cache.data.index import DatasetIndex, load_index
from dvfl_cache.errors import DvflError


def resolve_index(*, index: str | os.PathLike | None = None, kind: str | None = None,
                  root: str | os.PathLike | None = None, split: int = 1, subset: str = "train",
                  videos_dir: str | os.PathLike | None = None,
                  annotations: str | os.PathLike | None = None) -> DatasetIndex:
    """The index a run uses: `index` (a JSON written by `dvfl-cache index`, with `root`
    overriding where its videos are now), or read from the annotations of `kind` under `root`."""
    if index is not None:
        if kind is not None and kind != "list":
            loaded = load_index(index, root=root)
            if loaded.kind != kind:
                raise DvflError(f"{index}: index is of dataset {loaded.kind!r}, not {kind!r}")
            return loaded
        return load_index(index, root=root)
    if kind is None or root is None:
        raise DvflError("name the videos: --dataset KIND --root DIR (with --split/--subset), "
                        "or --index FILE.json")
    from dvfl_cache.data.readers import build_index

    return build_index(kind, root, split=split, subset=subset, videos_dir=videos_dir,
                       annotations=annotations)
