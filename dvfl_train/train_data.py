"""Data plumbing of student training: which views an epoch trains on, in which order, on which rank.

Why this shape:
- An epoch is planned up front (:class:`EpochPlan`): its videos, their views and, with a cache,
  the teacher logits of those views as one in-memory block read with a single contiguous
  ``epoch_block`` call. A batch then finds its teacher logits by video id; nothing is read per
  sample.
- Order is a pure function of (data seed, epoch) (:func:`epoch_order`), and ranks take strided,
  disjoint slices of each global batch (:func:`rank_batches`). A resumed run, or one student
  of a sweep trained alone, therefore sees exactly the same batches.
- One decode serves everything that needs the clip: every student of a sweep, and in online KD
  also the teacher, which sees the full view at its own frames and size while the student gets
  the same view subsampled to its frame count (``subsample_view``) at its own size: the one
  ``ClipDataset`` with the plan's views and the cuts the teacher source asks for
  (:func:`train_clips`).
- Views come from the cache (epoch e replays view (e - 1) mod V, epochs being 1-based), or,
  without one, are drawn by ``ViewSampler(mode="train")`` as view e - 1 in the worker that
  decodes the video (it needs the frame count).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.dataset import ClipDataset, Cut, FixedViews, SampledViews, collate_clips
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.transforms import to_float
from dvfl_cache.data.views import View, ViewSampler, views_from_arrays
from dvfl_cache.errors import CacheError, DvflError

from dvfl_train.config import FitConfig

__all__ = ["EpochPlan", "as_input", "epoch_order", "make_loader", "mix_batch", "plan_epoch",
           "rank_batches", "student_inputs", "train_clips", "train_index", "val_index"]

log = logging.getLogger(__name__)

# Stream tags for the per-(seed, epoch) generators, fixed forever: runs depend on them.
_ORDER, _MIX = 0, 1


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


# -- which videos -----------------------------------------------------------------------------

def train_index(cfg: FitConfig) -> DatasetIndex:
    """The training videos: ``cfg.train_index`` (a saved index) or the split's train subset."""
    from dvfl_cache.data.source import resolve_index

    index = resolve_index(index=cfg.train_index, kind=cfg.dataset, root=cfg.data_root,
                          split=cfg.split, subset="train")
    if len(index) == 0:
        raise DvflError(f"{cfg.train_index or cfg.data_root}: no training videos")
    return index


def val_index(cfg: FitConfig) -> DatasetIndex:
    """Held-out videos: ``cfg.val_index`` or the split's test subset (as the paper validates).

    ``val_subset`` keeps that many videos evenly spaced through the index, so a class-sorted
    index still yields every class rather than the first few.
    """
    from dvfl_cache.data.source import resolve_index

    index = resolve_index(index=cfg.val_index, kind=cfg.dataset, root=cfg.data_root,
                          split=cfg.split, subset="test")
    if len(index) == 0:
        raise DvflError(f"{cfg.val_index or cfg.data_root}: no validation videos")
    n = cfg.val_subset
    if n is not None and n < len(index):
        keep = [(i * len(index)) // n for i in range(n)]
        index = index.with_videos(tuple(index.videos[i] for i in keep))
    return index


# -- epochs -----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EpochPlan:
    """What epoch ``epoch`` trains on.

    ``videos`` are the positions (in the index) trained on, in index order; ``views[i]`` is the
    view of ``videos[i]`` (None: drawn by ``sampler`` as view number ``view_number`` when the
    video is opened). ``teacher_logits``/``teacher_features`` are rows per *index position*
    (cache mode), float32. ``invalid`` lists videos whose cached view failed at build time.
    """

    epoch: int
    view_number: int
    videos: np.ndarray
    views: tuple[View | None, ...]
    teacher_logits: np.ndarray | None = None
    teacher_features: np.ndarray | None = None
    invalid: tuple[int, ...] = field(default=())

    def source(self, sampler: ViewSampler | None = None) -> FixedViews | SampledViews:
        """The plan's views for ``ClipDataset``: the fixed (cached) views, or view number
        ``view_number`` of each video drawn by ``sampler``."""
        if all(v is not None for v in self.views):
            return FixedViews(tuple(self.views))
        if sampler is None:
            raise ValueError("the plan has views to draw but no sampler was given")
        return SampledViews.of_videos(sampler, self.videos.tolist(), self.view_number)


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
    if reader.meta.mix is not None:
        # Its logits are the teacher's on mixed clips; replaying only the own view would
        # pair them with the wrong input. The student-side replay of mixed rows comes next.
        raise CacheError(f"{reader.location}: a mixed cache (mixup/cutmix rows) cannot be "
                         "trained from by this dvfl yet; build the cache without --mixup/--cutmix")
    if views is not None and not 1 <= views <= reader.meta.views_per_video:
        raise CacheError(f"{reader.location}: {views} views per video asked, the cache has "
                         f"{reader.meta.views_per_video}")
    r = (epoch - 1) % (views or reader.meta.views_per_video)
    view_names = [k for k in ("video", "view", "frames", "crop", "flip", "jitter", "gray",
                              "frame_jitter", "jitter_order") if k in reader.meta.row_arrays()]
    names = ["logits", "valid", *view_names]
    if need_features:
        names.append("features")
    block = reader.epoch_block(r, names=names)  # one contiguous read per array
    valid = block["valid"].astype(bool)
    ok = np.flatnonzero(valid)
    views = views_from_arrays({k: block[k][ok] for k in view_names})
    invalid = tuple(int(v) for v in np.flatnonzero(~valid))
    return EpochPlan(epoch=epoch, view_number=r, videos=ok.astype(np.int64), views=tuple(views),
                     teacher_logits=block["logits"].astype(np.float32),
                     teacher_features=(block["features"].astype(np.float32)
                                       if need_features else None),
                     invalid=invalid)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """A permutation of range(n) that depends on (seed, epoch) only, never on a running RNG."""
    return _rng(seed, epoch, _ORDER).permutation(n)


def rank_batches(order: np.ndarray, *, batch_size: int, rank: int = 0,
                 world_size: int = 1) -> list[list[int]]:
    """This rank's share of each global batch: ``chunk[rank::world_size]`` of consecutive chunks.

    Every rank gets the same number of steps (the last may be short or even empty on some
    ranks); the shares of one step are disjoint and together make the global batch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    steps = math.ceil(len(order) / batch_size)
    return [[int(i) for i in order[s * batch_size:(s + 1) * batch_size][rank::world_size]]
            for s in range(steps)]


# -- decoding ---------------------------------------------------------------------------------

def train_clips(index: DatasetIndex, plan: EpochPlan, cuts: Sequence[Cut], *,
                sampler: ViewSampler | None = None) -> ClipDataset:
    """The epoch's clips: item i is ``plan.videos[i]`` cut as ``cuts`` say (from the teacher
    source: the student's cut, and online the teacher's), all from one decode."""
    return ClipDataset(index, plan.source(sampler), cuts)


def make_loader(dataset: ClipDataset, batches: list[list[int]], *, workers: int,
                pin_memory: bool) -> DataLoader:
    """Yields exactly ``batches`` (positions into the dataset), in order, decoded by workers."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_clips, pin_memory=pin_memory,
                      prefetch_factor=4 if workers else None, persistent_workers=False)


def as_input(clip: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 pixels of a uint8 cut -> normalised float on ``device`` (bit-identical to
    ``apply_view``); float input, e.g. a benchmark's ready-made batch, is taken as normalised."""
    clip = clip.to(device, non_blocking=True)
    return to_float(clip) if clip.dtype == torch.uint8 else clip


def student_inputs(batch: dict[str, Any], device: torch.device, *, num_frames: int,
                   size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's student clips and labels on ``device``.

    A rank whose share decoded to nothing still steps (DDP needs every rank in each gradient
    all-reduce): it feeds one blank clip (the caller gives it loss weight 0).
    """
    if batch["clip"] is None:
        return (torch.zeros(1, num_frames, 3, size, size, device=device),
                torch.zeros(1, dtype=torch.int64, device=device))
    return as_input(batch["clip"], device), batch["label"].to(device, non_blocking=True)


# -- mixing (plain CE only) -------------------------------------------------------------------

def mix_batch(clip: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup: float,
              cutmix: float, seed: int, epoch: int, step: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix of a batch with its reverse, and the matching soft targets.

    With both enabled each batch picks one at even odds. lambda ~ Beta(a, a); cutmix pastes one
    box (the same on every frame) and sets lambda to the exact kept area. The draws come from
    (seed, epoch, step), so a resumed run mixes identically. Returns (clip, targets (B, C)).
    """
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(clip.dtype)
    if mixup <= 0 and cutmix <= 0:
        return clip, onehot
    rng = _rng(seed, epoch, step, _MIX)
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    flipped = clip.flip(0)
    if use_cutmix:
        height, width = clip.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
        clip = clip.clone()
        clip[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        clip = lam * clip + (1.0 - lam) * flipped
    return clip, lam * onehot + (1.0 - lam) * onehot.flip(0)
