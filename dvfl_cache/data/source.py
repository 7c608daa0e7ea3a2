"""One way for every stage to name its videos: a dataset on disk, or an index JSON file."""

from __future__ import annotations

import logging
import os

from dvfl_cache.data.index import DatasetIndex, load_index
from dvfl_cache.errors import DvflError

log = logging.getLogger(__name__)


def resolve_index(*, index: str | os.PathLike | None = None, kind: str | None = None,
                  root: str | os.PathLike | None = None, split: int = 1, subset: str = "train",
                  videos_dir: str | os.PathLike | None = None,
                  annotations: str | os.PathLike | None = None) -> DatasetIndex:
    """The index a run uses: `index` (a JSON written by `dvfl-cache index`, with `root`
    overriding where its videos are now), or read from the annotations of `kind` under `root`."""
    if index is not None:
        loaded = load_index(index)
        if kind is not None and kind != "list" and loaded.kind != kind:
            raise DvflError(f"{index}: index is of dataset {loaded.kind!r}, not {kind!r}")
        return locate_videos(loaded, root, source=index)
    if kind is None or root is None:
        raise DvflError("name the videos: --dataset KIND --root DIR (with --split/--subset), "
                        "or --index FILE.json")
    from dvfl_cache.data.readers import build_index

    return build_index(kind, root, split=split, subset=subset, videos_dir=videos_dir,
                       annotations=annotations)


# How many of an index's paths are looked at before any decoding (spread over the index).
PRESENCE_SAMPLE = 8


def _sample(index: DatasetIndex) -> list[str]:
    n = len(index.videos)
    picks = sorted({(i * n) // PRESENCE_SAMPLE for i in range(min(n, PRESENCE_SAMPLE))})
    return [index.videos[i].path for i in picks]


def _present(root: str, paths: list[str]) -> bool:
    return any(os.path.exists(os.path.join(root, p)) for p in paths)


def locate_videos(index: DatasetIndex, root: str | os.PathLike | None = None, *,
                  source: str | os.PathLike = "the index") -> DatasetIndex:
    """`index` with `root` (default: its stored video folder) as the folder its videos are in.

    Why: an index stores its *video* folder, while users naturally pass the dataset folder
    they gave to `dvfl-cache index`. Before anything is decoded, a few paths spread over the
    index are looked up; if none exists under the root given, its sub-folders (one level:
    where `index` found the videos) and the stored folder's name under it are tried, and
    otherwise the run stops in one line instead of "building" a store of failures.
    URLs are not checked (nothing to stat).
    """
    given = os.fspath(root) if root is not None else index.root
    paths = _sample(index)
    if not paths or "://" in given:
        return index.with_root(given) if root is not None else index
    if _present(given, paths):
        return index.with_root(given) if root is not None else index
    candidates = []
    stored_name = os.path.basename(os.path.normpath(index.root))
    if stored_name:
        candidates.append(os.path.join(given, stored_name))
    if os.path.isdir(given):
        candidates += sorted(os.path.join(given, d) for d in os.listdir(given)
                             if os.path.isdir(os.path.join(given, d)))
    for c in candidates:
        if _present(c, paths):
            log.info("%s: videos found under %s (the video folder inside %s)", source, c, given)
            return index.with_root(c)
    flag = "--root" if root is not None else "its stored root (pass --root)"
    raise DvflError(f"{source}: none of its videos found under {given} ({flag}); expected e.g. "
                    f"{os.path.join(given, paths[0])}; pass the folder the videos are in, or the "
                    "dataset folder given to `dvfl-cache index`")
