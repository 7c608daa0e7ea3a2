"""Hold out whole groups of a training index as a validation index, for honest model selection.

Picking ``best.pt`` on the test split (the paper's protocol) lets test videos choose the
checkpoint. Holding out part of the *training* subset instead needs care: UCF101 and UCF50 clips of
one group (``_gNN_``) are cut from the same long video (same actors, same background), and HMDB51
clips often share a source film, so a random per-video split would put near-duplicates on both
sides and flatter the validation score. We hold out whole groups:

- ``ucf101``, ``ucf50``: the group is (class, ``gNN``) from ``v_<Class>_gNN_cNN``;
- ``hmdb51``: the source video, i.e. the file stem without its ``_<class>`` and the six trailing
  meta tags (``_<body>_<camera>_npN_<view>_<quality>_<n>``); a source is one group across classes;
- ``kinetics400``: the YouTube id (clips of one id are one group);
- ``ssv2``, ``list``: no group is known, so each video is its own group (logged).

Groups are visited in an order fixed by a hash of (seed, group), so the split does not depend on
the index order or the machine, and a group is taken when it brings the held-out share of its
classes closer to ``fraction`` (class-stratified), never taking a class's last training group.
The training part keeps its kind, split and subset; its digest changes with its video list, so a
cache built on it matches it and only it, and no held-out video can be a training (or mixing)
video. The held-out part is subset ``"heldout"``, so it is never mistaken for an official split.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter, defaultdict

from dvfl_cache.data.index import DatasetIndex, VideoEntry
from dvfl_cache.errors import DvflError, IndexFormatError

__all__ = ["HELDOUT_SUBSET", "hold_out", "video_group"]

log = logging.getLogger(__name__)

HELDOUT_SUBSET = "heldout"

_UCF_GROUP = re.compile(r"_g(\d+)_c(\d+)$")
_HMDB_TAGS = re.compile(r"^(?P<source>.+)_[afhlu]_(?:cm|nm)_np\d+_(?:ba|fr|le|ri)_"
                        r"(?:bad|med|goo)_\d+$")
_KINETICS = re.compile(r"^(?P<yt>.+)_\d{6}_\d{6}$")


def video_group(kind: str, video: VideoEntry, class_name: str) -> str:
    """The group a video belongs to (see the module docstring); clips of a group stay together."""
    stem = os.path.splitext(os.path.basename(video.path))[0]
    if kind in ("ucf101", "ucf50"):
        m = _UCF_GROUP.search(stem)
        if m is None:
            raise IndexFormatError(f"{video.path}: name does not end in _gNN_cNN, so its group "
                                   "is unknown and it cannot be held out with its group")
        return f"{class_name}/g{int(m.group(1)):02d}"
    if kind == "hmdb51":
        m = _HMDB_TAGS.match(stem)
        if m is None:
            raise IndexFormatError(f"{video.path}: not an HMDB51 clip name "
                                   "(<source>_<class>_<body>_<camera>_npN_<view>_<quality>_<n>), "
                                   "so its source video is unknown")
        source = m.group("source")
        suffix = "_" + class_name
        return source[: -len(suffix)] if source.endswith(suffix) else source
    if kind == "kinetics400":
        m = _KINETICS.match(video.video_id)
        return m.group("yt") if m else video.video_id
    return video.video_id


def _order_key(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()


def hold_out(index: DatasetIndex, fraction: float, *,
             seed: int = 0) -> tuple[DatasetIndex, DatasetIndex]:
    """Split ``index`` into (training part, held-out part) along whole groups.

    About ``fraction`` of each class's videos are held out (as near as whole groups allow); both
    parts keep the index order. Deterministic in (index content, fraction, seed).
    """
    if not 0.0 < fraction < 1.0:
        raise DvflError(f"hold-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    if index.subset != "train":
        raise DvflError(f"hold out from the training subset only; this index is subset "
                        f"{index.subset!r}")
    if index.kind in ("ssv2", "list"):
        log.info("%s has no known video groups: holding out single videos", index.kind)

    groups: dict[str, list[int]] = defaultdict(list)
    for i, v in enumerate(index.videos):
        groups[video_group(index.kind, v, index.classes[v.label])].append(i)
    per_class = Counter(v.label for v in index.videos)
    target = {c: round(fraction * n) for c, n in per_class.items()}
    held = Counter()
    taken: set[str] = set()
    for g in sorted(groups, key=lambda g: _order_key(seed, g)):
        counts = Counter(index.videos[i].label for i in groups[g])
        if any(held[c] + k >= per_class[c] for c, k in counts.items()):
            continue  # would leave a class without training videos
        before = sum(abs(target[c] - held[c]) for c in counts)
        after = sum(abs(target[c] - held[c] - k) for c, k in counts.items())
        if after < before:
            taken.add(g)
            held.update(counts)
    if not taken:
        raise DvflError(f"{index.kind} split {index.split}: a hold-out of {fraction:g} is "
                        f"smaller than every group of videos (largest class: "
                        f"{max(per_class.values())} videos); use a larger fraction")
    out_ids = {i for g in taken for i in groups[g]}
    train = index.with_videos(tuple(v for i, v in enumerate(index.videos) if i not in out_ids))
    val = DatasetIndex(kind=index.kind, split=index.split, subset=HELDOUT_SUBSET,
                       classes=index.classes,
                       videos=tuple(v for i, v in enumerate(index.videos) if i in out_ids),
                       root=index.root)
    log.info("held out %d of %d videos (%d of %d groups) from %s split %d train",
             len(val), len(index), len(taken), len(groups), index.kind, index.split)
    return train, val
