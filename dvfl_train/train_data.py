"""Data plumbing of student training: which views an epoch trains on, in which order, on which rank.

Why this shape:
- An epoch is planned up front (:class:`EpochPlan`, from ``dvfl_cache.cache.epochs``, which
  the public ``CachedClips`` reads too): its videos, their views and, with a cache,
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
- Mixed rows (mixup / cutmix) are items of the same dataset with a source of mixes: a mixed
  cache's stored records (``StoredMixes``), or, online and for plain CE, drawn per row from
  (data seed, video, view e - 1) like the build draws them (``DrawnMixes``). Either way the
  partner is decoded and mixed cut by cut, so the teacher's cut and the student's (fewer
  frames, another size) are cut from one pair with one lambda and box; ``mixed_targets``
  mixes the labels the reference's way (each one-hot smoothed, then mixed with lambda).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dvfl_cache.cache.epochs import EpochPlan, plan_epoch
from dvfl_cache.data.dataset import ClipDataset, Cut, collate_clips
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.mix import OPS, MixConfig, mix_targets
from dvfl_cache.data.transforms import to_float
from dvfl_cache.data.views import ViewSampler
from dvfl_cache.errors import DvflError

from dvfl_train.config import FitConfig

__all__ = ["EpochPlan", "MixCount", "as_input", "epoch_order", "make_loader", "mix_batch",
           "mixed_targets", "plan_epoch", "rank_batches", "student_inputs", "train_clips",
           "train_index", "val_index"]

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

    if cfg.val_index is None and cfg.train_index is not None:
        index = _derived_val_index(cfg)
    else:
        index = resolve_index(index=cfg.val_index, kind=cfg.dataset, root=cfg.data_root,
                              split=cfg.split, subset="test")
    if len(index) == 0:
        raise DvflError(f"{cfg.val_index or cfg.data_root}: no validation videos")
    n = cfg.val_subset
    if n is not None and n < len(index):
        keep = [(i * len(index)) // n for i in range(n)]
        index = index.with_videos(tuple(index.videos[i] for i in keep))
    return index


def _derived_val_index(cfg: FitConfig) -> DatasetIndex:
    """`--index` without `--val-index`: the same split's test list, read where the training
    index's dataset lives (its --root, or the dataset folder around its video folder), or one
    line saying what to add."""
    import os

    from dvfl_cache.data.source import resolve_index

    roots = list(dict.fromkeys([cfg.data_root, os.path.dirname(os.path.normpath(cfg.data_root))]))
    if cfg.dataset != "list":
        for root in roots:
            try:
                index = resolve_index(kind=cfg.dataset, root=root, split=cfg.split,
                                      subset="test")
            except (DvflError, OSError):
                continue
            log.info("validation: the %s split %d test list under %s (%d videos)", cfg.dataset,
                     cfg.split, root, len(index))
            return index
    raise DvflError(f"--index {cfg.train_index} gives no validation videos: add --val-index "
                    "VAL.json (`dvfl-cache index ... --subset test --out VAL.json`, or "
                    "`--hold-out 0.1 --hold-out-out VAL.json` to keep some training videos "
                    "apart)")


# -- epochs -----------------------------------------------------------------------------------

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
                sampler: ViewSampler | None = None, mix: MixConfig | None = None) -> ClipDataset:
    """The epoch's clips: item i is ``plan.videos[i]`` cut as ``cuts`` say (from the teacher
    source: the student's cut, and online the teacher's), all from one decode; mixed with
    its partner (``plan.mix_source``) when the rows are mixed, every cut alike."""
    return ClipDataset(index, plan.source(sampler), cuts,
                       mixes=plan.mix_source(mix, sampler, len(index)))


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


# -- mixing -----------------------------------------------------------------------------------

def mixed_targets(batch: dict[str, Any], device: torch.device, num_classes: int, *,
                  smoothing: float) -> torch.Tensor:
    """Soft targets (B, C) of a mixing dataset's batch: ``lam * smooth(onehot(y)) + (1 - lam)
    * smooth(onehot(y_partner))``, each one-hot smoothed before mixing as the reference does
    (``mix.mix_targets``); unmixed rows have lam 1. Already smoothed: no second smoothing."""
    if batch["clip"] is None:  # a rank's blank clip (loss weight 0)
        return torch.full((1, num_classes), 1.0 / num_classes, device=device)
    return mix_targets(batch["label"].to(device), batch["partner_label"].to(device),
                       batch["mix_lambda"].to(device), num_classes, smoothing=smoothing)


@dataclass
class MixCount:
    """Clips, mixed clips and cutmix clips seen (an epoch's record: mixed fraction, cutmix
    share of the mixed)."""

    clips: int = 0
    mixed: int = 0
    cutmix: int = 0

    def add(self, batch: dict[str, Any]) -> None:
        op = batch.get("mix_op")  # absent when a rank's share of the batch is empty
        if op is None:
            return
        self.clips += len(op)
        self.mixed += int((op > 0).sum())
        self.cutmix += int((op == OPS.index("cutmix")).sum())

    def record(self) -> dict[str, float]:
        return {"mixed": self.mixed / max(self.clips, 1),
                "cutmix_share": self.cutmix / max(self.mixed, 1)}



def mix_batch(clip: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup: float,
              cutmix: float, seed: int, epoch: int, step: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix of a batch with its reverse, and the matching soft targets: the
    round-1 scheme, kept so that a run recorded with ``mix_scheme="batch"`` resumes exactly
    (new runs mix per row, as the cache does).

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
