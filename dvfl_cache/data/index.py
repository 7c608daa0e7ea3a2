"""The dataset index: which videos, with which labels, in which order.

Everything downstream (views, cache rows, student training) refers to videos by their position
in this index, so the index is written once to a JSON file and its digest travels with every
cache. The digest covers what decides the rows (kind, split, subset, classes, each video's path,
label and id) but not the root folder, so moving the data keeps caches valid.
The JSON layout is documented in docs/dataset-index.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from dvfl_cache.atomic import write_atomic
from dvfl_cache.errors import IndexFormatError

log = logging.getLogger(__name__)

INDEX_FORMAT = "dvfl-index"
INDEX_VERSION = 1


@dataclass(frozen=True)
class ProbeResult:
    """What opening a video found; `error` is None for a readable video."""

    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {"num_frames": self.num_frames, "fps": self.fps, "width": self.width,
                "height": self.height, "error": self.error}

    @classmethod
    def from_dict(cls, d: dict) -> ProbeResult:
        return cls(num_frames=d.get("num_frames"), fps=d.get("fps"), width=d.get("width"),
                   height=d.get("height"), error=d.get("error"))


@dataclass(frozen=True)
class VideoEntry:
    """One video: `path` relative to the index root, 0-based `label`, stable `video_id`.

    `probe` is filled by `probe_index` and is not part of the digest.
    """

    path: str
    label: int
    video_id: str
    probe: ProbeResult | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DatasetIndex:
    """Videos of one subset of one split; a video's label indexes `classes`.

    `skipped` lists (path, reason) of annotated videos left out (missing files); it is reported,
    not hashed.
    """

    kind: str
    split: int
    subset: str
    classes: tuple[str, ...]
    videos: tuple[VideoEntry, ...]
    root: str
    skipped: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def digest(self) -> str:
        return index_digest(kind=self.kind, split=self.split, subset=self.subset,
                            classes=self.classes, videos=self.videos)

    def abspath(self, video: int) -> str:
        """Absolute path of video number `video` (paths in the index are relative to `root`)."""
        return os.path.join(self.root, self.videos[video].path)

    def with_root(self, root: str | os.PathLike) -> DatasetIndex:
        return replace(self, root=str(root))

    def with_videos(self, videos: tuple[VideoEntry, ...]) -> DatasetIndex:
        return replace(self, videos=tuple(videos))

    def to_dict(self) -> dict:
        videos = []
        for v in self.videos:
            d = {"path": v.path, "label": v.label, "video_id": v.video_id}
            if v.probe is not None:
                d["probe"] = v.probe.to_dict()
            videos.append(d)
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "kind": self.kind,
            "split": self.split,
            "subset": self.subset,
            "root": self.root,
            "digest": self.digest,
            "num_classes": len(self.classes),
            "num_videos": len(self.videos),
            "classes": list(self.classes),
            "videos": videos,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def index_digest(*, kind: str, split: int, subset: str, classes, videos) -> str:
    """sha256 of a canonical JSON of what decides the rows of a cache (not the root)."""
    payload = {
        "kind": kind,
        "split": int(split),
        "subset": subset,
        "classes": list(classes),
        "videos": [[v.path, int(v.label), v.video_id] for v in videos],
    }
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def save_index(index: DatasetIndex, path: str | os.PathLike) -> None:
    """Write the index as UTF-8 JSON (atomically, so a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(index.to_dict(), ensure_ascii=False, indent=1) + "\n")


def _field(d: dict, name: str, kind: type | tuple[type, ...], where: str):
    if name not in d:
        raise IndexFormatError(f"{where}: missing field {name!r}")
    value = d[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise IndexFormatError(f"{where}: field {name!r} should be {expected}, "
                               f"found {type(value).__name__} {value!r}")
    return value


def index_from_dict(d: dict, *, source: str = "<dict>") -> DatasetIndex:
    """Parse and check a dict written by `DatasetIndex.to_dict`."""
    if not isinstance(d, dict) or d.get("format") != INDEX_FORMAT:
        raise IndexFormatError(f"{source}: not a dvfl index (no \"format\": \"{INDEX_FORMAT}\")")
    version = _field(d, "version", int, source)
    if version > INDEX_VERSION:
        raise IndexFormatError(f"{source}: index version {version} was written by a newer dvfl "
                               f"(this one reads up to {INDEX_VERSION}); upgrade dvfl")
    classes = _field(d, "classes", list, source)
    for c in classes:
        if not isinstance(c, str):
            raise IndexFormatError(f"{source}: class names must be strings, found {c!r}")
    videos = []
    for i, v in enumerate(_field(d, "videos", list, source)):
        where = f"{source}: videos[{i}]"
        if not isinstance(v, dict):
            raise IndexFormatError(f"{where}: expected an object, found {v!r}")
        label = _field(v, "label", int, where)
        if not 0 <= label < len(classes):
            raise IndexFormatError(f"{where}: label {label} outside 0..{len(classes) - 1}")
        probe = v.get("probe")
        videos.append(VideoEntry(path=_field(v, "path", str, where), label=label,
                                 video_id=_field(v, "video_id", str, where),
                                 probe=ProbeResult.from_dict(probe) if probe else None))
    skipped = tuple((s["path"], s["reason"]) for s in d.get("skipped", []))
    index = DatasetIndex(kind=_field(d, "kind", str, source), split=_field(d, "split", int, source),
                         subset=_field(d, "subset", str, source), classes=tuple(classes),
                         videos=tuple(videos), root=_field(d, "root", str, source),
                         skipped=skipped)
    stored = d.get("digest")
    if stored is not None and stored != index.digest:
        # The digest is always recomputed from the content, so provenance stays right; the
        # mismatch only means someone edited the file after `dvfl-cache index` wrote it.
        log.warning("%s: stored digest %s differs from its content (%s); the file was edited",
                    source, stored, index.digest)
    return index


def load_index(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> DatasetIndex:
    """Read an index written by `save_index`; `root` overrides where the videos are now."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: index file not found") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    index = index_from_dict(d, source=str(path))
    if root is not None:
        index = index.with_root(root)
    return index
