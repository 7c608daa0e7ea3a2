"""The public API: a dvfl cache as a torch Dataset for any training code (docs/api.md).

    cache = open_cache("cache.zarr")                  # a folder, a .zip or an fsspec URL
    ds = CachedClips(cache, root="/data/UCF101", frames=8, size=224, epoch=0)
    clip = replay_view(path, item["view"], frames=8, size=224)   # == item["clip"]

Why it is built this way: `CachedClips` is not a second reader of the store. It asks the same
epoch plan `dvfl-train` asks (``dvfl_cache.cache.epochs.plan_epoch`` / ``ensemble_plan``: which
view each epoch replays, the rows left out, the stored mixes, the combined ensemble logits),
decodes through the one ``ClipDataset`` with the same student ``Cut`` (fewer frames, another
size), mixes through the same stored records, refuses the same stores
(``health.check_replayable``), and builds the target with the trainer's ``mix_targets``. A row
and an epoch therefore give exactly the tensors `dvfl-train` feeds its student, only
laid out as most video models take them, [C, T, H, W].

Epochs here count from 0 (torch's ``set_epoch`` convention): ``CachedClips(epoch=e)`` is
`dvfl-train`'s epoch e + 1 and replays view e mod V of every video.

The view record travels as a JSON string (``item["view"]``): torch's default collate keeps
strings as a list, whereas a nested dict of lists of varying length (per-frame jitter, a mix
partner or none) would not collate at all. ``json.loads`` gives the dict; `replay_view` takes
either form.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from dvfl_cache.cache.epochs import EpochPlan, ensemble_plan, plan_epoch
from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.dataset import ClipDataset, Cut, FixedViews, StoredMixes
from dvfl_cache.data.index import DatasetIndex, VideoEntry
from dvfl_cache.data.mix import Mix, mix_targets
from dvfl_cache.data.views import View
from dvfl_cache.errors import DvflError, VideoDecodeError
from dvfl_cache.teacher_mix import TEACHER_MIXES

__all__ = ["Cache", "CachedClips", "open_cache", "replay_view"]

log = logging.getLogger(__name__)


class Cache:
    """A teacher-logit cache opened for reading (what `open_cache` returns).

    ``meta`` is the store's description as plain JSON-able data: teacher, dataset (kind, split,
    subset, classes, index digest), sampler, mixing, dtype, views per video, frames per view.
    Handles are opened per process on first use, so a Cache pickles into DataLoader workers.
    """

    def __init__(self, reader: CacheReader):
        self._reader = reader

    @property
    def meta(self) -> dict[str, Any]:
        return self._reader.meta.to_dict()

    @property
    def path(self) -> str:
        return str(self._reader.location)

    @property
    def classes(self) -> list[str]:
        return list(self._reader.meta.dataset.classes)

    @property
    def num_classes(self) -> int:
        return self._reader.meta.num_classes

    @property
    def num_videos(self) -> int:
        return self._reader.meta.num_videos

    @property
    def views_per_video(self) -> int:
        return self._reader.meta.views_per_video

    @property
    def num_frames(self) -> int:
        """Frames of each cached view (a student may replay fewer of them)."""
        return self._reader.meta.num_frames

    def __repr__(self) -> str:
        return f"open_cache({self.path!r})"


def open_cache(path: str | os.PathLike, *,
               storage_options: dict[str, Any] | None = None) -> Cache:
    """Open a cache: a store folder, a packed .zip, or an fsspec URL of either (s3://, gs://,
    http(s)://); ``storage_options`` go to fsspec (credentials, endpoint_url, anon, ...).
    A missing or foreign store raises `DvflError` with one line naming it."""
    return Cache(CacheReader(path, storage_options=storage_options))


class CachedClips(Dataset):
    """The rows one epoch of `dvfl-train` replays, as a map-style torch Dataset.

    ``cache``: a `Cache`, or a list of caches of the same views (an ensemble: their logits are
    combined per row by ``teacher_mix``, "mean-logits" or "mean-probs", as ``dvfl-train
    --teacher-mix`` does). ``root``: the dataset folder (the cache names its videos relative to
    it); ``index``: a saved index JSON instead (`dvfl-cache index`), needed for "list" datasets.
    ``frames``/``size``: the student's clip, cut from each cached view exactly as `dvfl-train`
    cuts it (``frames`` of the view's frames spread over the same span; None: all of them;
    ``size`` None: the teacher's). ``epoch`` (from 0) picks the view: view epoch mod V, V being
    ``views_subset`` (the first N views) or all. ``features``: also return the stored teacher
    features.

    Item i is the i-th row of the epoch in index order, rows marked invalid at build time left
    out (so ``len`` may change between epochs of a cache with failed videos). Fields (see
    docs/api.md): ``clip`` float32 [C, T, H, W] normalised, ``label`` int64, ``target`` float32
    [K], ``teacher_logits`` float32 [K], ``teacher_features`` float32 [D] (with
    ``features``), ``video`` (path relative to root), ``view`` (JSON string), ``row`` int64
    (the store row), ``mix_lambda`` float32 (1.0 unmixed).

    A video that cannot be decoded raises `VideoDecodeError` ("failed to decode <path>:
    <reason>"), the line `dvfl-train` reports for it.
    """

    def __init__(self, cache: Cache | Sequence[Cache], *, root: str | os.PathLike | None = None,
                 index: str | os.PathLike | None = None, frames: int | None = None,
                 size: int | None = None, epoch: int = 0, views_subset: int | None = None,
                 teacher_mix: str = "mean-logits", features: bool = False, threads: int = 1,
                 check: bool = True):
        caches = [cache] if isinstance(cache, Cache) else list(cache)
        if not caches or not all(isinstance(c, Cache) for c in caches):
            raise TypeError("CachedClips takes a cache from open_cache, or a list of them")
        if teacher_mix not in TEACHER_MIXES:
            raise ValueError(f"teacher_mix must be one of {', '.join(TEACHER_MIXES)}, "
                             f"got {teacher_mix!r}")
        readers = [c._reader for c in caches]
        meta = readers[0].meta
        if len(readers) > 1:
            from dvfl_cache.cache.sameviews import check_same_views

            if features:
                raise DvflError("teacher features come from one cache; an ensemble serves "
                                "combined logits only (features=False)")
            for other in readers[1:]:
                check_same_views(readers[0], other)
        self.frames = meta.num_frames if frames is None else int(frames)
        teacher_size = meta.teacher.config.get("img_size")
        if size is None and teacher_size is None:
            raise DvflError(f"{readers[0].location}: the cache does not record the teacher's "
                            "image size; pass size=")
        self.size = int(teacher_size if size is None else size)
        self.index = _index(meta, root, index)
        # item["video"] is relative to the folder the user named (the index's may be below it)
        self.root = os.fspath(root) if root is not None else self.index.root
        if check:
            from dvfl_cache.cache.health import check_replayable

            for r in readers:
                check_replayable(r, self.index, num_frames=self.frames, need_features=features)
        if views_subset is not None and not 1 <= views_subset <= meta.views_per_video:
            raise DvflError(f"{readers[0].location}: views_subset {views_subset}, the cache has "
                            f"{meta.views_per_video} views per video")
        self.readers, self.teacher_mix, self.features = readers, teacher_mix, features
        self.views_subset, self.threads = views_subset, threads
        self.cut = Cut("clip", self.size, self.frames)  # float, normalised: what students see
        self.epoch = -1
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Replay epoch ``epoch`` (from 0): view epoch mod V of every video, read in one block.

        Call it before each epoch's DataLoader iterator is made (with non-persistent workers,
        which receive the dataset anew each epoch)."""
        if epoch < 0:
            raise ValueError(f"epochs count from 0, got {epoch}")
        if epoch == self.epoch:
            return
        self.plan = self._plan(epoch + 1)
        self.epoch = epoch
        self._clips = ClipDataset(self.index, self.plan.source(), (self.cut,),
                                  threads=self.threads,
                                  mixes=None if self.plan.mixes is None
                                  else StoredMixes(self.plan.mixes))

    def _plan(self, train_epoch: int) -> EpochPlan:
        if len(self.readers) > 1:
            return ensemble_plan(train_epoch, self.index, self.readers, mix=self.teacher_mix,
                                 views=self.views_subset)
        return plan_epoch(train_epoch, self.index, reader=self.readers[0],
                          need_features=self.features, views=self.views_subset)

    @property
    def classes(self) -> list[str]:
        return list(self.index.classes)

    def __len__(self) -> int:
        return len(self.plan.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self._clips[i]
        if it["error"] is not None:
            raise VideoDecodeError(it["path"], it["error"])
        video = int(self.plan.videos[i])
        view = self.plan.views[i]
        mix = None if self.plan.mixes is None else self.plan.mixes[i]
        label = torch.tensor(it["label"], dtype=torch.int64)
        lam = torch.tensor(1.0 if mix is None else mix.lam, dtype=torch.float32)
        partner = label if mix is None else torch.tensor(it["partner_label"], dtype=torch.int64)
        target = mix_targets(label.view(1), partner.view(1), lam.view(1),
                             self.index.num_classes)[0]
        item = {
            "clip": it["clip"].permute(1, 0, 2, 3),  # (T, C, H, W) -> (C, T, H, W)
            "label": label,
            "target": target,
            "teacher_logits": torch.from_numpy(self.plan.teacher_logits[video].copy()),
            "video": self._relpath(video),
            "view": json.dumps(view_record(view, mix, self._relpath)),
            "row": torch.tensor(self.plan.view_number * len(self.index) + video,
                                dtype=torch.int64),
            "mix_lambda": lam,
        }
        if self.features:
            item["teacher_features"] = torch.from_numpy(
                self.plan.teacher_features[video].copy())
        return item

    def _relpath(self, video: int) -> str:
        return os.path.relpath(self.index.abspath(video), self.root)


def _index(meta, root, index) -> DatasetIndex:
    from dvfl_cache.data.source import resolve_index

    d = meta.dataset
    if index is None and root is None:
        raise DvflError("CachedClips needs the videos: root= (the dataset folder) or index= "
                        "(a saved index JSON)")
    if index is None and d.kind == "list":
        raise DvflError(f"the cache was built from a saved index (dataset 'list'); pass "
                        f"index=THAT.json (and root= where its videos are now)")
    return resolve_index(index=index, kind=d.kind, root=root, split=d.split, subset=d.subset)


# -- view records ------------------------------------------------------------------------------

def _view_fields(v: View) -> dict[str, Any]:
    out = {"view": v.view, "frames": list(v.frames), "crop": list(v.crop), "flip": v.flip,
           "jitter": list(v.jitter), "gray": v.gray}
    if v.per_frame:
        out.update(frame_jitter=[list(f) for f in v.frame_jitter],
                   jitter_order=[list(o) for o in v.jitter_order])
    return out


def view_record(view: View, mix: Mix | None, relpath: Callable[[int], str]) -> dict[str, Any]:
    """A stored row's view as JSON-able data: the video (``relpath`` of its index position) and
    its view (frames, crop, flip, jitter), and its mix (op, lambda, box, the partner's view) or
    None."""
    out = {"video": relpath(view.video), **_view_fields(view), "mix": None}
    if mix is not None:
        out["mix"] = {"op": mix.op, "lambda": mix.lam, "box": list(mix.box),
                      "partner": {"video": relpath(mix.partner.video),
                                  **_view_fields(mix.partner)}}
    return out


def _view(d: dict[str, Any], video: int) -> View:
    per_frame = "frame_jitter" in d
    return View(video=video, view=int(d["view"]), frames=tuple(int(f) for f in d["frames"]),
                crop=tuple(float(c) for c in d["crop"]), flip=bool(d["flip"]),
                jitter=tuple(float(j) for j in d["jitter"]), gray=bool(d["gray"]),
                frame_jitter=(tuple(tuple(float(x) for x in f) for f in d["frame_jitter"])
                              if per_frame else ()),
                jitter_order=(tuple(tuple(int(x) for x in o) for o in d["jitter_order"])
                              if per_frame else ()))


def replay_view(path: str | os.PathLike, view: str | dict[str, Any], *,
                frames: int | None = None, size: int, root: str | os.PathLike | None = None,
                threads: int = 1) -> torch.Tensor:
    """Decode one recorded view (``item["view"]``, JSON string or dict) of the video at
    ``path``: float32 [C, T, H, W], equal to the item's ``clip`` for the same ``frames`` and
    ``size``. A mixed view decodes its partner too, found under ``root`` (default: ``path``
    with the view's own relative path taken off its end). Decode failures raise
    `VideoDecodeError`."""
    rec = json.loads(view) if isinstance(view, str) else dict(view)
    path = os.fspath(path)
    own = _view(rec, 0)
    mix = None
    paths = [path]
    if rec.get("mix") is not None:
        m = rec["mix"]
        if root is None:
            rel = os.path.normpath(rec["video"])
            if not os.path.normpath(path).endswith(rel):
                raise DvflError(f"{path}: the view is mixed with {m['partner']['video']}; pass "
                                "root= (the folder both paths are relative to)")
            root = os.path.normpath(path)[:-len(rel)] or "."
        paths.append(os.path.join(os.fspath(root), m["partner"]["video"]))
        mix = Mix(op=m["op"], lam=float(m["lambda"]), box=tuple(float(b) for b in m["box"]),
                  partner=_view(m["partner"], 1))
    index = DatasetIndex(kind="list", split=0, subset="replay", classes=("?",),
                         videos=tuple(VideoEntry(path=p, label=0, video_id=str(k))
                                      for k, p in enumerate(paths)), root="")
    cut = Cut("clip", int(size), None if frames is None else int(frames))
    item = ClipDataset(index, FixedViews((own,)), (cut,), threads=threads,
                       mixes=StoredMixes((mix,)))[0]
    if item["error"] is not None:
        raise VideoDecodeError(item["path"], item["error"])
    return item["clip"].permute(1, 0, 2, 3)
