"""Which cached rows an epoch replays: one plan, read where the data is, for every consumer.

`dvfl-train` and the public `CachedClips` (dvfl_cache/api.py) both ask this module, so a
student trained by the CLI and one trained in a user's own loop see the same rows, views,
mixes and teacher logits for the same epoch:

- ``plan_epoch``: epoch e (1-based) replays view (e - 1) mod V of every video, V being the first
  ``views`` of the cache's views (a run pins it) or all of them. The epoch's logits (and
  features) are one contiguous ``epoch_block`` read; rows marked invalid at build time are
  left out (``EpochPlan.invalid``). A mixed cache's rows carry their stored mix records.
- ``ensemble_plan``: the plans of several caches of the same views, restricted to the rows
  valid in all of them, their logits combined per row by ``teacher_mix.combine_logits``.
- Without a cache, the plan names every video and its views are drawn when the video is
  opened (online KD and plain CE); that is the same record, so the loop does not branch.

The names of the store's view and mix columns live here, beside the store, not in training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.dataset import DrawnMixes, FixedViews, MixSource, SampledViews, StoredMixes
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.mix import Mix, MixConfig, mixes_from_arrays
from dvfl_cache.data.views import View, ViewSampler, views_from_arrays
from dvfl_cache.errors import CacheError
from dvfl_cache.teacher_mix import TEACHER_MIXES, combine_logits

__all__ = ["TEACHER_MIXES", "VIEW_COLUMNS", "EpochPlan", "combine_logits", "ensemble_plan",
           "plan_epoch"]

# A stored row's view record, in `views_to_arrays` names (those a store has).
VIEW_COLUMNS = ("video", "view", "frames", "crop", "flip", "jitter", "gray", "frame_jitter",
                "jitter_order")


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """What epoch ``epoch`` trains on.

    ``videos`` are the positions (in the index) trained on, in index order; ``views[i]`` is the
    view of ``videos[i]`` (None: drawn by ``sampler`` as view number ``view_number`` when the
    video is opened). ``teacher_logits``/``teacher_features`` are rows per *index position*
    (cache mode), float32. ``invalid`` lists videos whose cached view failed at build time.
    ``mixes[i]`` is the stored mix of ``views[i]`` (None: unmixed) for a mixed cache, else None.
    """

    epoch: int
    view_number: int
    videos: np.ndarray
    views: tuple[View | None, ...]
    teacher_logits: np.ndarray | None = None
    teacher_features: np.ndarray | None = None
    invalid: tuple[int, ...] = field(default=())
    mixes: tuple[Mix | None, ...] | None = None

    def source(self, sampler: ViewSampler | None = None) -> FixedViews | SampledViews:
        """The plan's views for ``ClipDataset``: the fixed (cached) views, or view number
        ``view_number`` of each video drawn by ``sampler``."""
        if all(v is not None for v in self.views):
            return FixedViews(tuple(self.views))
        if sampler is None:
            raise ValueError("the plan has views to draw but no sampler was given")
        return SampledViews.of_videos(sampler, self.videos.tolist(), self.view_number)

    def mix_source(self, mix: MixConfig | None, sampler: ViewSampler | None,
                   num_videos: int) -> MixSource | None:
        """The stored mixes of a mixed cache's rows, else mixes drawn per row by ``mix`` (the
        partner's view drawn by ``sampler``), else None (no mixing)."""
        if self.mixes is not None:
            if mix is not None:
                raise ValueError("the plan's rows are mixed already; do not mix them again")
            return StoredMixes(self.mixes)
        if mix is None or not mix.enabled:
            return None
        if sampler is None:
            raise ValueError("drawing partner views needs a sampler")
        return DrawnMixes(mix, sampler, num_videos)


def plan_epoch(epoch: int, index: DatasetIndex, *, reader: CacheReader | None = None,
               need_features: bool = False, views: int | None = None) -> EpochPlan:
    """The epoch's views: the cached block of view (epoch - 1) mod V (V: ``views``, the first
    of the cache's views, or all of them), or all videos to sample."""
    if epoch < 1:
        raise ValueError(f"epochs are numbered from 1, got {epoch}")
    if reader is None:
        return EpochPlan(epoch=epoch, view_number=epoch - 1,
                         videos=np.arange(len(index), dtype=np.int64),
                         views=(None,) * len(index))
    if views is not None and not 1 <= views <= reader.meta.views_per_video:
        raise CacheError(f"{reader.location}: {views} views per video asked, the cache has "
                         f"{reader.meta.views_per_video}")
    r = (epoch - 1) % (views or reader.meta.views_per_video)
    columns = reader.meta.row_arrays()
    view_names = [k for k in VIEW_COLUMNS if k in columns]
    # a mixed cache's logits are the teacher's on the mixed clips: the records travel along
    mix_names = [k for k in columns if k.startswith(("mix_", "partner_"))]
    names = ["logits", "valid", *view_names, *mix_names]
    if need_features:
        names.append("features")
    block = reader.epoch_block(r, names=names)  # one contiguous read per array
    valid = block["valid"].astype(bool)
    ok = np.flatnonzero(valid)
    views_ = views_from_arrays({k: block[k][ok] for k in view_names})
    invalid = tuple(int(v) for v in np.flatnonzero(~valid))
    mixes = None
    if reader.meta.mix is not None:
        mixes = tuple(mixes_from_arrays({k: block[k][ok] for k in mix_names}, block["view"][ok]))
    return EpochPlan(epoch=epoch, view_number=r, videos=ok.astype(np.int64), views=tuple(views_),
                     mixes=mixes,
                     teacher_logits=block["logits"].astype(np.float32),
                     teacher_features=(block["features"].astype(np.float32)
                                       if need_features else None),
                     invalid=invalid)


def ensemble_plan(epoch: int, index: DatasetIndex, readers: list[CacheReader], *, mix: str,
                  views: int | None = None) -> EpochPlan:
    """The epoch over K caches of the same views (checked when they were opened): the rows
    valid in every cache, the first cache's views and mixes, the logits combined by ``mix``."""
    plans = [plan_epoch(epoch, index, reader=r, views=views) for r in readers]
    first = plans[0]
    ok = set(first.videos.tolist())
    for p in plans[1:]:
        ok &= set(p.videos.tolist())
    keep = [i for i, v in enumerate(first.videos.tolist()) if v in ok]
    invalid = sorted(set().union(*(p.invalid for p in plans)))
    logits = combine_logits([p.teacher_logits for p in plans], mix)
    return dataclasses.replace(
        first, videos=first.videos[keep], views=tuple(first.views[i] for i in keep),
        mixes=None if first.mixes is None else tuple(first.mixes[i] for i in keep),
        teacher_logits=logits, invalid=tuple(invalid))
