"""The build loop: run the teacher once over every view of every video and store its raw logits.

Why this shape:
- Work is whole shards, taken by create-if-absent claims (``claims.py``) just before they are
  computed: ranks, concurrent `--resume` processes and machines with no shared disk split the
  pending shards without talking to each other, no two writers touch one shard file, a dead
  claimant's shard is retaken once its claim expires, and a killed build resumes exactly where
  shards were left unfinished (nothing stored is computed again). Every process returns only
  when the store is complete (it waits for shards that live claimants are still computing).
- A video is decoded once for all of its views. Rows are view-major on disk (row = view x
  videos + video), so one video's views lie in as many shards as it has views: the build
  claims groups of shards that hold the same videos' rows in every view (`shard_group`) and
  hands the decoding workers one video's rows of the group at a time (`_ClaimedGroups`,
  `_VideoStream`): the worker decodes the frames all those views need in one pass and cuts
  every view from them. A 120-view build decoded each video 120 times before (still there as
  `decode_per_view`, which stores the same values).
- Decoding runs in worker processes ahead of the teacher, and finished shards are written by a
  background thread, so decode, compute and writes overlap instead of taking turns. Rows are
  re-cut into teacher batches of exactly `batch_size` (`_Batches`; the last one filled up), so
  a row's logits never depend on which rows shared its batch or how many there were.
- Views are drawn by `ViewSampler.sample(video, view, info)`, deterministic in (seed, video,
  view), and stored with the logits; the student replays the stored records, never re-draws.
- The teacher's random init (with `random_weights`) is seeded, so a resumed build of a random
  teacher is the same function as the uninterrupted one.
- Rows are decoded by the one `ClipDataset` (rows of `SampledViews`, one float cut at the
  teacher's size). Mixing (`mixup` / `cutmix` / `mix_prob`) is the same dataset with a
  `DrawnMixes` source: drawn per row from (seed, video, view) by `draw_mix`, never from the
  batch; the item decodes the row's clip and its partner's and mixes them, the code a
  student's loader replays stored mixes with.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from dvfl_cache.cache.build_config import BuildConfig
from dvfl_cache.cache.claims import ShardClaims
from dvfl_cache.cache.format import (UNVERSIONED_DECODER, CacheMeta, DatasetInfo, SamplerInfo,
                                     TeacherInfo, fp16_kl_error)
from dvfl_cache.cache.store import CacheReader, CacheWriter, shard_rows
from dvfl_cache.data.dataset import ClipDataset, Cut, DrawnMixes, RowViews, collate_clips
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.mix import MixConfig
from dvfl_cache.data.transforms import to_float
from dvfl_cache.data.views import ViewSampler
from dvfl_cache.errors import DvflError
from dvfl_cache.failbudget import check_failed
from dvfl_cache.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    path: str
    rows_written: int
    shards_written: int
    shards_total: int
    failed: dict[int, str]  # video -> reason, over the whole store once complete
    complete: bool
    fp16_kl: dict[str, float] | None
    failed_rows: dict[int, dict] = field(default_factory=dict)  # mixed rows, partner failed
    storage_error: dict[str, Any] | None = None  # codec error (dtype q8), see CacheReader
    teacher_check: dict[str, Any] | None = None  # build --check-teacher's result


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    from dvfl_cache.models.load import sha256_file as sha

    return sha(path, chunk=chunk)


def load_teacher(teacher: str, *, weights: str | None, random_weights: bool,
                 num_classes: int, num_frames: int, opts: Mapping[str, Any] | None = None,
                 seed: int = 0, size: int | None = None,
                 teacher_input: Mapping[str, Any] | None = None,
                 classes: tuple[str, ...] | None = None,
                 teacher_classes: Mapping[str, Any] | None = None,
                 class_map: list[list[int]] | None = None
                 ) -> tuple[torch.nn.Module, TeacherInfo]:
    """The teacher network in eval mode and its provenance record.

    `teacher` is a registry name, a path to a dvfl checkpoint that names its own architecture,
    ``hf:PATH`` or ``py:MODULE:FUNCTION`` (``dvfl_cache.models.load``). For the last two,
    ``size`` is the clip size, ``teacher_input`` states the input layout/normalisation,
    ``classes`` are the dataset's class names and ``teacher_classes`` maps them onto the
    teacher's labels (``class_map``: a stored mapping, replayed by verify --recompute).
    """
    from dvfl_cache.models.load import classes_for_dataset, load_model, spec_kind

    from dvfl_cache.models.registry import MODEL_NAMES, is_foreign

    opts = dict(opts or {})
    if not (is_foreign(teacher) or teacher in MODEL_NAMES or os.path.isfile(teacher)):
        raise DvflError(f"unknown teacher {teacher!r}: not a file, not a registered model "
                        f"({', '.join(MODEL_NAMES)}), not hf:PATH or py:MODULE:FUNCTION")
    kind = spec_kind(teacher)
    if kind == "hf" and random_weights:
        raise DvflError(f"--random-weights does not apply to {teacher}: an hf: teacher's weights "
                        "are its folder's")
    if kind in ("hf", "py"):
        return _load_foreign_teacher(teacher, kind, weights=weights, opts=opts, seed=seed,
                                     num_classes=num_classes, num_frames=num_frames, size=size,
                                     teacher_input=teacher_input, classes=classes,
                                     teacher_classes=teacher_classes, class_map=class_map,
                                     load_model=load_model, match=classes_for_dataset)
    if kind == "checkpoint":
        if weights:
            raise DvflError(f"--teacher {teacher} is a checkpoint with its own weights; "
                            "drop --weights")
        loaded = load_model(teacher, options=opts)
        log.info("teacher %s", loaded.report)
    else:
        if weights is None and not random_weights:
            raise DvflError("no --weights given for the teacher; pass the checkpoint to distil "
                            "from, or --random-weights if a random teacher is really intended "
                            "(tests, benchmarks)")
        if weights is not None and random_weights:
            raise DvflError("pass either --weights or --random-weights, not both")
        torch.manual_seed(seed)
        loaded = load_model(teacher, weights, options={"num_classes": num_classes,
                                                       "num_frames": num_frames, **opts})
        if weights is not None:
            log.info("teacher %s", loaded.report)
    model = loaded.model
    _check_geometry(teacher, model, num_classes, num_frames)
    model.eval()
    return model, TeacherInfo(name=loaded.name, config=loaded.config,
                              weights_sha256=loaded.weights_sha256)


def _check_geometry(teacher: str, model: torch.nn.Module, num_classes: int,
                    num_frames: int) -> None:
    """The teacher must classify the dataset's classes from clips of --frames frames."""
    if model.num_classes != num_classes:
        raise DvflError(f"teacher {teacher} has {model.num_classes} classes but the dataset has "
                        f"{num_classes}")
    if model.num_frames != num_frames:
        raise DvflError(f"teacher {teacher} takes {model.num_frames} frames but --frames is "
                        f"{num_frames}")


def _load_foreign_teacher(teacher, kind, *, weights, opts, seed, num_classes, num_frames, size,
                          teacher_input, classes, teacher_classes, class_map, load_model, match
                          ) -> tuple[torch.nn.Module, TeacherInfo]:
    """An hf:/py: teacher: its label set matched to the dataset's (names, generic LABEL_i in
    the dataset's order, or a --teacher-classes mapping), its clip geometry checked."""
    if kind == "hf" and opts:
        raise DvflError(f"--teacher {teacher}: --teacher-opt applies to registry and py: "
                        "teachers; an hf: teacher is its folder")
    torch.manual_seed(seed)  # a py: factory's random init is then the same on every rerun
    loaded = load_model(teacher, weights, options=opts, num_classes=num_classes,
                        num_frames=num_frames, size=size, clip_input=teacher_input,
                        class_map=class_map)
    model, config = loaded.model, dict(loaded.config)
    labels = loaded.extra.get("labels")
    if class_map is not None:
        how = "mapped"
    elif labels is not None and classes is not None:
        how, found = match(labels, classes, spec=teacher, mapping=teacher_classes)
        if found is not None:
            loaded = load_model(teacher, weights, options=opts, num_classes=num_classes,
                                num_frames=num_frames, size=size, clip_input=teacher_input,
                                class_map=found)
            model, config = loaded.model, dict(loaded.config)
    else:
        if teacher_classes is not None:
            raise DvflError(f"--teacher-classes: {teacher} has no label names to map onto")
        how = "generic"
    if labels is not None:
        config["labels"] = list(labels)
    config["label_match"] = how
    if teacher_classes is not None:
        config["teacher_classes"] = dict(teacher_classes)
    _check_geometry(teacher, model, num_classes, num_frames)
    if size is not None and model.img_size != size:
        raise DvflError(f"teacher {teacher} takes {model.img_size}px clips but --size is {size}")
    if loaded.report:
        log.info("teacher %s", loaded.report)
    model.eval()
    with torch.inference_mode():  # a wrong layout or size fails here, before a store exists
        model(torch.zeros(1, model.num_frames, 3, model.img_size, model.img_size))
    if how == "generic" and labels is not None:
        log.info("teacher %s: generic labels LABEL_0..%d taken in the dataset's class order",
                 teacher, num_classes - 1)
    model.eval()
    return model, TeacherInfo(name=loaded.name, config=config,
                              weights_sha256=loaded.weights_sha256)


def make_sampler(cfg: BuildConfig) -> ViewSampler:
    return cfg.view_sampler()


KL_SAMPLE_ROWS = 256  # rows of a shard whose float16 rounding error the shard records


class _ShardAssembler:
    """Fills one shard's arrays row by row and hands it to the writer when every row is in.

    Rows may come in any order (the build decodes video by video, each video's rows spread
    over many shards); what a shard records does not depend on it: its float16 error is
    measured on its first `KL_SAMPLE_ROWS` valid rows by row number, and its failure records
    are listed in the order of their first rows, each with the reason of its first row.
    """

    def __init__(self, writer: CacheWriter, labels: np.ndarray, features: bool,
                 submit: Callable[[int, dict, list, dict | None], None]):
        self.writer, self.labels, self.features, self.submit = writer, labels, features, submit
        self.open: dict[int, dict] = {}

    def _shard(self, s: int) -> dict:
        if s not in self.open:
            rows = self.writer.shard_rows(s)
            self.open[s] = {"arrays": self.writer.empty_shard(s, labels=self.labels),
                            "start": rows.start, "left": len(rows), "failures": {},
                            "logits32": {}}
        return self.open[s]

    def add(self, row: int, *, logits: np.ndarray | None, feats: np.ndarray | None,
            view_arrays: dict | None,
            failure: tuple[int, str, str, int | None] | None) -> None:
        s = row // self.writer.meta.views_per_shard
        sh = self._shard(s)
        i = row - sh["start"]
        a = sh["arrays"]
        if failure is None:
            a["logits"][i] = logits
            if self.features:
                a["features"][i] = feats
            for k, v in view_arrays.items():
                a[k][i] = v
            a["valid"][i] = 1
            sample = sh["logits32"]
            sample[i] = logits
            if len(sample) > KL_SAMPLE_ROWS:
                del sample[max(sample)]
        else:
            video, path, reason, partner = failure
            if partner is None:
                key, record = video, {"video": video, "path": path, "reason": reason}
            else:  # this mixed row only: its partner failed, its own video may be fine
                key, record = ("row", row), {"video": video, "row": row, "partner": partner,
                                             "path": path, "reason": reason}
            if key not in sh["failures"] or row < sh["failures"][key][0]:
                sh["failures"][key] = (row, record)
        sh["left"] -= 1
        if sh["left"] == 0:
            del self.open[s]
            kl = None
            sample = [sh["logits32"][k] for k in sorted(sh["logits32"])]
            # A coded store records its codec's own error (write_shard measures it).
            if (sample and len(sample[0]) > 1 and self.writer.meta.codec("logits") is None):
                kl = {str(k): v for k, v in
                      fp16_kl_error(np.stack(sample).astype(np.float32)).items()}
            failures = [rec for _, rec in sorted(sh["failures"].values(), key=lambda f: f[0])]
            self.submit(s, a, failures, kl)


def _distributed() -> tuple[int, int, Callable[[], Any] | None]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), dist.barrier


def prepare(cfg: BuildConfig, index: DatasetIndex) -> tuple[torch.nn.Module, CacheMeta,
                                                             ViewSampler]:
    """Teacher, store metadata and sampler for `cfg`; nothing is written."""
    if cfg.views_per_video < 1:
        raise DvflError("--views-per-video must be >= 1")
    mix = make_mix(cfg, index)
    sampler = make_sampler(cfg)
    teacher, tinfo = load_teacher(cfg.teacher, weights=cfg.weights,
                                  random_weights=cfg.random_weights,
                                  num_classes=index.num_classes, num_frames=cfg.frames,
                                  opts=cfg.teacher_opts, seed=cfg.seed,
                                  **foreign_teacher(cfg, index))
    meta = CacheMeta(
        teacher=tinfo,
        dataset=DatasetInfo(kind=index.kind, split=index.split, subset=index.subset,
                            index_digest=index.digest, classes=index.classes),
        sampler=SamplerInfo(name=sampler.temporal, params={**sampler.to_dict(), "size": cfg.size},
                            seed=cfg.seed),
        num_videos=len(index), views_per_video=cfg.views_per_video, num_frames=cfg.frames,
        dtype=cfg.dtype, feature_dim=teacher.num_features if cfg.features else None,
        views_per_shard=cfg.views_per_shard, mix=mix,
        teacher_precision=teacher_precision(resolve_device(cfg.device)),
        decoder_version=decoder_version())
    return teacher, meta, sampler


def foreign_teacher(cfg: BuildConfig, index: DatasetIndex) -> dict[str, Any]:
    """load_teacher's extra arguments for an hf:/py: teacher (none for the others)."""
    from dvfl_cache.models.registry import is_foreign

    if not is_foreign(cfg.teacher):
        if cfg.teacher_input or cfg.teacher_classes:
            raise DvflError("--teacher-input and --teacher-classes apply to hf: and py: teachers")
        return {}
    mapping = None
    if cfg.teacher_classes:
        from dvfl_cache.models.load import read_class_file

        mapping = read_class_file(cfg.teacher_classes)
    return {"size": cfg.size, "teacher_input": dict(cfg.teacher_input) or None,
            "classes": tuple(index.classes), "teacher_classes": mapping}


def check_teacher(teacher: torch.nn.Module, index: DatasetIndex, *, videos: int,
                  cfg: BuildConfig, device: torch.device) -> dict[str, Any]:
    """The teacher's top-1 on the centre test view of ``videos`` videos spread over the index,
    before hours of build: a wrong normalisation, layout or label order shows as chance level.

    Refused (``DvflError``) unless ``cfg.force`` when the count right is within two standard
    deviations of chance (binomial, p = 1 / classes): no evidence the teacher knows the classes.
    """
    n = min(videos, len(index))
    picked = sorted({int(v) for v in np.linspace(0, len(index) - 1, n).round()})
    sampler = ViewSampler(temporal=cfg.sampler.get("temporal", "segment"),
                          stride=cfg.sampler.get("stride", 4), num_frames=cfg.frames,
                          mode="test", seed=cfg.seed)
    dataset = ClipDataset(index, RowViews(sampler, len(index), len(index)),
                          (Cut("clip", cfg.size, as_uint8=True),))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=picked, shuffle=False,
                        num_workers=0, collate_fn=collate_clips)
    right = scored = 0
    with torch.inference_mode():
        for batch in loader:
            if batch["clip"] is None:
                continue
            logits = teacher(to_float(batch["clip"].to(device))).float().cpu()
            labels = torch.tensor([index.videos[int(v)].label for v in batch["video"]])
            right += int((logits.argmax(1) == labels).sum())
            scored += len(labels)
    if scored == 0:
        raise DvflError(f"--check-teacher: none of the {len(picked)} videos decoded")
    chance = 1.0 / index.num_classes
    bar = scored * chance + 2 * (scored * chance * (1 - chance)) ** 0.5
    result = {"videos": scored, "correct": right, "top1": right / scored, "chance": chance,
              "above_chance": right > bar}
    log.info("teacher check: top-1 %.2f%% (%d / %d test views; chance %.2f%%)",
             100 * result["top1"], right, scored, 100 * chance)
    if not result["above_chance"] and not cfg.force:
        raise DvflError(f"--check-teacher: the teacher gets {right} of {scored} test views right "
                        f"(top-1 {100 * result['top1']:.1f}%, chance {100 * chance:.1f}%): not "
                        f"above chance (needs more than {bar:.1f}); check its weights, input "
                        "normalisation/layout (--teacher-input) and labels (--teacher-classes), "
                        "or pass --force to build anyway")
    return result


def make_mix(cfg: BuildConfig, index: DatasetIndex) -> MixConfig | None:
    """The build's mixing settings (None: no mixing), refused in one line before any work."""
    if not 0.0 <= cfg.mix_prob <= 1.0:
        raise DvflError(f"--mix-prob must be in [0, 1], got {cfg.mix_prob}")
    if cfg.mixup < 0 or cfg.cutmix < 0:
        raise DvflError(f"--mixup and --cutmix must be >= 0, got {cfg.mixup} and {cfg.cutmix}")
    mix = MixConfig(mixup=cfg.mixup, cutmix=cfg.cutmix, prob=cfg.mix_prob, seed=cfg.seed)
    if not mix.enabled:
        return None
    if len(index) < 2:
        raise DvflError(f"mixing (--mixup/--cutmix) needs at least 2 videos to pair; the "
                        f"{index.kind} {index.subset} index has {len(index)}")
    return mix


def teacher_precision(device: torch.device) -> dict[str, Any]:
    """How the teacher runs in `build_cache` (the recompute tolerance of `verify` reads it)."""
    return {"device": device.type, "autocast": "bfloat16" if device.type == "cuda" else None}


def decoder_version() -> int | str:
    """The frame decoder's version (decode.DECODER_VERSION once it exists)."""
    from dvfl_cache.data import decode

    return getattr(decode, "DECODER_VERSION", UNVERSIONED_DECODER)


# The most rows one group of shards may hold (`shard_group`). Every shard of a group stays open
# (its arrays in memory, about 300 bytes a row at 101 classes in float16, more with --features)
# until its last video is decoded, and is written only then, so a killed build redoes the groups
# it was computing: the cap bounds that loss (65,536 rows, minutes of a GPU's work) at the price
# of decoding a video once per group of its views instead of once (16 shards of the default
# 4096 rows: a 120-view build decodes each video about 8 times instead of 120).
GROUP_ROWS = 1 << 16


def shard_group(meta: CacheMeta, first: int, candidates: Collection[int], *,
                max_rows: int = GROUP_ROWS) -> list[int]:
    """Shard `first` and the `candidates` that hold rows of its videos in any view, in shard
    order (`first` first), as many as fit in `max_rows` rows (`first` always).

    Rows are view-major (row = view x videos + video), so one video's views lie in as many
    shards as there are views; computed together, such a group decodes each of its videos
    once for all the group's views (`_ClaimedGroups`). When shards do not line up with video
    ranges, a group's shards also hold rows of neighbouring videos, which a later group
    decodes again for its own views: about two decodes per video instead of one per view.
    """
    n, per, views = meta.num_videos, meta.views_per_shard, meta.views_per_video
    rows = shard_rows(meta, first)
    spans: list[tuple[int, int]] = []  # the videos of `first`, as merged intervals
    for view in range(rows.start // n, (rows.stop - 1) // n + 1):
        spans.append((max(rows.start, view * n) - view * n,
                      min(rows.stop, (view + 1) * n) - view * n))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    holding: set[int] = set()
    for view in range(views):
        for a, b in merged:
            holding.update(range((view * n + a) // per, (view * n + b - 1) // per + 1))
    group, total = [first], len(rows)
    for s in sorted(holding.intersection(candidates) - {first}):
        total += len(shard_rows(meta, s))
        if total > max_rows:
            break
        group.append(s)
    return group


class _ClaimedRows:
    """The per-view build's DataLoader sampler (``decode_per_view``): rows of the pending
    shards this process manages to claim, in row order, each row decoding its own video.

    It runs in the main process, a few batches ahead of the teacher, so shards are claimed just
    before they are computed and concurrent processes interleave instead of grabbing all.
    """

    def __init__(self, writer: CacheWriter, claims: ShardClaims, shards: list[int]):
        self.writer, self.claims = writer, claims
        self.left = list(shards)
        self._first: int | None = None

    def _next_claim(self) -> int | None:
        while self.left:
            s = self.left.pop(0)
            if self.claims.claim_pending(s, self.writer.is_done):
                return s
        return None

    def claim_first(self) -> bool:
        """Claim one shard now (so a pass with nothing to do starts no DataLoader)."""
        self._first = self._next_claim()
        return self._first is not None

    def __iter__(self) -> Iterator[int]:
        s = self._first
        while s is not None:
            yield from self.writer.shard_rows(s)
            s = self._next_claim()


class _ClaimedGroups:
    """The decode-once build's work: groups of pending shards (`shard_group`), each claimed
    whole (shard by shard, as `_ClaimedRows` claims) when the decoders need more work, and
    handed out as (video, that video's rows in the group), video by video.

    A shard of the group is written once its last row is computed, so the shards of a group
    are written as its last videos are done; a killed build loses at most the groups in work.
    """

    def __init__(self, target, claims: ShardClaims, shards: list[int], meta: CacheMeta, *,
                 max_rows: int = GROUP_ROWS):
        self.target, self.claims, self.meta, self.max_rows = target, claims, meta, max_rows
        self.left = list(shards)
        self._first: list[int] | None = None

    def _next_group(self) -> list[int] | None:
        while self.left:
            first = self.left.pop(0)
            if not self.claims.claim_pending(first, self.target.is_done):
                continue
            group = shard_group(self.meta, first, set(self.left), max_rows=self.max_rows)
            taken = set(group)
            self.left = [s for s in self.left if s not in taken]
            return [first] + [s for s in group[1:] if self.claims.claim_pending(s, self.target.is_done)]
        return None

    def claim_first(self) -> bool:
        """Claim one group now (so a pass with nothing to do starts no DataLoader)."""
        self._first = self._next_group()
        return self._first is not None

    def units(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        group = self._first
        while group is not None:
            log.debug("group of %d shards: %s", len(group), group[:8])
            yield from self._videos(group)
            group = self._next_group()

    def _videos(self, group: list[int]) -> Iterator[tuple[int, tuple[int, ...]]]:
        n = self.meta.num_videos
        rows = np.concatenate([np.arange(r.start, r.stop, dtype=np.int64)
                               for r in map(self.target.shard_rows, group)])
        rows = rows[np.lexsort((rows // n, rows % n))]  # by video, then view
        cuts = np.flatnonzero(np.diff(rows % n)) + 1
        for part in np.split(rows, cuts):
            yield int(part[0] % n), tuple(int(r) for r in part)


class _VideoStream(IterableDataset):
    """Decoding worker side of the decode-once build: takes (video, rows) units from `queue`
    (None: stop) and yields each unit's items, collated, `chunk` rows at a time, the video
    decoded once for all of them (`ClipDataset.video_items`). One video per worker at a
    time: a worker holds that video's decoded frames and one chunk of cut clips."""

    def __init__(self, dataset: ClipDataset, queue, chunk: int):
        self.dataset, self.queue, self.chunk = dataset, queue, chunk

    def __iter__(self) -> Iterator[dict]:
        while (unit := self.queue.get()) is not None:
            items: list[dict] = []
            for item in self.dataset.video_items(unit[1]):
                items.append(item)
                if len(items) == self.chunk:
                    yield collate_clips(items)
                    items = []
            if items:
                yield collate_clips(items)


def _as_is(batch: Any) -> Any:
    return batch


class _Feeder:
    """Main-process thread moving `units` into the workers' queue (bounded, so groups are
    claimed shortly before they are decoded), then one stop mark per worker. An error while
    claiming is kept for the build loop to raise."""

    def __init__(self, units: Iterator, queue, ends: int):
        self.units, self.queue, self.ends = units, queue, ends
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dvfl-cache-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for unit in self.units:
                if not self._put(unit):
                    return
        except BaseException as e:  # raised by the build loop once the workers stop
            self.error = e
        finally:
            for _ in range(self.ends):
                if not self._put(None):
                    break

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop feeding (the build loop failed); the workers get their stop marks if there is
        room, else the DataLoader ends them."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for _ in range(self.ends):
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break


class _Batches:
    """Rows from the decoders (any number at a time), cut into teacher batches of exactly
    `size` rows: batches never depend on where a video's rows or a failed row fell."""

    def __init__(self, size: int):
        self.size, self.parts, self.rows = size, [], 0

    def add(self, clip: torch.Tensor, rows: np.ndarray, arrays: dict) -> None:
        if len(rows):
            self.parts.append((clip, rows, arrays))
            self.rows += len(rows)

    def take(self, *, final: bool = False) -> Iterator[tuple[torch.Tensor, np.ndarray, dict]]:
        """Every full batch; with `final`, the rest too (a last, shorter one)."""
        while self.rows >= self.size or (final and self.rows):
            k = min(self.size, self.rows)
            clips, rows, arrays = [], [], []
            need = k
            while need:
                clip, r, va = self.parts[0]
                m = min(need, len(r))
                clips.append(clip[:m])
                rows.append(r[:m])
                arrays.append({name: a[:m] for name, a in va.items()})
                if m == len(r):
                    self.parts.pop(0)
                else:
                    self.parts[0] = (clip[m:], r[m:], {name: a[m:] for name, a in va.items()})
                need -= m
            self.rows -= k
            yield (clips[0] if len(clips) == 1 else torch.cat(clips), np.concatenate(rows),
                   {name: np.concatenate([a[name] for a in arrays]) for name in arrays[0]})


def write_pending(cfg: BuildConfig, index, sampler, teacher, device, meta, target, claims,
                  labels, progress, *, rank: int, world: int) -> list[int]:
    """Claim and write every pending shard of ``target`` (a build's writer, or an extend's
    grown store) until none is left; the shards this process wrote."""
    written: list[int] = []
    while pending := target.pending_shards():
        work = (_ClaimedRows(target, claims, pending) if cfg.decode_per_view
                else _ClaimedGroups(target, claims, pending, meta))
        if not work.claim_first():
            # Everything left is held by live claimants: wait for them to finish, or for a
            # claim to expire (its shard is then retaken on the next pass).
            time.sleep(min(2.0, cfg.claim_ttl_s / 4))
            continue
        log.info("rank %d/%d: %d shards pending on %s, batches of %d, %d decoding workers, "
                 "claims live %g s; each video decoded %s", rank, world, len(pending), device,
                 cfg.batch_size, cfg.workers, claims.ttl_s,
                 "once per view" if cfg.decode_per_view else "once for all its views")
        written += _run_shards(cfg, index, sampler, teacher, device, meta, target, claims,
                               labels, work, progress)
    return written


def _run_shards(cfg: BuildConfig, index: DatasetIndex, sampler: ViewSampler, teacher, device,
                meta: CacheMeta, writer: CacheWriter, claims: ShardClaims, labels: np.ndarray,
                work: _ClaimedRows | _ClaimedGroups,
                progress: Callable[[int], None] | None) -> list[int]:
    """Compute and write every shard `work` claims; returns the shards this process wrote."""
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dvfl-cache-writer")
    pending: list[Future] = []
    written: list[int] = []

    def write(s: int, arrays: dict, failures: list, kl: dict | None) -> None:
        if not claims.holds(s):
            log.warning("shard %d was taken over by another process (our claim expired); "
                        "leaving it to that process", s)
            return
        writer.write_shard(s, arrays, failures, fp16_kl=kl)
        claims.release(s)
        written.append(s)

    def submit(s: int, arrays: dict, failures: list, kl: dict | None) -> None:
        with lock:
            pending.append(pool.submit(write, s, arrays, failures, kl))

    assembler = _ShardAssembler(writer, labels, cfg.features, submit)
    # Item r is row r: the per-view loader's sampler hands out the rows of claimed shards, the
    # decode-once stream the rows of one video at a time.
    mixes = None if meta.mix is None else DrawnMixes(meta.mix, sampler, len(index))
    dataset = ClipDataset(index, RowViews(sampler, len(index), meta.num_rows),
                          (Cut("clip", cfg.size, as_uint8=True),), mixes=mixes)
    feeder = None
    common = dict(num_workers=cfg.workers, pin_memory=device.type == "cuda",
                  persistent_workers=False)
    if isinstance(work, _ClaimedRows):
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=work, shuffle=False,
                            collate_fn=collate_clips, prefetch_factor=4 if cfg.workers else None,
                            **common)
    else:
        ctx = multiprocessing.get_context()
        units = (ctx.Queue(maxsize=2 * cfg.workers) if cfg.workers
                 else queue.Queue(maxsize=2))
        # chunks of one video's rows: prefetch 2 per worker holds about as many clips as the
        # per-view loader's 4 batches
        loader = DataLoader(_VideoStream(dataset, units, cfg.batch_size), batch_size=None,
                            collate_fn=_as_is, prefetch_factor=2 if cfg.workers else None,
                            multiprocessing_context=ctx if cfg.workers else None, **common)
        feeder = _Feeder(work.units(), units, max(cfg.workers, 1))
    use_bf16 = meta.teacher_precision["autocast"] == "bfloat16"
    batches = _Batches(cfg.batch_size)

    def teach(clip: torch.Tensor, rows: np.ndarray, arrays: dict) -> None:
        k = len(rows)
        if k < cfg.batch_size:
            # A short batch (the last of a pass) is filled up: each row's logits are then
            # those of a full batch, whatever cut the rows into batches (a teacher's numbers
            # can depend on the batch size in the last bits).
            clip = torch.cat([clip, clip.new_zeros((cfg.batch_size - k, *clip.shape[1:]))])
        # uint8 from the workers (4x less to ship and pin), float where the teacher runs:
        # `to_float` gives the same values on any device
        clip = to_float(clip)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            feats = teacher.forward_features(clip)
            logits = teacher.forward_head(feats)
        logits = logits[:k].float().cpu().numpy()
        feats = feats[:k].float().cpu().numpy() if cfg.features else None
        log.debug("teacher on %d views", k)
        for i in range(k):
            assembler.add(int(rows[i]), logits=logits[i],
                          feats=None if feats is None else feats[i],
                          view_arrays={name: a[i] for name, a in arrays.items()
                                       if name not in ("video", "view")},
                          failure=None)
        if progress is not None:
            progress(k)

    try:
        batch_iter = iter(loader)
        if feeder is not None:
            feeder.start()
        with torch.inference_mode():
            for batch in batch_iter:
                partners = batch.get("failed_partner") or [None] * len(batch["failures"])
                for (video, view), (path, reason), partner in zip(
                        batch["failed_at"], batch["failures"], partners):
                    assembler.add(view * meta.num_videos + video, logits=None, feats=None,
                                  view_arrays=None, failure=(video, path, reason, partner))
                if batch["failures"] and progress is not None:
                    progress(len(batch["failures"]))
                if batch["clip"] is not None:
                    rows = (batch["view"].numpy() * meta.num_videos + batch["video"].numpy())
                    batches.add(batch["clip"].to(device, non_blocking=True), rows,
                                {**batch["view_arrays"], **(batch.get("mix_arrays") or {})})
                for full in batches.take():
                    teach(*full)
                # Surface a failed write now rather than after hours of compute.
                with lock:
                    for f in [f for f in pending if f.done()]:
                        f.result()
                        pending.remove(f)
            if feeder is not None:
                feeder.join()
            for rest in batches.take(final=True):
                teach(*rest)
        if assembler.open:
            raise DvflError(f"internal error: shards {sorted(assembler.open)} incomplete")
    finally:
        if feeder is not None:
            feeder.stop()
            if cfg.workers:
                units.cancel_join_thread()
        pool.shutdown(wait=True)
    for f in pending:
        f.result()
    return written


def build_cache(cfg: BuildConfig, index: DatasetIndex, *,
                progress: Callable[[int], None] | None = None,
                on_start: Callable[[int], None] | None = None) -> BuildResult:
    """Build (or resume) the cache at `cfg.out`; every process (torchrun ranks, concurrent
    resumes, other machines) claims pending shards until the store is complete.

    `on_start(n)` is told how many views are pending; `progress(k)` after each batch.
    """
    if cfg.views_from is not None:
        from dvfl_cache.cache.sameviews import views_from_config

        cfg = views_from_config(cfg, cfg.views_from, dict(cfg.storage_options) or None,
                                index=index)
    rank, world, barrier = _distributed()
    device = resolve_device(cfg.device)
    teacher, meta, sampler = prepare(cfg, index)
    teacher.to(device)
    checked = None
    if cfg.check_teacher or cfg.check_index:
        scored = index
        if cfg.check_index:
            from dvfl_cache.data.index import load_index

            scored = load_index(cfg.check_index)
            if tuple(scored.classes) != tuple(index.classes):
                raise DvflError(f"--check-index {cfg.check_index}: its classes are not the "
                                f"build's ({len(scored.classes)} vs {len(index.classes)}, or "
                                "another order)")
        checked = check_teacher(teacher, scored, videos=cfg.check_teacher or len(scored),
                                cfg=cfg, device=device)
        if cfg.check_index:
            checked["index"] = str(cfg.check_index)
    so = dict(cfg.storage_options) or None
    meta = _existing_decoder(cfg, meta, so)
    writer = CacheWriter.open_for_rank(cfg.out, meta, rank=rank, world_size=world,
                                       overwrite=cfg.overwrite,
                                       resume=cfg.resume or cfg.repair,
                                       barrier=barrier, storage_options=so)
    if rank == 0 and cfg.command:
        writer.record_build(list(cfg.command), world_size=world,
                            **({"teacher_check": checked} if checked else {}))
    if on_start is not None:
        on_start(sum(len(writer.shard_rows(s)) for s in writer.pending_shards()))
    labels = np.array([v.label for v in index.videos], np.int32)
    written: list[int] = []
    with writer.claims(ttl_s=cfg.claim_ttl_s) as claims:
        if cfg.repair and rank == 0:
            mark_for_repair(cfg, index, writer, claims, workers=cfg.workers)
        if barrier is not None:
            barrier()
        written += write_pending(cfg, index, sampler, teacher, device, meta, writer, claims,
                                 labels, progress, rank=rank, world=world)
    rows_written = sum(len(writer.shard_rows(s)) for s in written)
    if barrier is not None:
        barrier()
    if cfg.repair and rank == 0 and writer.meta.decoder_version != decoder_version():
        writer.record_decoder_version(decoder_version())
    reader = CacheReader(cfg.out, storage_options=so)
    if cfg.views_from is not None and reader.complete:
        from dvfl_cache.cache.sameviews import check_same_views

        check_same_views(reader, CacheReader(cfg.views_from, storage_options=so))
    result = BuildResult(teacher_check=checked, path=str(cfg.out), rows_written=rows_written,
                         shards_written=len(written),
                         shards_total=meta.num_shards, failed=reader.failed_videos(),
                         complete=reader.complete, fp16_kl=reader.fp16_kl(),
                         failed_rows=reader.failed_rows(),
                         storage_error=reader.storage_error())
    if result.failed:
        lines = "\n".join(f"  video {v} ({index.videos[v].path}): {r}"
                          for v, r in sorted(result.failed.items()))
        log.warning("%d video(s) failed to decode; their views are marked missing:\n%s",
                    len(result.failed), lines)
    if result.failed_rows:
        log.warning("%d mixed row(s) marked missing because their partner failed to decode",
                    len(result.failed_rows))
    if result.complete:
        check_failed([(index.videos[v].path, r) for v, r in sorted(result.failed.items())],
                     len(index), cfg.max_failed,
                     kept=f"the store {cfg.out} is kept (complete, those views marked missing); "
                          "fix the videos or --root, then rebuild")
    return result


def _existing_decoder(cfg: BuildConfig, meta: CacheMeta, so: dict | None) -> CacheMeta:
    """`meta` with the decoder version of the store being resumed, when it is older.

    Only `--repair` may resume such a store: it re-runs the rows whose frames changed and then
    records today's version; a plain resume would mix two frame numberings in one store.
    """
    if not (cfg.resume or cfg.repair) or cfg.overwrite:
        return meta
    try:
        stored = CacheReader(cfg.out, storage_options=so).meta
    except (DvflError, OSError):
        return meta  # no store yet (or not ours): create() says what is wrong
    if (stored.decoder_version == meta.decoder_version
            or stored.format_version != meta.format_version):  # CacheWriter names that one
        return meta
    if not cfg.repair:
        raise DvflError(f"{cfg.out}: built with decoder version {stored.decoder_version}, this "
                        f"dvfl decodes with version {meta.decoder_version}; finish it with "
                        "--repair (re-runs the rows of videos whose frames changed) instead of "
                        "--resume")
    return meta.replace(decoder_version=stored.decoder_version)


def mark_for_repair(cfg: BuildConfig, index: DatasetIndex, writer: CacheWriter,
                    claims: ShardClaims, *, workers: int = 1) -> list[int]:
    """Clear the done flag of every finished shard that does not read back (checksums, missing
    files) or holds rows of videos whose frame numbering changed since the store's decoder
    version; the build loop then runs the teacher on those shards only.

    Each flag is cleared under the shard's claim, so a concurrent builder is never disturbed
    (a shard it is writing is left to it).
    """
    from dvfl_cache.cache.health import broken_shards, shards_of_videos, stale_videos

    reader = CacheReader(cfg.out, storage_options=dict(cfg.storage_options) or None)
    broken = broken_shards(reader)
    for s, problem in sorted(broken.items()):
        log.warning("repair: shard %d: %s", s, problem)
    stale, message = stale_videos(reader, index, workers=workers)
    if message:
        log.warning("repair: %s", message)
    redo = sorted(set(broken) | set(shards_of_videos(reader, stale)))
    cleared = []
    for s in redo:
        # A done shard is computed by nobody (builders skip it), yet its last claim may still
        # look alive: a builder killed between the shard's write and its release, or one whose
        # release could not be written (it warns). So the claim is taken over.
        if not writer.is_done(s) or not (claims.try_claim(s) or claims.take_over(s)):
            continue
        writer.clear_done(s)  # still claimed by us: the build loop below takes it first
        cleared.append(s)
    log.warning("repair: %d shard(s) to run again: %s", len(cleared), cleared[:20])
    return cleared


def config_dict(cfg: BuildConfig) -> dict:
    d = asdict(cfg)
    del d["storage_options"]  # may hold credentials
    d["teacher_opts"] = dict(cfg.teacher_opts)
    d["sampler"] = dict(cfg.sampler)
    return d
