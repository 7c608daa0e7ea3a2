"""Annotation readers: a dataset as users have it on disk -> `DatasetIndex`, by kind.

The dispatcher above the per-kind readers (`readers_local.py`: UCF101, HMDB51, UCF50, plain
lists and the shared helpers; `readers_web.py`: Kinetics-400 and SSv2). `KINDS` is the registry
the CLI offers as `--dataset` choices. `root` is where the user extracted the official archives;
each reader looks for its video folder and annotation files under it in the common layouts, and
`videos_dir` / `annotations` override the search (docs/dataset-index.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from dvfl_cache.data import readers_local, readers_web
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.readers_local import SUBSETS
from dvfl_cache.errors import IndexFormatError

__all__ = ["KINDS", "READERS", "SUBSETS", "build_index"]

READERS = {
    "ucf101": readers_local.read_ucf101,
    "hmdb51": readers_local.read_hmdb51,
    "ucf50": readers_local.read_ucf50,
    "kinetics400": readers_web.read_kinetics400,
    "ssv2": readers_web.read_ssv2,
    "list": readers_local.read_list,
}
KINDS: tuple[str, ...] = tuple(READERS)


def build_index(kind: str, root: str | os.PathLike, *, split: int = 1, subset: str = "train",
                videos_dir: str | os.PathLike | None = None,
                annotations: str | os.PathLike | None = None,
                class_names: str | os.PathLike | None = None) -> DatasetIndex:
    """Read the annotations of dataset `kind` under `root` into an index of one subset."""
    if kind not in READERS:
        raise IndexFormatError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise IndexFormatError(f"{root}: dataset root is not a directory")
    if class_names is not None and kind != "list":
        raise IndexFormatError(f"class names files are for the list kind; {kind} reads its own")
    kw = dict(split=int(split), subset=subset, videos_dir=videos_dir, annotations=annotations)
    if kind == "list":
        kw["class_names"] = class_names
    return READERS[kind](root, **kw)
