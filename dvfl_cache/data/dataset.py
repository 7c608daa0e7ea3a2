"""`ClipDataset`: the one dataset that decodes views, configured by a source of views and cuts.

Every stage decodes views the same way, only asking different questions of it:

    index  +  a source of views              +  the outputs wanted (cuts)
              SampledViews (a sampler draws)     Cut(name, size, frames, as_uint8)
              FixedViews (a list, cached rows)   one or more of the same decoded frames
              AllViews (every test view)

- the cache build: ``SampledViews.rows`` (row -> view r of video v), one float cut;
- training: ``FixedViews`` of the cached rows (or ``SampledViews`` online), the student's
  uint8 cut and, online, the teacher's full-length cut at its own size;
- evaluation and predict: ``AllViews`` of the test sampler, one float cut, views stacked.

Videos are opened inside `__getitem__` (never in `__init__`), so forked or spawned workers each
open their own files, and a video is decoded once for all of its views and cuts: the frames of
every view are gathered, decoded together and cut. A video that fails to decode does not stop
the run: its item carries the error, `collate_clips` drops it from the batch and hands back
(path, reason) and where it was (video, view), and the caller counts and lists the failures at
the end (`FailureLog`).

A source returns a tuple of `View`s per item, and `ClipDataset.decode(path, draw)` turns one
clip's views into uint8 pixels per cut. A mixed item (mixup / cutmix of a row's clip and its
partner's) adds a source of mixes (`DrawnMixes`: drawn per row from (seed, video, view), as the
build, online KD and plain CE mixing do; `StoredMixes`: a cached epoch's records): the item
decodes its own view and then its partner's, each with one `decode` call, so every cut of both
is rendered alike, mixes each cut's uint8 pixels with the same lambda and box (`mix_pixels`),
and only then converts as the cut says. The item carries the `Mix` record (`mix`,
`mix_arrays`) for the build's columns and the student's label mixing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from dvfl_cache.data.decode import VideoInfo, open_video
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.mix import (OPS, Mix, MixConfig, MixDraw, draw_mix, mix_pixels,
                                 mixes_to_arrays)
from dvfl_cache.data.transforms import to_float, view_pixels
from dvfl_cache.data.views import View, ViewSampler, subsample_view, views_to_arrays
from dvfl_cache.errors import VideoDecodeError

__all__ = ["AllViews", "ClipDataset", "Cut", "DrawnMixes", "FailureLog", "FixedViews", "RowViews",
           "MixSource", "SampledViews", "StoredMixes", "ViewSource", "collate_clips",
           "mixed_clip", "replay_clip"]

log = logging.getLogger(__name__)

# Most bytes of decoded frames `ClipDataset.video_items` holds at once (one decoding worker):
# 10 s of 320 x 240 video is 70 MB, of 1080p 1.9 GB, which is then decoded in runs of views.
FRAME_BUDGET = 512 << 20

ViewFn = Callable[[int, VideoInfo], View]


# -- sources of views -------------------------------------------------------------------------

class ViewSource(Protocol):
    """Which views item i holds. ``stacked``: items hold several views (a leading V dim)."""

    stacked: bool

    def __len__(self) -> int: ...
    def video(self, i: int) -> int: ...
    def view_number(self, i: int) -> int: ...
    def draw(self, i: int, info: VideoInfo) -> tuple[View, ...]: ...


@dataclass(frozen=True)
class SampledViews:
    """Item i: view ``items[i][1]`` of video ``items[i][0]``, drawn by ``sampler`` when the video
    is opened (drawing needs its frame count). A dataclass so it pickles into workers."""

    sampler: Any  # ViewSampler or SubsampledViews: anything with sample(video, view, info)
    items: tuple[tuple[int, int], ...]
    stacked: bool = field(default=False, init=False)

    @classmethod
    def of_videos(cls, sampler: Any, videos: Sequence[int], view: int = 0) -> SampledViews:
        """View number ``view`` of each of ``videos``."""
        return cls(sampler, tuple((int(v), int(view)) for v in videos))

    @classmethod
    def rows(cls, sampler: Any, rows: Sequence[int], num_videos: int) -> SampledViews:
        """Cache rows: row ``r * num_videos + v`` is view r of video v."""
        return cls(sampler, tuple(divmod(int(r), num_videos)[::-1] for r in rows))

    def __len__(self) -> int:
        return len(self.items)

    def video(self, i: int) -> int:
        return self.items[i][0]

    def view_number(self, i: int) -> int:
        return self.items[i][1]

    def draw(self, i: int, info: VideoInfo) -> tuple[View, ...]:
        video, view = self.items[i]
        return (self.sampler.sample(video, view, info),)


@dataclass(frozen=True)
class RowViews:
    """Item r is cache row r: view ``r // num_videos`` of video ``r % num_videos``, drawn when
    the video is opened. Computed, not tabled, so a store of millions of rows costs nothing
    here and a sampler may hand out any rows (the build's shard claims)."""

    sampler: Any
    num_videos: int
    num_rows: int
    stacked: bool = field(default=False, init=False)

    def __len__(self) -> int:
        return self.num_rows

    def video(self, i: int) -> int:
        return int(i) % self.num_videos

    def view_number(self, i: int) -> int:
        return int(i) // self.num_videos

    def draw(self, i: int, info: VideoInfo) -> tuple[View, ...]:
        return (self.sampler.sample(self.video(i), self.view_number(i), info),)


@dataclass(frozen=True)
class FixedViews:
    """Item i: ``views[i]`` (a fixed list, e.g. the rows of a cache epoch)."""

    views: tuple[View, ...]
    stacked: bool = field(default=False, init=False)

    def __len__(self) -> int:
        return len(self.views)

    def video(self, i: int) -> int:
        return self.views[i].video

    def view_number(self, i: int) -> int:
        return self.views[i].view

    def draw(self, i: int, info: VideoInfo) -> tuple[View, ...]:
        return (self.views[i],)


class _OnePerVideo:
    """Item i is video i itself (not a numbered view of it): the sources below with a
    ``num_videos`` field."""

    num_videos: int

    def __len__(self) -> int:
        return self.num_videos

    def video(self, i: int) -> int:
        return i

    def view_number(self, i: int) -> int:
        return -1


@dataclass(frozen=True)
class AllViews(_OnePerVideo):
    """Item i: every view of video i (``sampler.views_per_video``), stacked: test layouts."""

    sampler: Any
    num_videos: int
    stacked: bool = field(default=True, init=False)

    def draw(self, i: int, info: VideoInfo) -> tuple[View, ...]:
        return tuple(self.sampler.sample(i, k, info) for k in range(self.sampler.views_per_video))


@dataclass(frozen=True)
class _FnViews(_OnePerVideo):
    """Item i: ``fn(i, info)`` for video i (the plain view-function form)."""

    fn: ViewFn
    num_videos: int
    stacked: bool = field(default=False, init=False)

    def draw(self, i: int, info: VideoInfo) -> tuple[View, ...]:
        view = self.fn(i, info)
        if view.video != i:
            raise ValueError(f"view_fn returned a view of video {view.video} for video {i}")
        return (view,)


# -- sources of mixes -------------------------------------------------------------------------

class MixSource(Protocol):
    """Which mix item i holds (None: unmixed), and the partner's full view once it is opened."""

    def draw(self, i: int, view: View) -> Mix | MixDraw | None: ...
    def with_partner(self, draw: Mix | MixDraw, info: VideoInfo) -> Mix: ...


def partner_video(draw: Mix | MixDraw) -> int:
    return draw.partner if isinstance(draw, MixDraw) else draw.partner.video


@dataclass(frozen=True)
class DrawnMixes:
    """Mixes drawn per row, ``draw_mix(cfg, video, view, num_videos)``: never from the batch.

    The partner's view is view number ``view`` of the partner video, drawn by ``sampler`` when
    the partner is opened (the view its own row starts from, at the same frames)."""

    cfg: MixConfig
    sampler: Any
    num_videos: int

    def draw(self, i: int, view: View) -> MixDraw | None:
        return draw_mix(self.cfg, view.video, view.view, self.num_videos)

    def with_partner(self, draw: MixDraw, info: VideoInfo) -> Mix:
        return draw.with_partner(self.sampler.sample(draw.partner, draw.view, info))


@dataclass(frozen=True)
class StoredMixes:
    """Item i's stored mix ``mixes[i]`` (a cached epoch's ``mixes_from_arrays``), or None."""

    mixes: tuple[Mix | None, ...]

    def draw(self, i: int, view: View) -> Mix | None:
        return self.mixes[i]

    def with_partner(self, draw: Mix, info: VideoInfo) -> Mix:
        return draw


# -- outputs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cut:
    """One output of each view: ``frames`` of its frames (``subsample_view``; None: all) at
    ``size`` px, as uint8 pixels (``as_uint8``, 4x less to ship; ``to_float`` them where the
    model runs) or float32 (ImageNet-normalised, or [0, 1] without ``normalize``)."""

    name: str
    size: int
    frames: int | None = None
    as_uint8: bool = False
    normalize: bool = True

    def view(self, view: View) -> View:
        return view if self.frames is None else subsample_view(view, self.frames)

    def render(self, frames: np.ndarray, view: View) -> torch.Tensor:
        """The cut of ``view`` (already cut by `view`) from its decoded frames: uint8 pixels,
        what mixing works on before `convert`."""
        return view_pixels(frames, view, self.size)

    def convert(self, pixels: torch.Tensor) -> torch.Tensor:
        """The cut's uint8 pixels as it ships them (uint8, or float)."""
        return pixels if self.as_uint8 else to_float(pixels, normalize=self.normalize)


class ClipDataset(Dataset):
    """Items are the views of ``source`` over ``index``'s videos, cut as ``cuts`` say.

    ``source``: a `ViewSource`; for short, a callable ``(video, info) -> View`` (item i is
    video i) or a sequence of `View`s (item i is ``source[i]``). ``cuts``: `Cut`s, or a size
    for one cut named ``clip`` (with ``normalize``/``as_uint8``). Items are dicts: one tensor
    per cut (T, 3, S, S), or (V, T, 3, S, S) for a stacked source, None when the video failed;
    ``label``, ``video``, ``view`` (the view number, -1 for stacked items), ``view_arrays``
    (`views_to_arrays` of the drawn views, or None), ``error`` (None or the reason), ``path``,
    ``cuts`` (the cut names). With ``mixes`` (a `MixSource`; not for stacked sources) items also
    hold ``mix`` (the `Mix` or None), ``mix_arrays`` (its `mixes_to_arrays` row),
    ``partner_label`` and ``partner`` (the partner video, also when it failed to decode: then
    ``error`` names it and ``path`` is its file).
    """

    def __init__(self, index: DatasetIndex, source: ViewSource | ViewFn | Sequence[View],
                 cuts: int | Sequence[Cut], *, normalize: bool = True, as_uint8: bool = False,
                 threads: int = 1, mixes: MixSource | None = None):
        self.index = index
        if callable(source) and not hasattr(source, "draw"):
            source = _FnViews(source, len(index))
        elif not hasattr(source, "draw"):
            source = FixedViews(tuple(source))
        if isinstance(source, FixedViews):
            bad = [v.video for v in source.views if not 0 <= v.video < len(index)]
            if bad:
                raise ValueError(f"view of video {bad[0]} but the index has {len(index)} videos")
        self.source = source
        if isinstance(cuts, int):
            cuts = (Cut("clip", int(cuts), as_uint8=as_uint8, normalize=normalize),)
        self.cuts = tuple(cuts)
        if not self.cuts or len({c.name for c in self.cuts}) < len(self.cuts):
            raise ValueError(f"cuts need distinct names, got {[c.name for c in self.cuts]}")
        self.threads = threads
        if mixes is not None and source.stacked:
            raise ValueError("mixing needs one view per item, not a stacked source")
        self.mixes = mixes

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._item(i, self.decode)

    def video_items(self, items: Sequence[int], *, max_bytes: int = FRAME_BUDGET
                    ) -> Iterator[dict[str, Any]]:
        """Items ``items`` (all of one video), decoding that video once for all of them: the
        frames every cut of every item's view needs are decoded in one pass and each item is
        cut from them, as ``self[i]`` cuts its own (the same pixels: a frame decodes to the
        same values whichever other frames are decoded with it). Mixed items still decode
        their own partners.

        Memory: the decoded frames, at the video's own size (every cut crops from it), at most
        ``max_bytes`` of them: when the items need more frames than that, they are taken in
        runs whose frames fit, one decode per run (a 1080p video's many views, say); and one
        item at a time. If a run's decode fails, each of its items is decoded on its own
        (``self[i]``), so a video whose damage only some views reach fails exactly the rows
        it fails one by one.
        """
        if not items:
            return
        video = self.source.video(items[0])
        if any(self.source.video(i) != video for i in items):
            raise ValueError(f"video_items: items {list(items)[:8]} are not all of one video")
        done = 0  # items yielded so far
        try:
            with open_video(self.index.abspath(video), threads=self.threads) as v:
                drawn = {i: self.source.draw(i, v.info) for i in items}
                need = {i: {f for w in drawn[i] for c in self.cuts for f in c.view(w).frames}
                        for i in items}
                per_frame = max(v.info.width * v.info.height * 3, 1)
                for run in _runs(list(items), need, max(max_bytes // per_frame, 1)):
                    wanted = sorted(set().union(*(need[i] for i in run)))
                    try:
                        frames = v.frames(wanted)
                    except VideoDecodeError as exc:
                        log.debug("%s; decoding its %d items one by one", exc, len(run))
                        for i in run:
                            done += 1
                            yield self[i]
                        continue
                    at = {f: k for k, f in enumerate(wanted)}
                    for i in run:
                        done += 1
                        yield self._item(i, _Decoded(drawn[i], self._render(frames, at,
                                                                            drawn[i])))
                    del frames
        except VideoDecodeError as exc:  # opening it failed: every item says so itself
            log.debug("%s; decoding its %d items one by one", exc, len(items) - done)
            for i in items[done:]:
                yield self[i]

    def _item(self, i: int, decode: Callable[[str, Callable[[VideoInfo], tuple[View, ...]]],
                                              tuple]) -> dict[str, Any]:
        """Item i, its own clip's views and cuts given by ``decode`` (`decode`'s contract)."""
        video = self.source.video(i)
        names = tuple(c.name for c in self.cuts)
        item: dict[str, Any] = {name: None for name in names}
        item.update(label=self.index.videos[video].label, video=video,
                    view=self.source.view_number(i), view_arrays=None, error=None,
                    path=self.index.abspath(video), cuts=names)
        views, outputs, item["error"] = decode(item["path"],
                                               lambda info: self.source.draw(i, info))
        if views:
            item["view_arrays"] = views_to_arrays(views)
            if not self.source.stacked:
                item["view"] = views[0].view
        if self.mixes is not None:
            item.update(mix=None, mix_arrays=None, partner=None, partner_label=item["label"])
            if item["error"] is None:
                outputs = self._mix(i, views[0], outputs, item)
        if item["error"] is not None:
            return item
        for cut in self.cuts:
            out = [cut.convert(p) for p in outputs[cut.name]]
            item[cut.name] = torch.stack(out) if self.source.stacked else out[0]
        return item

    def _mix(self, i: int, view: View, outputs: dict[str, list[torch.Tensor]],
             item: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
        """Decode item i's partner (when it is mixed) and mix every cut's uint8 pixels with it."""
        draw = self.mixes.draw(i, view)
        mix = None
        if draw is not None:
            partner = partner_video(draw)
            item.update(partner=partner, partner_label=self.index.videos[partner].label)
            mix, mixed, error = self.partner(draw, outputs)
            if error is not None:
                item.update(error=f"partner video {partner}: {error}",
                            path=self.index.abspath(partner))
                return {}
            outputs = mixed
        item["mix"] = mix
        item["mix_arrays"] = mixes_to_arrays([mix], num_frames=view.num_frames,
                                             per_frame=view.per_frame)
        return outputs

    def partner(self, draw: Mix | MixDraw, outputs: dict[str, list[torch.Tensor]]
                ) -> tuple[Mix | None, dict[str, list[torch.Tensor]], str | None]:
        """Decode ``draw``'s partner (its view drawn by the mix source when not stored) through
        `decode`, and mix it into each cut of ``outputs`` (uint8, one view): (the `Mix`, the
        mixed cuts, None), or (None, {}, the partner's failure)."""
        holder: list[Mix] = []

        def draw_partner(info: VideoInfo) -> tuple[View, ...]:
            holder.append(self.mixes.with_partner(draw, info))
            return (holder[0].partner,)

        _, theirs, error = self.decode(self.index.abspath(partner_video(draw)), draw_partner)
        if error is not None:
            return None, {}, error
        mix = holder[0]
        return mix, {name: [mix_pixels(own[0], theirs[name][0], mix)]
                     for name, own in outputs.items()}, None

    def decode(self, path: str, draw: Callable[[VideoInfo], tuple[View, ...]]
               ) -> tuple[tuple[View, ...], dict[str, list[torch.Tensor]], str | None]:
        """Open ``path``, draw its views, decode the frames every cut of them needs once, and
        render each cut as uint8 pixels: (views, {cut name: one uint8 tensor per view}, None),
        or the views drawn so far, {} and the reason when the video fails. One call per clip
        an item needs, so a mixed item decodes its own clip and its partner's the same way."""
        views: tuple[View, ...] = ()
        try:
            with open_video(path, threads=self.threads) as v:
                views = draw(v.info)
                per_cut = [[c.view(w) for w in views] for c in self.cuts]
                wanted = sorted({f for ws in per_cut for w in ws for f in w.frames})
                frames = v.frames(wanted)
        except VideoDecodeError as exc:
            log.debug("%s", exc)
            return views, {}, exc.reason
        return views, self._render(frames, {f: k for k, f in enumerate(wanted)}, views), None

    def _render(self, frames: np.ndarray, at: dict[int, int], views: tuple[View, ...]
                ) -> dict[str, list[torch.Tensor]]:
        """Every cut of ``views`` from decoded ``frames`` (frame f is ``frames[at[f]]``)."""
        out = {}
        for cut in self.cuts:
            ws = [cut.view(w) for w in views]
            out[cut.name] = [cut.render(_rows(frames, [at[f] for f in w.frames]), w) for w in ws]
        return out


@dataclass(frozen=True)
class _Decoded:
    """`ClipDataset.decode`'s answer for one item, already cut (`video_items`)."""

    views: tuple[View, ...]
    outputs: dict[str, list[torch.Tensor]]

    def __call__(self, path: str, draw: Callable) -> tuple:
        return self.views, self.outputs, None


def _runs(items: list[int], need: dict[int, set[int]], limit: int) -> list[list[int]]:
    """``items`` in order, cut into runs whose frames (the union of ``need``) number at most
    ``limit`` (an item needing more is a run of its own)."""
    runs: list[list[int]] = []
    frames: set[int] = set()
    for i in items:
        if runs and len(frames | need[i]) <= limit:
            runs[-1].append(i)
            frames |= need[i]
        else:
            runs.append([i])
            frames = set(need[i])
    return runs


def _rows(frames: np.ndarray, rows: list[int]) -> np.ndarray:
    """``frames[rows]``, without numpy's copy when ``rows`` is every frame in order (one view,
    one cut: the usual training item; 1.8 MB per 320x240 clip of 8 frames)."""
    return frames if rows == list(range(len(frames))) else frames[rows]


def mixed_clip(index: DatasetIndex, own: torch.Tensor, mix: Mix | MixDraw, size: int, *,
               sampler: ViewSampler | None = None, frames: int | None = None,
               threads: int = 1) -> tuple[torch.Tensor, Mix]:
    """A row's own uint8 pixels `own` (T, 3, size, size) mixed with its partner's view:
    `ClipDataset.partner` on its own (given a `MixDraw`, the `sampler` draws the partner's
    view; a stored `Mix` names it; `frames` cuts it like the own one). Returns the mixed uint8
    pixels and the full `Mix`; a partner that cannot be decoded raises `VideoDecodeError`."""
    if isinstance(mix, MixDraw) and sampler is None:
        raise ValueError("mixed_clip: drawing a partner view needs the sampler")
    # the draw is given: the source only draws the partner's view (no config needed)
    mixes = (DrawnMixes(MixConfig(), sampler, len(index)) if isinstance(mix, MixDraw)
             else StoredMixes((mix,)))
    ds = ClipDataset(index, (), (Cut("clip", size, frames, as_uint8=True),), threads=threads,
                     mixes=mixes)
    record, mixed, error = ds.partner(mix, {"clip": [own]})
    if error is not None:
        raise VideoDecodeError(index.abspath(partner_video(mix)), error)
    return mixed["clip"][0], record


def replay_clip(index: DatasetIndex, view: View, mix: Mix | None, size: int, *,
                frames: int | None = None, threads: int = 1) -> torch.Tensor:
    """A stored row's uint8 pixels (T', 3, size, size), exactly as the teacher saw them when
    `frames` and `size` are the teacher's: the one `ClipDataset` item of this view and its
    stored `Mix` (None: unmixed), both cut to `frames` (`subsample_view`) at `size`."""
    ds = ClipDataset(index, FixedViews((view,)), (Cut("clip", size, frames, as_uint8=True),),
                     threads=threads, mixes=StoredMixes((mix,)))
    item = ds[0]
    if item["error"] is not None:
        raise VideoDecodeError(item["path"], item["error"])
    return item["clip"]


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
    """Batch the items that decoded; the rest come back as `failures` [(path, reason)] and
    `failed_at` [(video, view)].

    Returns one (B, ...) tensor per cut (None when every item failed), `label` int64 (B,),
    `video` and `view` int64 (B,), `view_arrays` (the good items' arrays, concatenated),
    `failures`, `failed_at`. Items of a mixing dataset add `mix_arrays` (concatenated),
    `mix_op` int64 (B,) (codes of `mix.OPS`, 0 unmixed), `mix_lambda` float32 (B,) (1
    unmixed), `partner_label` int64 (B,) (the own label unmixed), and `failed_partner` (the
    partner video of each failure, None when the item's own video failed).
    """
    good = [it for it in items if it["error"] is None]
    bad = [it for it in items if it["error"] is not None]
    names = items[0]["cuts"] if items else ("clip",)
    batch: dict[str, Any] = {
        "label": torch.tensor([it["label"] for it in good], dtype=torch.int64),
        "video": torch.tensor([it["video"] for it in good], dtype=torch.int64),
        "view": torch.tensor([it["view"] for it in good], dtype=torch.int64),
        "view_arrays": ({k: np.concatenate([it["view_arrays"][k] for it in good])
                         for k in good[0]["view_arrays"]} if good else None),
        "failures": [(it["path"], it["error"]) for it in bad],
        "failed_at": [(it["video"], it["view"]) for it in bad],
    }
    for name in names:
        batch[name] = _stack([it[name] for it in good]) if good else None
    if items and "mix" in items[0]:
        mixes = [it["mix"] for it in good]
        batch.update(
            mix_arrays=({k: np.concatenate([it["mix_arrays"][k] for it in good])
                         for k in good[0]["mix_arrays"]} if good else None),
            mix_op=torch.tensor([0 if m is None else OPS.index(m.op) for m in mixes],
                                dtype=torch.int64),
            mix_lambda=torch.tensor([1.0 if m is None else m.lam for m in mixes],
                                    dtype=torch.float32),
            partner_label=torch.tensor([it["partner_label"] for it in good], dtype=torch.int64),
            failed_partner=[it["partner"] for it in bad])
    return batch


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
