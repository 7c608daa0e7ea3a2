"""Annotation readers of UCF101, HMDB51, UCF50 and plain lists, and the helpers every reader
shares (`readers_web.py` holds Kinetics-400 and SSv2; `readers.py` dispatches by kind).

`root` is where the user extracted the official archives; each reader looks for its video
folder and annotation files under it in the common layouts (official archive names, MMAction2's
`videos/` + `annotations/`), and `videos_dir` / `annotations` override the search. Paths in the
index are relative to the video folder, which becomes the index root. Annotated videos whose
file is missing are left out and listed in `DatasetIndex.skipped` (and logged), never dropped
silently. The kinds and what each expects are described in docs/dataset-index.md.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from dvfl_cache.data.index import DatasetIndex, VideoEntry
from dvfl_cache.errors import IndexFormatError

log = logging.getLogger(__name__)

SUBSETS = ("train", "test", "val")
VIDEO_EXTS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
              ".3gp", ".ogv")


# ---------------------------------------------------------------------------- shared helpers


def read_lines(path: Path, *, what: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as (1-based line number, text without trailing space).

    Universal newlines make CRLF files (UCF101's lists) read like LF ones; a BOM is dropped.
    """
    try:
        with open(path, encoding="utf-8-sig", errors="strict", newline=None) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise IndexFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [(i + 1, line.rstrip()) for i, line in enumerate(lines) if line.strip()]


def parse_int(text: str, *, path: Path, lineno: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise IndexFormatError(f"{path}:{lineno}: {what} should be an integer, "
                               f"found {text!r}") from None


def locate(root: Path, candidates: Iterable[str], check: Callable[[Path], bool], *,
           what: str, flag: str) -> Path:
    """First `root/<candidate>` directory passing `check`; candidates may be nested paths.

    One level of wrapping folder (e.g. an archive extracted into its own folder) is also tried.
    """
    candidates = list(candidates)
    bases = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for base in bases:
        for name in candidates:
            d = (base / name) if name != "." else base
            if d.is_dir() and check(d):
                return d
    tried = [name if name != "." else "the root itself" for name in candidates]
    raise IndexFormatError(f"{root}: no {what} found (looked for {', '.join(tried)} and one "
                           f"folder deeper); point to it with {flag}")


def require_dir(path: str | os.PathLike, *, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise IndexFormatError(f"{p}: {what} is not a directory")
    return p


def has_subdirs(d: Path) -> bool:
    return any(p.is_dir() for p in d.iterdir())


class DiskFiles:
    """Video files under a folder, found once by walking it, looked up by relative path.

    Lookups are exact first and case-insensitive second, which is how UCF101's
    `HandStandPushups` in the lists finds `HandstandPushups` on disk.
    """

    def __init__(self, top: Path, *, exts: tuple[str, ...] = VIDEO_EXTS):
        self.top = top
        self.exact: set[str] = set()
        self.lower: dict[str, str] = {}
        self.stems: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, top)
            for name in sorted(filenames):
                if not name.lower().endswith(exts):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                self.exact.add(rel)
                self.lower.setdefault(rel.lower(), rel)
                self.stems.setdefault(os.path.splitext(name)[0], rel)
        log.debug("%s: %d video files", top, len(self.exact))

    def resolve(self, rel: str) -> str | None:
        rel = rel.replace("\\", "/").lstrip("/")
        if rel in self.exact:
            return rel
        return self.lower.get(rel.lower())


def finish(*, kind: str, split: int, subset: str, classes: list[str] | tuple[str, ...],
           videos: list[VideoEntry], root: Path, skipped: list[tuple[str, str]],
           source: Path) -> DatasetIndex:
    """Check what every reader must guarantee, log what was left out, build the index."""
    seen: dict[str, str] = {}
    for v in videos:
        if v.video_id in seen:
            raise IndexFormatError(f"{source}: video {v.path!r} listed twice "
                                   f"(id {v.video_id!r}, first as {seen[v.video_id]!r})")
        seen[v.video_id] = v.path
    if skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
        log.warning("%s: %d annotated videos left out: %s%s", source, len(skipped), shown,
                    " ..." if len(skipped) > 5 else "")
    if not videos:
        raise IndexFormatError(f"{source}: no videos of subset {subset!r} found "
                               f"({len(skipped)} annotated but missing under {root})")
    log.info("%s split %d %s: %d videos, %d classes", kind, split, subset, len(videos),
             len(classes))
    return DatasetIndex(kind=kind, split=int(split), subset=subset, classes=tuple(classes),
                        videos=tuple(videos), root=str(root.resolve()), skipped=tuple(skipped))


def check_subset(kind: str, subset: str, allowed: tuple[str, ...]) -> None:
    if subset not in allowed:
        raise IndexFormatError(f"{kind} has subsets {', '.join(allowed)}, not {subset!r}")


def check_split(kind: str, split: int, n: int) -> None:
    if not 1 <= split <= n:
        raise IndexFormatError(f"{kind} has splits 1..{n}, not {split}")


# ---------------------------------------------------------------------------- UCF101


def read_class_ind(path: Path) -> list[str]:
    """`classInd.txt`: `<1-based number> <ClassName>` lines, numbers 1..N without gaps."""
    numbered = {}
    for lineno, line in read_lines(path, what="class list"):
        fields = line.split()
        if len(fields) != 2:
            raise IndexFormatError(f"{path}:{lineno}: expected '<number> <ClassName>', "
                                   f"found {line!r}")
        num = parse_int(fields[0], path=path, lineno=lineno, what="class number")
        if num in numbered:
            raise IndexFormatError(f"{path}:{lineno}: class number {num} given twice")
        numbered[num] = fields[1]
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise IndexFormatError(f"{path}: class numbers should run 1..{len(numbered)} "
                               f"without gaps, found {sorted(numbered)}")
    return [numbered[i] for i in range(1, len(numbered) + 1)]


def read_ucf101(root: Path, *, split: int, subset: str, videos_dir=None,
                annotations=None) -> DatasetIndex:
    check_split("ucf101", split, 3)
    check_subset("ucf101", subset, ("train", "test"))
    if annotations is not None:
        adir = Path(annotations).expanduser()
        adir = adir.parent if adir.is_file() else require_dir(adir, what="--annotations")
    else:
        adir = locate(root, ["ucfTrainTestlist", "UCF101TrainTestSplits-RecognitionTask/"
                             "ucfTrainTestlist", "annotations", "."],
                      lambda d: (d / "classInd.txt").is_file(),
                      what="UCF101 split folder with classInd.txt", flag="--annotations")
    classes = read_class_ind(adir / "classInd.txt")
    by_lower = {c.lower(): i for i, c in enumerate(classes)}
    if videos_dir is not None:
        vdir = require_dir(videos_dir, what="--videos")
    else:
        first = classes[0].lower()
        vdir = locate(root, ["UCF-101", "UCF101/UCF-101", "videos", "UCF101", "."],
                      lambda d: any(p.name.lower() == first and p.is_dir() for p in d.iterdir()),
                      what=f"UCF101 video folder (UCF-101/{classes[0]}/...)", flag="--videos")
    list_file = adir / f"{subset}list{split:02d}.txt"
    disk = DiskFiles(vdir)
    videos, skipped = [], []
    for lineno, line in read_lines(list_file, what=f"split file for split {split} {subset}"):
        fields = line.split()
        if len(fields) not in (1, 2) or (subset == "train" and len(fields) != 2):
            expect = "'<Class>/<video> <label>'" if subset == "train" else "'<Class>/<video>'"
            raise IndexFormatError(f"{list_file}:{lineno}: expected {expect}, found {line!r}")
        rel = fields[0].replace("\\", "/")
        folder = rel.split("/")[0] if "/" in rel else None
        if folder is None or folder.lower() not in by_lower:
            raise IndexFormatError(f"{list_file}:{lineno}: {rel!r} is not in a folder named "
                                   f"after a class of {adir / 'classInd.txt'}")
        label = by_lower[folder.lower()]
        if len(fields) == 2:
            given = parse_int(fields[1], path=list_file, lineno=lineno, what="label")
            if given - 1 != label:
                name = classes[given - 1] if 1 <= given <= len(classes) else "no class"
                raise IndexFormatError(f"{list_file}:{lineno}: label {given} is {name} but "
                                       f"the video is in folder {folder!r}")
        found = disk.resolve(rel)
        if found is None:
            skipped.append((rel, "missing"))
            continue
        videos.append(VideoEntry(path=found, label=label,
                                 video_id=os.path.splitext(os.path.basename(found))[0]))
    return finish(kind="ucf101", split=split, subset=subset, classes=classes, videos=videos,
                  root=vdir, skipped=skipped, source=list_file)


# ---------------------------------------------------------------------------- HMDB51


def read_hmdb51(root: Path, *, split: int, subset: str, videos_dir=None,
                annotations=None) -> DatasetIndex:
    """`<class>_test_split<N>.txt` lines `<name> <flag>`: 1 train, 2 test, 0 unused."""
    check_split("hmdb51", split, 3)
    check_subset("hmdb51", subset, ("train", "test"))
    suffix = f"_test_split{split}.txt"
    has_splits = lambda d: any(p.name.endswith(suffix) for p in d.iterdir())  # noqa: E731
    if annotations is not None:
        adir = Path(annotations).expanduser()
        adir = adir.parent if adir.is_file() else require_dir(adir, what="--annotations")
        if not has_splits(adir):
            raise IndexFormatError(f"{adir}: no *{suffix} split files")
    else:
        adir = locate(root, ["testTrainMulti_7030_splits", "annotations/testTrainMulti_7030_splits",
                             "annotations", "splits", "."], has_splits,
                      what=f"HMDB51 split folder with *{suffix}", flag="--annotations")
    split_files = sorted(p for p in adir.iterdir() if p.name.endswith(suffix))
    classes = [p.name[: -len(suffix)] for p in split_files]
    if videos_dir is not None:
        vdir = require_dir(videos_dir, what="--videos")
    else:
        vdir = locate(root, ["hmdb51_org", "videos", "hmdb51", "HMDB51", "."],
                      lambda d: (d / classes[0]).is_dir(),
                      what=f"HMDB51 video folder (<class>/<video>.avi, e.g. {classes[0]}/)",
                      flag="--videos")
    want = {"train": 1, "test": 2}[subset]
    disk = DiskFiles(vdir)
    videos, skipped = [], []
    for label, (cls, sf) in enumerate(zip(classes, split_files)):
        for lineno, line in read_lines(sf, what="split file"):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise IndexFormatError(f"{sf}:{lineno}: expected '<video> <0|1|2>', "
                                       f"found {line!r}")
            if int(fields[1]) != want:
                continue
            rel = f"{cls}/{fields[0]}"
            found = disk.resolve(rel)
            if found is None:
                skipped.append((rel, "missing"))
                continue
            videos.append(VideoEntry(path=found, label=label,
                                     video_id=os.path.splitext(fields[0])[0]))
    return finish(kind="hmdb51", split=split, subset=subset, classes=classes, videos=videos,
                  root=vdir, skipped=skipped, source=adir)


# ---------------------------------------------------------------------------- UCF50

_GROUP = re.compile(r"_g(\d+)_c(\d+)$")


def read_ucf50(root: Path, *, split: int, subset: str, videos_dir=None,
               annotations=None) -> DatasetIndex:
    """Leave-one-group-out: split N puts group N in test and the other 24 groups in train."""
    check_split("ucf50", split, 25)
    check_subset("ucf50", subset, ("train", "test"))
    if annotations is not None:
        log.warning("ucf50 has no annotation files; ignoring --annotations %s", annotations)
    if videos_dir is not None:
        vdir = require_dir(videos_dir, what="--videos")
    else:
        vdir = locate(root, ["UCF50", "videos", "."], has_subdirs,
                      what="UCF50 video folder (UCF50/<Class>/...)", flag="--videos")
    disk = DiskFiles(vdir)
    classes = sorted({rel.split("/")[0] for rel in disk.exact if "/" in rel})
    if not classes:
        raise IndexFormatError(f"{vdir}: no <Class>/<video> files found")
    label_of = {c: i for i, c in enumerate(classes)}
    videos = []
    for rel in sorted(disk.exact):
        if "/" not in rel:
            continue
        stem = os.path.splitext(os.path.basename(rel))[0]
        m = _GROUP.search(stem)
        if m is None:
            raise IndexFormatError(f"{vdir / rel}: name does not end in _gNN_cNN, so its group "
                                   f"(which decides the split) is unknown")
        in_test = int(m.group(1)) == split
        if in_test == (subset == "test"):
            videos.append(VideoEntry(path=rel, label=label_of[rel.split("/")[0]], video_id=stem))
    return finish(kind="ucf50", split=split, subset=subset, classes=classes, videos=videos,
                  root=vdir, skipped=[], source=vdir)


# ---------------------------------------------------------------------------- list files

_NUMBERED = re.compile(r"^\s*(\d+)[\s,]+(\S.*)$")


def read_class_names(path: Path) -> list[str]:
    """One class name per line (position = label), or classInd-style `<number> <name>` lines.

    Numbered lines are 0-based if the smallest number is 0 and 1-based if it is 1.
    """
    lines = read_lines(path, what="class-names file")
    matches = [_NUMBERED.match(line) for _, line in lines]
    if lines and all(matches):
        nums = [int(m.group(1)) for m in matches]
        base = min(nums)
        if base not in (0, 1) or sorted(nums) != list(range(base, base + len(nums))):
            raise IndexFormatError(f"{path}: class numbers should run {base}..."
                                   f"{base + len(nums) - 1} without gaps")
        names = [""] * len(nums)
        for n, m in zip(nums, matches):
            names[n - base] = m.group(2).strip()
        return names
    return [line.strip() for _, line in lines]


def split_list_line(line: str) -> tuple[str, str] | None:
    """`path label` or `path,label` (path may hold spaces or commas); None if no label."""
    if "," in line:
        path, _, label = line.rpartition(",")
        if label.strip().lstrip("-").isdigit():
            return path.strip(), label.strip()
    fields = line.rsplit(None, 1)
    if len(fields) == 2 and fields[1].lstrip("-").isdigit():
        return fields[0].strip(), fields[1]
    return None


def list_ids(paths: list[str]) -> list[str]:
    """Video ids of a list: the path without extension, or the whole path where that collides.

    `a.mp4` and `a.webm` in one list would both be `a`; they get `a.mp4` and `a.webm`, and
    every id that collides with nothing stays what it always was, so the index digests of
    existing caches do not change. A path listed twice keeps colliding (an error in `finish`).
    """
    ids = [os.path.splitext(p)[0] for p in paths]
    while True:
        counts: dict[str, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        clash = [k for k, (i, p) in enumerate(zip(ids, paths)) if counts[i] > 1 and i != p]
        if not clash:
            return ids
        for k in clash:  # a whole path differs from every other path, so this ends
            ids[k] = paths[k]


def read_list(root: Path, *, split: int, subset: str, videos_dir=None, annotations=None,
              class_names=None) -> DatasetIndex:
    """A `path label` / `path,label` list (MMAction2, PySlowFast, Video-FocalNets, DVFL-Net).

    Labels are 0-based integers; a first line without an integer label is a header.
    """
    check_subset("list", subset, SUBSETS)
    if annotations is None:
        raise IndexFormatError("the list kind needs --annotations LIST_FILE (lines "
                               "'path label' or 'path,label')")
    list_file = Path(annotations).expanduser()
    if not list_file.exists() and not list_file.is_absolute() and (root / list_file).exists():
        list_file = root / list_file
    vdir = require_dir(videos_dir if videos_dir is not None else root, what="video root")
    entries = []
    for pos, (lineno, line) in enumerate(read_lines(list_file, what="list file")):
        parsed = split_list_line(line)
        if parsed is None:
            if pos == 0:
                continue  # header
            raise IndexFormatError(f"{list_file}:{lineno}: expected 'path label' or "
                                   f"'path,label' with an integer label, found {line!r}")
        entries.append((lineno, parsed[0], int(parsed[1])))
    if class_names is not None:
        classes = read_class_names(Path(class_names).expanduser())
    else:
        classes = [str(i) for i in range(max((e[2] for e in entries), default=-1) + 1)]
    found, skipped = [], []
    for lineno, path, label in entries:
        if not 0 <= label < len(classes):
            raise IndexFormatError(f"{list_file}:{lineno}: label {label} outside "
                                   f"0..{len(classes) - 1}")
        rel = path.replace("\\", "/")
        if os.path.isabs(rel):
            try:
                rel = Path(rel).resolve().relative_to(vdir.resolve()).as_posix()
            except ValueError:
                pass  # outside the root: keep it absolute (os.path.join keeps absolute paths)
        if not (vdir / rel).is_file():
            skipped.append((rel, "missing"))
            continue
        found.append((rel, label))
    ids = list_ids([rel for rel, _ in found])
    videos = [VideoEntry(path=rel, label=label, video_id=vid)
              for (rel, label), vid in zip(found, ids)]
    return finish(kind="list", split=split, subset=subset, classes=classes, videos=videos,
                  root=vdir, skipped=skipped, source=list_file)
