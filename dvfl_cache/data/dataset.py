"""`ClipDataset`: decoded, transformed clips of the views of an index, for a DataLoader.

Videos are opened inside `__getitem__` (never in `__init__`), so forked or spawned workers each
open their own files. A video that fails to decode does not stop the run: its item carries the
error, `collate_clips` drops it from the batch and hands back (path, reason), and the caller
counts and lists the failures at the end (`FailureLog`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from dvfl_cache.data.decode import VideoInfo, open_video
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.mix import Mix, MixDraw, mix_pixels
from dvfl_cache.data.transforms import to_float, view_pixels
from dvfl_cache.data.views import View, ViewSampler, subsample_view, views_to_arrays
from dvfl_cache.errors import VideoDecodeError

log = logging.getLogger(__name__)

ViewFn = Callable[[int, VideoInfo], View]


class ClipDataset(Dataset):
    """Items are the views of `index`'s videos.

    `view_fn`: either a callable `(video, info) -> View`, giving one item per video (item i is
    video i), or a fixed sequence of `View`s, one item each (item i is `view_fn[i]`, for its
    `view.video`). Items are dicts: `clip` float32 (T, 3, size, size) or None, `label`,
    `video`, `view`, `view_arrays` (one-row `views_to_arrays`) or None, `error` (None or the
    reason), `path`.

    `as_uint8=True` makes `clip` the uint8 pixels (T, 3, size, size) instead: a quarter of the
    bytes for the DataLoader to move; `transforms.to_float(batch["clip"].to(device))` then
    gives exactly the float clip.
    """

    def __init__(self, index: DatasetIndex, view_fn: ViewFn | Sequence[View], size: int, *,
                 normalize: bool = True, as_uint8: bool = False, threads: int = 1):
        self.index = index
        self.size = int(size)
        self.normalize = normalize
        self.as_uint8 = as_uint8
        self.threads = threads
        if callable(view_fn):
            self.view_fn: ViewFn | None = view_fn
            self.views: tuple[View, ...] | None = None
        else:
            self.view_fn = None
            self.views = tuple(view_fn)
            bad = [v.video for v in self.views if not 0 <= v.video < len(index)]
            if bad:
                raise ValueError(f"view of video {bad[0]} but the index has {len(index)} videos")

    def __len__(self) -> int:
        return len(self.index) if self.views is None else len(self.views)

    def __getitem__(self, i: int) -> dict:
        view = None if self.views is None else self.views[i]
        video = i if view is None else view.video
        entry = self.index.videos[video]
        path = self.index.abspath(video)
        item = {"clip": None, "label": entry.label, "video": video,
                "view": -1 if view is None else view.view, "view_arrays": None,
                "error": None, "path": path}
        try:
            with open_video(path, threads=self.threads) as v:
                if view is None:
                    view = self.view_fn(video, v.info)
                    if view.video != video:
                        raise ValueError(f"view_fn returned a view of video {view.video} "
                                         f"for video {video}")
                frames = v.frames(view.frames)
        except VideoDecodeError as e:
            log.debug("%s", e)
            item["error"] = e.reason
            if view is not None:
                item["view_arrays"] = views_to_arrays([view])
            return item
        pixels = view_pixels(frames, view, self.size)
        item["clip"] = pixels if self.as_uint8 else to_float(pixels, normalize=self.normalize)
        item["view"] = view.view
        item["view_arrays"] = views_to_arrays([view])
        return item


def mixed_clip(index: DatasetIndex, own: torch.Tensor, mix: Mix | MixDraw, size: int, *,
               sampler: ViewSampler | None = None, frames: int | None = None,
               threads: int = 1) -> tuple[torch.Tensor, Mix]:
    """A row's own uint8 pixels `own` (T, 3, size, size) mixed with its partner's view.

    The one place a partner is decoded, for the build (given a `MixDraw` and the `sampler`,
    the partner's view is drawn from its video here) and for a student replaying a stored `Mix`
    (`frames` cuts the partner's view like the own one, via `subsample_view`). Returns the
    mixed uint8 pixels and the full `Mix` record; a partner that cannot be decoded raises
    `VideoDecodeError` naming the partner's file.
    """
    if isinstance(mix, MixDraw) and sampler is None:
        raise ValueError("mixed_clip: drawing a partner view needs the sampler")
    path = index.abspath(mix.partner if isinstance(mix, MixDraw) else mix.partner.video)
    with open_video(path, threads=threads) as v:
        if isinstance(mix, MixDraw):
            mix = mix.with_partner(sampler.sample(mix.partner, mix.view, v.info))
        partner = mix.partner if frames is None else subsample_view(mix.partner, frames)
        pixels = v.frames(partner.frames)
    return mix_pixels(own, view_pixels(pixels, partner, size), mix), mix


def replay_clip(index: DatasetIndex, view: View, mix: Mix | None, size: int, *,
                frames: int | None = None, threads: int = 1) -> torch.Tensor:
    """A stored row's uint8 pixels (T', 3, size, size), exactly as the teacher saw them when
    `frames` and `size` are the teacher's: own view (cut to `frames` by `subsample_view`), then
    the stored `Mix` (None: unmixed) applied with `mixed_clip` at the same cut."""
    if frames is not None:
        view = subsample_view(view, frames)
    with open_video(index.abspath(view.video), threads=threads) as v:
        own = view_pixels(v.frames(view.frames), view, size)
    if mix is None:
        return own
    return mixed_clip(index, own, mix, size, frames=frames, threads=threads)[0]


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, straight into shared memory inside a DataLoader worker.

    As in torch's default_collate: the batch must reach the main process through shared
    memory anyway, and stacking there saves copying ~5 MB per 224 px clip once more.
    """
    out = None
    if torch.utils.data.get_worker_info() is not None:
        numel = sum(t.numel() for t in tensors)
        storage = tensors[0]._typed_storage()._new_shared(numel, device=tensors[0].device)
        out = tensors[0].new(storage).resize_(len(tensors), *tensors[0].shape)
    return torch.stack(tensors, out=out)


def collate_clips(items: list[dict]) -> dict:
    """Batch the items that decoded; the rest come back as `failures` [(path, reason)].

    Returns `clip` (B, T, 3, S, S) (None when every item failed), `label` int64 (B,), `video`
    and `view` int64 (B,), `view_arrays` (the good views' arrays, B rows), `failures`.
    """
    good = [it for it in items if it["error"] is None]
    failures = [(it["path"], it["error"]) for it in items if it["error"] is not None]
    if not good:
        return {"clip": None, "label": torch.zeros(0, dtype=torch.int64),
                "video": torch.zeros(0, dtype=torch.int64),
                "view": torch.zeros(0, dtype=torch.int64),
                "view_arrays": None, "failures": failures}
    return {
        "clip": _stack([it["clip"] for it in good]),
        "label": torch.tensor([it["label"] for it in good], dtype=torch.int64),
        "video": torch.tensor([it["video"] for it in good], dtype=torch.int64),
        "view": torch.tensor([it["view"] for it in good], dtype=torch.int64),
        "view_arrays": {k: np.concatenate([it["view_arrays"][k] for it in good])
                        for k in good[0]["view_arrays"]},
        "failures": failures,
    }


@dataclass
class FailureLog:
    """Collects the (path, reason) failures of a run, to count and list them at its end."""

    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, failures: list[tuple[str, str]]) -> None:
        self.failures.extend((str(p), str(r)) for p, r in failures)

    def __len__(self) -> int:
        return len(self.failures)

    @property
    def videos(self) -> list[str]:
        """Distinct failed paths, in first-seen order."""
        return list(dict.fromkeys(p for p, _ in self.failures))

    def report(self, logger: logging.Logger = log) -> None:
        """Log one warning with the count and one line per failed video (none if all went well)."""
        if not self.failures:
            return
        reasons = dict(self.failures)
        lines = "\n".join(f"  {p}: {reasons[p]}" for p in self.videos)
        logger.warning("%d clip(s) of %d video(s) failed to decode and were skipped:\n%s",
                       len(self.failures), len(self.videos), lines)
