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
  the same view subsampled to its frame count (``subsample_view``) at its own size.
- Views come from the cache (epoch e replays view (e - 1) mod V, epochs being 1-based), or,
  without one, are drawn by ``ViewSampler(mode="train")`` as view e - 1 in the worker that
  decodes the video (it needs the frame count).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.decode import open_video
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.transforms import to_float, view_pixels
from dvfl_cache.data.views import (View, ViewSampler, subsample_positions, subsample_view,
                                   views_from_arrays)
from dvfl_cache.errors import CacheError, DvflError, VideoDecodeError

from dvfl_train.config import FitConfig

__all__ = ["EpochPlan", "TrainClips", "batch_inputs", "collate_train", "epoch_order",
           "load_online_teacher", "make_loader", "mix_batch", "open_cache", "plan_epoch",
           "rank_batches", "train_index", "val_index"]

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


# -- where teacher logits come from -----------------------------------------------------------

def open_cache(path: str, index: DatasetIndex, *, num_frames: int,
               need_features: bool) -> CacheReader:
    """The cache, refused unless it was built for exactly these videos and can serve the run."""
    reader = CacheReader(path)
    reader.check_compatible(dataset=index, num_classes=index.num_classes)
    if not reader.complete:
        raise CacheError(f"{path}: cache is unfinished (shards {reader.pending_shards()[:10]} "
                         "pending); finish it with `dvfl-cache build --resume`")
    if num_frames > reader.meta.num_frames:
        raise CacheError(f"{path}: the teacher saw {reader.meta.num_frames} frames per view; a "
                         f"student cannot replay {num_frames} of them (use --frames <= "
                         f"{reader.meta.num_frames})")
    if need_features and reader.meta.feature_dim is None:
        raise CacheError(f"{path}: the feature term (beta > 0) needs teacher features; rebuild "
                         "the cache with `dvfl-cache build --features`")
    return reader


def load_online_teacher(cfg: FitConfig, *, num_classes: int) -> torch.nn.Module:
    """The teacher for online KD, frozen and in eval mode.

    ``cfg.teacher`` names the architecture of ``cfg.teacher_weights``; without a name the weights
    must be a dvfl checkpoint, which names its own. The teacher's clip geometry is its own:
    ``num_frames`` and the ``img_size`` of its config.
    """
    from dvfl_cache.models import create_model, load_pretrained, model_from_checkpoint

    opts = dict(cfg.teacher_opts)
    if cfg.teacher is None:
        teacher, report = model_from_checkpoint(cfg.teacher_weights, **opts)
    else:
        try:
            teacher = create_model(cfg.teacher, **{"num_classes": num_classes, **opts})
        except (TypeError, ValueError) as exc:
            raise DvflError(f"teacher {cfg.teacher}: {exc}") from None
        report = load_pretrained(teacher, cfg.teacher_weights)
    log.info("online teacher %s", report.summary())
    if teacher.num_classes != num_classes:
        raise DvflError(f"{cfg.teacher_weights}: the teacher has {teacher.num_classes} classes, "
                        f"the dataset {num_classes}")
    if cfg.num_frames > teacher.num_frames:
        raise DvflError(f"{cfg.teacher_weights}: the teacher takes {teacher.num_frames} frames; "
                        f"a student of {cfg.num_frames} cannot share its views")
    teacher.eval().requires_grad_(False)
    return teacher


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


def plan_epoch(epoch: int, index: DatasetIndex, *, reader: CacheReader | None = None,
               need_features: bool = False) -> EpochPlan:
    """The epoch's views: the cached block of view (epoch - 1) mod V, or all videos to sample."""
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
    r = (epoch - 1) % reader.meta.views_per_video
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

class TrainClips(Dataset):
    """Item i: the clip of ``plan.videos[i]`` for the student (and the teacher, online).

    ``sampler`` draws views when the plan has none; its frame count is the teacher's (online)
    or the student's. The student's view is ``subsample_view(view, num_frames)``; with
    ``teacher_size`` the full view is also applied at that size, from the same decoded frames.
    Clips are uint8 pixels (``view_pixels``), 4x less to ship from workers and to the device;
    ``batch_inputs`` normalises them where the model runs, bit-identical to ``apply_view``.
    """

    def __init__(self, index: DatasetIndex, plan: EpochPlan, *, num_frames: int, size: int,
                 sampler: ViewSampler | None = None, teacher_size: int | None = None):
        if sampler is None and any(v is None for v in plan.views):
            raise ValueError("the plan has views to draw but no sampler was given")
        self.index, self.plan, self.sampler = index, plan, sampler
        self.num_frames, self.size, self.teacher_size = num_frames, size, teacher_size

    def __len__(self) -> int:
        return len(self.plan.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = int(self.plan.videos[i])
        path = self.index.abspath(video)
        item: dict[str, Any] = {"video": video, "label": self.index.videos[video].label,
                                "path": path, "clip": None, "teacher_clip": None, "error": None}
        view = self.plan.views[i]
        try:
            with open_video(path) as v:
                if view is None:
                    view = self.sampler.sample(video, self.plan.view_number, v.info)
                positions = subsample_positions(len(view.frames), self.num_frames)
                if self.teacher_size is None:
                    frames = v.frames([view.frames[p] for p in positions])
                else:
                    frames = v.frames(list(view.frames))
        except VideoDecodeError as exc:
            log.debug("%s", exc)
            item["error"] = exc.reason
            return item
        student_view = subsample_view(view, self.num_frames)
        if self.teacher_size is None:
            item["clip"] = view_pixels(frames, student_view, self.size)
        else:
            item["teacher_clip"] = view_pixels(frames, view, self.teacher_size)
            item["clip"] = view_pixels(frames[positions], student_view, self.size)
        return item


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack what decoded; ``failures`` lists (path, reason) of what did not."""
    good = [it for it in items if it["error"] is None]
    batch: dict[str, Any] = {
        "failures": [(it["path"], it["error"]) for it in items if it["error"] is not None],
        "video": torch.tensor([it["video"] for it in good], dtype=torch.int64),
        "label": torch.tensor([it["label"] for it in good], dtype=torch.int64),
        "clip": torch.stack([it["clip"] for it in good]) if good else None,
        "teacher_clip": None,
    }
    if good and good[0]["teacher_clip"] is not None:
        batch["teacher_clip"] = torch.stack([it["teacher_clip"] for it in good])
    return batch


def make_loader(dataset: TrainClips, batches: list[list[int]], *, workers: int,
                pin_memory: bool) -> DataLoader:
    """Yields exactly ``batches`` (positions into the dataset), in order, decoded by workers."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_train, pin_memory=pin_memory,
                      prefetch_factor=4 if workers else None, persistent_workers=False)


def _as_input(clip: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 pixels from ``TrainClips`` -> normalised float on ``device`` (float input, e.g. a
    benchmark's ready-made batch, is taken as already normalised)."""
    clip = clip.to(device, non_blocking=True)
    return to_float(clip) if clip.dtype == torch.uint8 else clip


def batch_inputs(batch: dict[str, Any], device: torch.device, *, num_classes: int,
                  cfg: FitConfig, teacher: nn.Module | None, cached_logits: torch.Tensor | None,
                  cached_features: torch.Tensor | None, need_features: bool, amp: bool):
    """Clips, labels and teacher outputs of a batch on ``device``.

    A rank whose share decoded to nothing still steps (DDP needs every rank in each gradient
    all-reduce): it feeds one blank clip with loss weight 0.
    """
    if batch["clip"] is None:
        clip = torch.zeros(1, cfg.num_frames, 3, cfg.size, cfg.size, device=device)
        labels = torch.zeros(1, dtype=torch.int64, device=device)
        has_teacher = teacher is not None or cached_logits is not None
        t_logits = torch.zeros(1, num_classes, device=device) if has_teacher else None
        width = (teacher.num_features if teacher is not None
                 else cached_features.shape[1] if cached_features is not None else 0)
        t_feats = torch.zeros(1, width, device=device) if need_features else None
        return clip, labels, t_logits, t_feats
    clip = _as_input(batch["clip"], device)
    labels = batch["label"].to(device, non_blocking=True)
    t_logits = t_feats = None
    if cached_logits is not None:
        rows = batch["video"].to(device, non_blocking=True)
        t_logits = cached_logits[rows]
        t_feats = cached_features[rows] if cached_features is not None else None
    elif teacher is not None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            features = teacher.forward_features(_as_input(batch["teacher_clip"], device))
            t_logits = teacher.forward_head(features).float()
        t_feats = features.float() if need_features else None
    return clip, labels, t_logits, t_feats


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
