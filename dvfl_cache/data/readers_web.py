"""Readers for the web-scale datasets: Kinetics-400 (CSV) and Something-Something v2 (JSON).

Both are usually incomplete on disk (Kinetics clips vanish from YouTube, downloads fail), so an
annotated clip whose file is missing is left out and listed in `DatasetIndex.skipped`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from dvfl_cache.data.index import DatasetIndex, VideoEntry
from dvfl_cache.data.readers_local import (DiskFiles, check_subset, finish, locate,
                                           read_lines, require_dir)
from dvfl_cache.errors import IndexFormatError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- Kinetics-400

_K400_CSV_NAMES = ("{s}.csv", "kinetics_{s}.csv", "kinetics400_{s}.csv", "kinetics-400_{s}.csv",
                   "kinetics_400_{s}.csv")
_K400_ANN_DIRS = (".", "annotations", "kinetics400/annotations", "k400/annotations",
                  "kinetics400", "k400")
_K400_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _k400_csv(folder: Path, subset: str) -> Path | None:
    for pattern in _K400_CSV_NAMES:
        p = folder / pattern.format(s=subset)
        if p.is_file():
            return p
    return None


def read_k400_csv(path: Path) -> list[tuple[int, str, str, int, int]]:
    """Rows (line, label, youtube_id, start, end) of an official Kinetics CSV.

    The csv module handles labels quoted because they hold commas or spaces.
    """
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: Kinetics annotation CSV not found") from None
    rows = []
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise IndexFormatError(f"{path}: empty file, expected a header "
                                   f"{','.join(_K400_COLUMNS)},...")
        header = [h.strip() for h in header]
        missing = [c for c in _K400_COLUMNS if c not in header]
        if missing:
            raise IndexFormatError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                                   f"(found {','.join(header)})")
        col = {c: header.index(c) for c in _K400_COLUMNS}
        for fields in reader:
            lineno = reader.line_num
            if not fields or not any(x.strip() for x in fields):
                continue
            if len(fields) != len(header):
                raise IndexFormatError(f"{path}:{lineno}: expected {len(header)} fields "
                                       f"({','.join(header)}), found {len(fields)}")
            try:
                start = int(float(fields[col["time_start"]]))
                end = int(float(fields[col["time_end"]]))
            except ValueError:
                raise IndexFormatError(f"{path}:{lineno}: time_start/time_end should be "
                                       f"numbers, found {fields[col['time_start']]!r}, "
                                       f"{fields[col['time_end']]!r}") from None
            label = fields[col["label"]].strip()
            yid = fields[col["youtube_id"]].strip()
            if not label or not yid:
                raise IndexFormatError(f"{path}:{lineno}: empty label or youtube_id")
            rows.append((lineno, label, yid, start, end))
    return rows


def read_kinetics400(root: Path, *, split: int, subset: str, videos_dir=None,
                     annotations=None) -> DatasetIndex:
    """`<subset>.csv` + clips `<youtube_id>_<start:06d>_<end:06d>.<ext>`, flat or per label.

    Classes are the sorted labels of every subset CSV beside this one, so train, val and test
    indexes agree on label numbers even when a subset lacks a class.
    """
    check_subset("kinetics400", subset, ("train", "val", "test"))
    names = [subset] + (["validate", "validation"] if subset == "val" else [])
    if annotations is not None:
        ann = Path(annotations).expanduser()
        if ann.is_dir():
            found = next((p for n in names if (p := _k400_csv(ann, n))), None)
            if found is None:
                raise IndexFormatError(f"{ann}: no {subset}.csv (or kinetics_{subset}.csv, ...)")
            ann = found
    else:
        folder = locate(root, _K400_ANN_DIRS,
                        lambda d: any(_k400_csv(d, n) for n in names),
                        what=f"Kinetics annotation {subset}.csv", flag="--annotations")
        ann = next(p for n in names if (p := _k400_csv(folder, n)))
    if videos_dir is not None:
        vdir = require_dir(videos_dir, what="--videos")
    else:
        cands = []
        for n in names:
            cands += [n, f"videos/{n}", f"videos_{n}", f"{n}_256", f"k400/{n}",
                      f"kinetics400/{n}", f"kinetics400/videos/{n}", f"k400/videos/{n}"]
        vdir = locate(root, cands, lambda d: True,
                      what=f"Kinetics video folder for {subset}", flag="--videos")

    labels: set[str] = set()
    for other in ("train", "val", "validate", "test"):
        p = ann if other == subset else _k400_csv(ann.parent, other)
        if p is not None and p.is_file():
            try:
                labels.update(r[1] for r in read_k400_csv(p))
            except IndexFormatError:
                if p == ann:
                    raise
                log.warning("%s: unreadable, its labels are not used for the class list", p)
    classes = sorted(labels)
    label_of = {c: i for i, c in enumerate(classes)}

    disk = DiskFiles(vdir)
    videos, skipped = [], []
    for lineno, label, yid, start, end in read_k400_csv(ann):
        vid = f"{yid}_{start:06d}_{end:06d}"
        rel = disk.stems.get(vid) or disk.stems.get(yid)
        if rel is None:
            skipped.append((vid, "missing"))
            continue
        videos.append(VideoEntry(path=rel, label=label_of[label], video_id=vid))
    return finish(kind="kinetics400", split=split, subset=subset, classes=classes, videos=videos,
                  root=vdir, skipped=skipped, source=ann)


# ---------------------------------------------------------------------------- SSv2

_SSV2 = "something-something-v2-"


def _load_json(path: Path, *, what: str):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: {what} not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def template_to_class(template: str) -> str:
    """`"Putting [something] on [something]"` -> `"Putting something on something"`."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(root: Path, *, split: int, subset: str, videos_dir=None,
              annotations=None) -> DatasetIndex:
    """`-labels.json` (class -> number), `-train.json` / `-validation.json`, `<id>.webm`.

    The test subset needs `-test-answers.csv` (`id;class` lines), released after the challenge.
    """
    check_subset("ssv2", subset, ("train", "val", "test"))
    if annotations is not None:
        adir = Path(annotations).expanduser()
        adir = adir.parent if adir.is_file() else require_dir(adir, what="--annotations")
    else:
        adir = locate(root, ["labels", "annotations", "."],
                      lambda d: (d / f"{_SSV2}labels.json").is_file(),
                      what=f"Something-Something v2 {_SSV2}labels.json", flag="--annotations")
    labels_file = adir / f"{_SSV2}labels.json"
    raw = _load_json(labels_file, what="class list")
    if not isinstance(raw, dict):
        raise IndexFormatError(f"{labels_file}: expected an object {{class: number}}")
    try:
        numbered = {int(v): k for k, v in raw.items()}
    except (TypeError, ValueError):
        raise IndexFormatError(f"{labels_file}: class numbers should be integers") from None
    if sorted(numbered) != list(range(len(raw))):
        raise IndexFormatError(f"{labels_file}: class numbers should run 0..{len(raw) - 1} "
                               f"without gaps or repeats")
    classes = [numbered[i] for i in range(len(raw))]
    label_of = {c: i for i, c in enumerate(classes)}

    if subset == "test":
        ann = adir / f"{_SSV2}test-answers.csv"
        items = []
        for lineno, line in read_lines(ann, what="test answers (the test subset has no labels "
                                                 "in -test.json; use --subset val)"):
            vid, sep, name = line.partition(";")
            if not sep or name.strip() not in label_of:
                raise IndexFormatError(f"{ann}:{lineno}: expected '<id>;<class from "
                                       f"{labels_file.name}>', found {line!r}")
            items.append((vid.strip(), label_of[name.strip()]))
    else:
        ann = adir / f"{_SSV2}{'train' if subset == 'train' else 'validation'}.json"
        data = _load_json(ann, what="annotation file")
        if not isinstance(data, list):
            raise IndexFormatError(f"{ann}: expected a list of {{id, label, template}} objects")
        items = []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "id" not in item or "template" not in item:
                raise IndexFormatError(f"{ann}: entry {i} lacks 'id' or 'template': {item!r}")
            name = template_to_class(str(item["template"]))
            if name not in label_of:
                raise IndexFormatError(f"{ann}: entry {i} (id {item['id']}): template "
                                       f"{item['template']!r} is not a class of "
                                       f"{labels_file.name}")
            items.append((str(item["id"]), label_of[name]))

    if videos_dir is not None:
        vdir = require_dir(videos_dir, what="--videos")
    else:
        def has_webm(d: Path) -> bool:
            with os.scandir(d) as it:
                return any(e.name.endswith(".webm") for e in it)

        vdir = locate(root, ["20bn-something-something-v2", "videos",
                             "something-something-v2", "."], has_webm,
                      what="Something-Something v2 video folder (<id>.webm)", flag="--videos")
    disk = DiskFiles(vdir)
    videos, skipped = [], []
    for vid, label in items:
        rel = disk.stems.get(vid)
        if rel is None:
            skipped.append((f"{vid}.webm", "missing"))
            continue
        videos.append(VideoEntry(path=rel, label=label, video_id=vid))
    return finish(kind="ssv2", split=split, subset=subset, classes=classes, videos=videos,
                  root=vdir, skipped=skipped, source=ann)
