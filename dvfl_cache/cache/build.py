"""The build loop: run the teacher once over every view of every video and store its raw logits.

Why this shape:
- Work is whole shards, taken by create-if-absent claims (``claims.py``) just before they are
  computed: ranks, concurrent `--resume` processes and machines with no shared disk split the
  pending shards without talking to each other, no two writers touch one shard file, a dead
  claimant's shard is retaken once its claim expires, and a killed build resumes exactly where
  shards were left unfinished (nothing stored is computed again). Every process returns only
  when the store is complete (it waits for shards that live claimants are still computing).
- Rows stream through one DataLoader in row order: decoding runs in worker processes ahead of
  the teacher, and finished shards are written by a background thread, so decode, compute and
  writes overlap instead of taking turns.
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

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dvfl_cache.cache.build_config import BuildConfig
from dvfl_cache.cache.claims import ShardClaims
from dvfl_cache.cache.format import (UNVERSIONED_DECODER, CacheMeta, DatasetInfo, SamplerInfo,
                                     TeacherInfo, fp16_kl_error)
from dvfl_cache.cache.store import CacheReader, CacheWriter
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


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_teacher(teacher: str, *, weights: str | None, random_weights: bool,
                 num_classes: int, num_frames: int, opts: Mapping[str, Any] | None = None,
                 seed: int = 0) -> tuple[torch.nn.Module, TeacherInfo]:
    """The teacher network in eval mode and its provenance record.

    `teacher` is a registry name or a path to a dvfl checkpoint that names its own architecture.
    """
    from dvfl_cache.models import create_model, load_pretrained, model_from_checkpoint
    from dvfl_cache.models.registry import MODEL_NAMES

    opts = dict(opts or {})
    if os.path.isfile(teacher):
        if weights:
            raise DvflError(f"--teacher {teacher} is a checkpoint with its own weights; "
                            "drop --weights")
        model, report = model_from_checkpoint(teacher, **opts)
        log.info("teacher %s", report.summary())
        sha = sha256_file(teacher)
        name = model.arch or Path(teacher).name
    else:
        if teacher not in MODEL_NAMES:
            raise DvflError(f"unknown teacher {teacher!r}: not a file and not a registered model "
                            f"({', '.join(MODEL_NAMES)})")
        if weights is None and not random_weights:
            raise DvflError("no --weights given for the teacher; pass the checkpoint to distil "
                            "from, or --random-weights if a random teacher is really intended "
                            "(tests, benchmarks)")
        if weights is not None and random_weights:
            raise DvflError("pass either --weights or --random-weights, not both")
        torch.manual_seed(seed)
        model = create_model(teacher, **{"num_classes": num_classes, "num_frames": num_frames,
                                         **opts})
        sha = None
        if weights is not None:
            report = load_pretrained(model, weights)
            log.info("teacher %s", report.summary())
            sha = sha256_file(weights)
        name = teacher
    if model.num_classes != num_classes:
        raise DvflError(f"teacher {teacher} has {model.num_classes} classes but the dataset has "
                        f"{num_classes}")
    if model.num_frames != num_frames:
        raise DvflError(f"teacher {teacher} takes {model.num_frames} frames but --frames is "
                        f"{num_frames}")
    model.eval()
    return model, TeacherInfo(name=name, config=dict(model.config), weights_sha256=sha)


def make_sampler(cfg: BuildConfig) -> ViewSampler:
    return cfg.view_sampler()


class _ShardAssembler:
    """Fills one shard's arrays row by row and hands it to the writer when every row is in."""

    def __init__(self, writer: CacheWriter, labels: np.ndarray, features: bool,
                 submit: Callable[[int, dict, list, dict | None], None]):
        self.writer, self.labels, self.features, self.submit = writer, labels, features, submit
        self.open: dict[int, dict] = {}

    def _shard(self, s: int) -> dict:
        if s not in self.open:
            rows = self.writer.shard_rows(s)
            self.open[s] = {"arrays": self.writer.empty_shard(s, labels=self.labels),
                            "start": rows.start, "left": len(rows), "failures": {},
                            "logits32": []}
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
            sh["logits32"].append(logits)
        else:
            video, path, reason, partner = failure
            if partner is None:
                sh["failures"].setdefault(video, {"video": video, "path": path,
                                                  "reason": reason})
            else:  # this mixed row only: its partner failed, its own video may be fine
                sh["failures"][("row", row)] = {"video": video, "row": row, "partner": partner,
                                                "path": path, "reason": reason}
        sh["left"] -= 1
        if sh["left"] == 0:
            del self.open[s]
            kl = None
            # A coded store records its codec's own error (write_shard measures it).
            if (sh["logits32"] and len(sh["logits32"][0]) > 1
                    and self.writer.meta.codec("logits") is None):
                sample = np.stack(sh["logits32"][:256]).astype(np.float32)
                kl = {str(k): v for k, v in fp16_kl_error(sample).items()}
            self.submit(s, a, list(sh["failures"].values()), kl)


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
                                  opts=cfg.teacher_opts, seed=cfg.seed)
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


class _ClaimedRows:
    """The DataLoader's sampler: rows of the pending shards this process manages to claim.

    It runs in the main process, a few batches ahead of the teacher, so shards are claimed just
    before they are computed and concurrent processes interleave instead of grabbing all.
    """

    def __init__(self, writer: CacheWriter, claims: ShardClaims, shards: list[int]):
        self.writer, self.claims = writer, claims
        self.left = list(shards)
        self.claimed: list[int] = []
        self._first: int | None = None

    def _next_claim(self) -> int | None:
        while self.left:
            s = self.left.pop(0)
            if not self.claims.claim_pending(s, self.writer.is_done):
                continue
            self.claimed.append(s)
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


def write_pending(cfg: BuildConfig, index, sampler, teacher, device, meta, target, claims,
                  labels, progress, *, rank: int, world: int) -> list[int]:
    """Claim and write every pending shard of ``target`` (a build's writer, or an extend's
    grown store) until none is left; the shards this process wrote."""
    written: list[int] = []
    while pending := target.pending_shards():
        rows = _ClaimedRows(target, claims, pending)
        if not rows.claim_first():
            # Everything left is held by live claimants: wait for them to finish, or for a
            # claim to expire (its shard is then retaken on the next pass).
            time.sleep(min(2.0, cfg.claim_ttl_s / 4))
            continue
        log.info("rank %d/%d: %d shards pending on %s, batches of %d, %d decoding workers, "
                 "claims live %g s", rank, world, len(pending), device, cfg.batch_size,
                 cfg.workers, claims.ttl_s)
        written += _run_shards(cfg, index, sampler, teacher, device, meta, target, claims,
                               labels, rows, progress)
    return written


def _run_shards(cfg: BuildConfig, index: DatasetIndex, sampler: ViewSampler, teacher, device,
                meta: CacheMeta, writer: CacheWriter, claims: ShardClaims, labels: np.ndarray,
                rows: _ClaimedRows, progress: Callable[[int], None] | None) -> list[int]:
    """Compute and write every shard `rows` claims; returns the shards this process wrote."""
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
    # Item r is row r; the claiming sampler hands out the rows of the shards this process holds.
    mixes = None if meta.mix is None else DrawnMixes(meta.mix, sampler, len(index))
    dataset = ClipDataset(index, RowViews(sampler, len(index), meta.num_rows),
                          (Cut("clip", cfg.size, as_uint8=True),), mixes=mixes)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=rows,
                        shuffle=False, num_workers=cfg.workers, collate_fn=collate_clips,
                        pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    use_bf16 = meta.teacher_precision["autocast"] == "bfloat16"
    try:
        with torch.inference_mode():
            for batch in loader:
                partners = batch.get("failed_partner") or [None] * len(batch["failures"])
                for (video, view), (path, reason), partner in zip(
                        batch["failed_at"], batch["failures"], partners):
                    assembler.add(view * meta.num_videos + video, logits=None, feats=None,
                                  view_arrays=None, failure=(video, path, reason, partner))
                n = 0
                if batch["clip"] is not None:
                    # uint8 from the workers (4x less to ship and pin), float where the teacher
                    # runs: `to_float` gives the same values on any device
                    clip = to_float(batch["clip"].to(device, non_blocking=True))
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        feats = teacher.forward_features(clip)
                        logits = teacher.forward_head(feats)
                    logits = logits.float().cpu().numpy()
                    feats = feats.float().cpu().numpy() if cfg.features else None
                    va = {**batch["view_arrays"], **(batch.get("mix_arrays") or {})}
                    n = len(logits)
                    log.debug("teacher on %d views", n)
                    for i in range(n):
                        row = int(batch["view"][i]) * meta.num_videos + int(batch["video"][i])
                        assembler.add(row, logits=logits[i],
                                      feats=None if feats is None else feats[i],
                                      view_arrays={k: v[i] for k, v in va.items()
                                                   if k not in ("video", "view")},
                                      failure=None)
                # Surface a failed write now rather than after hours of compute.
                with lock:
                    for f in [f for f in pending if f.done()]:
                        f.result()
                        pending.remove(f)
                if progress is not None:
                    progress(n + len(batch["failures"]))
        if assembler.open:
            raise DvflError(f"internal error: shards {sorted(assembler.open)} incomplete")
    finally:
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

        cfg = views_from_config(cfg, cfg.views_from, dict(cfg.storage_options) or None)
    rank, world, barrier = _distributed()
    device = resolve_device(cfg.device)
    teacher, meta, sampler = prepare(cfg, index)
    teacher.to(device)
    so = dict(cfg.storage_options) or None
    meta = _existing_decoder(cfg, meta, so)
    writer = CacheWriter.open_for_rank(cfg.out, meta, rank=rank, world_size=world,
                                       overwrite=cfg.overwrite,
                                       resume=cfg.resume or cfg.repair,
                                       barrier=barrier, storage_options=so)
    if rank == 0 and cfg.command:
        writer.record_build(list(cfg.command), world_size=world)
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
    result = BuildResult(path=str(cfg.out), rows_written=rows_written, shards_written=len(written),
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
