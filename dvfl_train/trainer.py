"""Student training: many students side by side from one data pipeline, one readable loop.

    for epoch: the teacher source plans its views -> for each batch: decode once (the one
    ClipDataset), the teacher source's targets, one step of every student -> validate ->
    metrics line, last.pt, best.pt

Where the targets come from (cache, online teacher, none) is one object (``teachers``); the
loop does not branch on it.

Why this shape:
- Decoding dominates the cost of a small student, so a sweep (several alpha/tau/beta/seed
  settings) decodes each batch once and steps every student on it. Each student keeps its own
  model, optimizer, run directory and random stream; the data order depends on the data seed
  only, so a student trained in a sweep ends bit-identical to the same student trained alone.
- Epochs are numbered from 1. A checkpoint's ``epoch`` is the number of finished epochs, and
  resuming continues each student after its own ``last.pt``; the loop covers the union.
- A resumed run equals an uninterrupted one: the LR is a pure function of (epoch, batch), the
  order of (data seed, epoch), mixing of (data seed, video, view) (a mixed cache's rows are
  stored; round-1 configs mix per batch, of (data seed, epoch, batch)), and each student's
  drop-path stream is reseeded at every epoch from (seed, epoch, rank). The checkpoint still
  carries the RNG state ``training_state`` records; it is restored, then superseded by that
  reseed, which is what keeps every rank of a data-parallel run exact too.
- Under torchrun each rank takes a strided share of every global batch of ``batch_size`` clips.
  Losses are weighted by the rank's share of the clips that actually decoded, so the averaged
  gradient is the mean over the global batch even when shares differ; metrics are all-reduced
  sums. Only rank 0 validates and writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dvfl_cache.data.dataset import Cut, FailureLog
from dvfl_cache.errors import CheckpointError, DvflError
from dvfl_cache.failbudget import TooManyFailed, failed_line
from dvfl_cache.models.weights import read_checkpoint
from dvfl_cache.runtime import resolve_device

from dvfl_train.cache_views import pin_cache_views
from dvfl_train.checkpoint import (BEST, LAST, SUMMARY, RunDir, checkpoint_file, read_metrics,
                                   restore_training_state, training_state)
from dvfl_train.config import ConfigError, FitConfig
from dvfl_train.schedule import lr_at
from dvfl_train.student import Student, StudentSpec, build_student, derive_seed, train_step
from dvfl_train.teachers import check_mixing, open_teacher
from dvfl_train.train_data import (MixCount, epoch_order, make_loader, mix_batch,
                                   mixed_targets, rank_batches, student_inputs, train_clips,
                                   train_index, val_index)

__all__ = ["Diverged", "TrainEvent", "fit", "train_students"]

log = logging.getLogger(__name__)

_DROP_PATH_TAG = 2  # stream tag of the per-(seed, epoch, rank) drop-path seed; fixed forever
# Columns of the metric accumulators: clip-weighted sums, then the clip and top-1 counts.
_LOSS, _KD, _CE, _FEAT, _N, _CORRECT = range(6)


@dataclass(frozen=True)
class TrainEvent:
    """Progress report: ``epoch_start`` (steps), ``step`` (clips, summed over ranks),
    ``epoch_end`` (records and the bare models, by student label). Sent on every rank."""

    kind: str
    epoch: int
    epochs: int
    steps: int = 0
    clips: int = 0
    records: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    models: Mapping[str, nn.Module] = field(default_factory=dict)


Progress = Callable[[TrainEvent], None]


class Diverged(DvflError):
    """A run whose loss became NaN or infinite: it stopped there, with no checkpoint from it."""


def diverged_line(summary: Mapping[str, Any]) -> str:
    """Where a student's loss stopped being finite, from its summary's ``diverged`` entry."""
    d = summary["diverged"]
    kept = (f"last.pt holds epoch {d['epoch'] - 1}, nothing later was saved" if d["epoch"] > 1
            else "before any checkpoint")
    return (f"{summary['out_dir']}: the loss became {d['loss']} at epoch {d['epoch']}, step "
            f"{d['step']}; training stopped there ({kept}); lower --lr or check the inputs")


# -- distributed plumbing ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def min(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return t

    def total(self, n: int) -> int:
        """``n`` summed over the ranks."""
        if self.world <= 1:
            return n
        return int(self.all_reduce(torch.tensor([n], device=self.device)).item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def _setup(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return _Dist(0, 1, dev, False)
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        # Rank 0 validates while the others wait at a barrier: allow a long validation.
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                timeout=timedelta(hours=2))
    return _Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


# -- the run ----------------------------------------------------------------------------------

def fit(cfg: FitConfig, *, resume: bool = False, overwrite: bool = False, log_every: int = 10,
        progress: Progress | None = None) -> dict[str, Any]:
    """Train one student as ``cfg`` says; returns its summary (also in ``summary.json``).

    A loss that stops being finite ends the run with ``Diverged`` (its summary.json says where).
    """
    spec = StudentSpec(alpha=cfg.alpha, tau=cfg.tau, beta=cfg.beta, seed=cfg.seed,
                       out_dir=cfg.out_dir)
    summary = train_students(cfg, [spec], resume=resume, overwrite=overwrite,
                             log_every=log_every, progress=progress)[0]
    if summary.get("diverged"):
        raise Diverged(diverged_line(summary))
    return summary


def train_students(cfg: FitConfig, specs: list[StudentSpec], *, resume: bool = False,
                   overwrite: bool = False, log_every: int = 10,
                   progress: Progress | None = None) -> list[dict[str, Any]]:
    """Train every student of ``specs`` on the data of ``cfg`` from one pipeline.

    ``cfg`` gives everything shared (data, model, schedule, teacher source); each spec its
    alpha, tau, beta, loss forms, init seed and run directory. The data seed is ``cfg.data_seed`` or else
    ``cfg.seed``. Returns one summary per student, in the order of ``specs``.

    A student whose loss becomes NaN or infinite stops at once: no further step, no validation
    and no checkpoint from that epoch; its summary gets ``diverged`` (epoch, step, loss). The
    other students go on (each is its own experiment; they only share the data). The check
    reads a flag kept on the device at every step record and at the end of the epoch, so the
    step named is the first non-finite one without a host sync per step.
    """
    if not specs:
        raise ValueError("train_students needs at least one StudentSpec")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    dirs = [str(Path(s.out_dir).resolve()) for s in specs]
    labels = [s.label for s in specs]
    if len(set(dirs)) < len(dirs) or len(set(labels)) < len(labels):
        raise ConfigError("each student needs its own run directory and name")
    configs = [s.config(cfg) for s in specs]
    for c in configs:
        c.validate()
    check_mixing(cfg)  # --mixup/--cutmix with a --cache: one line before anything is read
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    for key in ("mode", "seed", "num_frames"):
        if key in cfg.sampler:
            raise ConfigError(f"{cfg.out_dir}: sampler option {key!r} is set by the run "
                              "(mode train, the data seed, --frames); remove it")

    dist = _setup(cfg.device)
    try:
        return _train(cfg, specs, configs, dist, data_seed=data_seed, resume=resume,
                      overwrite=overwrite, log_every=log_every, progress=progress)
    finally:
        if dist.owns_group:
            torch.distributed.destroy_process_group()


def _train(cfg: FitConfig, specs: list[StudentSpec], configs: list[FitConfig], dist: _Dist, *,
           data_seed: int, resume: bool, overwrite: bool, log_every: int,
           progress: Progress | None) -> list[dict[str, Any]]:
    device, emit = dist.device, progress or (lambda event: None)
    index, vindex = train_index(cfg), val_index(cfg)
    teacher = open_teacher(cfg, index, data_seed=data_seed,
                           need_features=any(s.beta > 0 for s in specs), device=device)
    _check_test_span(cfg, teacher.view_frames)
    if getattr(teacher, "reader", None) is not None:
        cfg, configs, teacher.views = pin_cache_views(
            cfg, configs, teacher.reader.meta.views_per_video, resume=resume)
    students = [_open_student(c, s, dist, num_classes=index.num_classes,
                              feature_dim=teacher.feature_dim, resume=resume, overwrite=overwrite)
                for c, s in zip(configs, specs)]
    schedule = _Schedule.of(cfg, len(index))
    # uint8 pixels: 4x less to ship from workers; normalised on the device (as_input)
    cuts = teacher.cuts(Cut("clip", cfg.size, frames=cfg.num_frames, as_uint8=True))
    failures, invalid = FailureLog(), _InvalidViews(index)
    amp = cfg.amp and device.type == "cuda"

    for epoch in range(min(s.done for s in students) + 1, cfg.epochs + 1):
        active = [s for s in students if s.done < epoch and s.diverged is None]
        if not active:  # (students resumed from a later epoch may still have epochs to go)
            continue
        plan = teacher.plan(epoch, index)
        invalid.add(plan.invalid)
        batches = rank_batches(epoch_order(data_seed, epoch, len(plan.videos)),
                               batch_size=cfg.batch_size, rank=dist.rank, world_size=dist.world)
        clips = train_clips(index, plan, cuts, sampler=teacher.sampler, mix=teacher.mix)
        loader = make_loader(clips, batches, workers=cfg.workers,
                             pin_memory=device.type == "cuda")
        for s in active:
            _start_epoch(s, epoch, dist)
        emit(TrainEvent("epoch_start", epoch, cfg.epochs, steps=len(batches)))
        started, clips_seen, failed_before = time.perf_counter(), 0, len(failures)
        # mixed rows (a mixed cache, or drawn per row): soft labels, and the epoch's counts
        mixing = None if clips.mixes is None else MixCount()

        for i, batch in enumerate(loader):
            failures.add(batch["failures"])
            n_local = len(batch["label"])
            n_global = dist.total(n_local)
            if n_global == 0:  # every clip of this global batch failed to decode
                emit(TrainEvent("step", epoch, cfg.epochs, clips=0))
                continue
            clip, labels = student_inputs(batch, device, num_frames=cfg.num_frames, size=cfg.size)
            t_logits, t_feats = teacher.targets(batch, device)
            target, smoothing = labels, cfg.label_smoothing
            if mixing is not None:
                target, smoothing = mixed_targets(batch, device, index.num_classes,
                                                  smoothing=cfg.label_smoothing), 0.0
                mixing.add(batch)
            elif cfg.mix_scheme == "batch" and (cfg.mixup > 0 or cfg.cutmix > 0):
                clip, target = mix_batch(clip, labels, index.num_classes, mixup=cfg.mixup,
                                         cutmix=cfg.cutmix, seed=data_seed, epoch=epoch, step=i)
            # The rank's share of the clips that decoded: the DDP average is then the global mean.
            weight = dist.world * n_local / n_global
            lr = schedule.lr(epoch, i)
            for s in active:
                if s.diverged is not None:
                    continue
                parts, logits = train_step(s, clip, target, teacher_logits=t_logits,
                                           teacher_features=t_feats, lr=lr, weight=weight, amp=amp,
                                           label_smoothing=smoothing)
                _accumulate(s, parts, logits, labels, n_local, lr)
                if s.step % log_every == 0 and _still_finite(s, dist, epoch):
                    _log_window(s, dist, epoch)
            clips_seen += n_global
            emit(TrainEvent("step", epoch, cfg.epochs, clips=n_global))
            if all(s.diverged is not None for s in active):
                break

        train_time = time.perf_counter() - started
        active = [s for s in active if _still_finite(s, dist, epoch)]
        if not active:
            emit(TrainEvent("epoch_end", epoch, cfg.epochs))
            continue
        failed = dist.total(len(failures) - failed_before)
        mixed = _mix_record(mixing, dist, epoch)
        _check_failures(cfg, index, plan, failures.failures[failed_before:], clips_seen, dist,
                        epoch, [s.cfg.out_dir for s in active])
        val = _validate(active, cfg, vindex, dist, epoch) if _val_due(cfg, epoch) else None
        records = {}
        for k, s in enumerate(active):
            record = _epoch_record(s, dist, epoch, train_time=train_time, clips=clips_seen,
                                   failed=failed, invalid=len(plan.invalid),
                                   val=None if val is None else val[k])
            record.update(mixed)
            _finish_epoch(s, record, index, epoch)
            records[s.spec.label] = record
        dist.barrier()
        emit(TrainEvent("epoch_end", epoch, cfg.epochs, records=records,
                        models={s.spec.label: s.net for s in active}))

    return _summaries(students, dist, failures, invalid.count)


def _check_failures(cfg: FitConfig, index, plan, failed: list[tuple[str, str]], clips: int,
                    dist: _Dist, epoch: int, out_dirs: list[str]) -> None:
    """Stop (before this epoch's checkpoint) when nothing trained or more than --max-failed
    of the epoch's videos failed: undecodable now, or marked invalid in the cache."""
    named = list(dict(failed).items())
    named += [(index.videos[v].path, "failed when the cache was built") for v in plan.invalid]
    count = dist.total(len(dict(failed))) + len(plan.invalid)
    total = len(index)
    if clips == 0:
        why = failed_line(named, total, what="to decode") if named else "no videos to train on"
        raise TooManyFailed(f"epoch {epoch}: no clip could be trained on; {why}; nothing was "
                            "trained and no checkpoint written for this epoch")
    if count / max(total, 1) > cfg.max_failed:
        kept = (f"epochs before {epoch} are kept in {', '.join(out_dirs)}; fix the videos and "
                "resume with --resume" if epoch > 1 else "no checkpoint was written")
        line = failed_line(named, total, what=f"in epoch {epoch}").replace(
            f"{len(named)} of", f"{count} of", 1)
        raise TooManyFailed(f"{line} (more than --max-failed {cfg.max_failed:g}); {kept}")


@dataclass(frozen=True)
class _Schedule:
    """The LR as a pure function of (epoch, batch position).

    It runs over batch positions, epoch-aligned even when an epoch is short of videos (failed
    views): the last batch of the last epoch is at the minimum LR.
    """

    steps_per_epoch: int
    params: Mapping[str, Any]

    @classmethod
    def of(cls, cfg: FitConfig, num_videos: int) -> _Schedule:
        steps = math.ceil(num_videos / cfg.batch_size)
        last = max(cfg.epochs * steps - 1, 1)
        base_lr, warmup_lr, min_lr = cfg.scaled_lrs()
        return cls(steps, dict(total_steps=last, warmup_steps=min(cfg.warmup_epochs * steps, last),
                               base_lr=base_lr, warmup_lr=warmup_lr, min_lr=min_lr))

    def lr(self, epoch: int, i: int) -> float:
        return lr_at((epoch - 1) * self.steps_per_epoch + i, **self.params)


class _InvalidViews:
    """Counts cached views marked invalid; warns about each video once per session (epoch
    records count them all)."""

    def __init__(self, index):
        self.index, self.count, self.warned = index, 0, set()

    def add(self, videos: tuple[int, ...]) -> None:
        self.count += len(videos)
        new = sorted(set(videos) - self.warned)
        if new:
            self.warned.update(new)
            log.warning("skipping cached views marked invalid (the video, or the partner it "
                        "was mixed with, failed when the cache was built): %s",
                        ", ".join(self.index.videos[v].path for v in new))


def _check_test_span(cfg: FitConfig, replayed: int) -> None:
    if replayed > cfg.num_frames and cfg.test_span is None:
        log.warning("the students replay the teacher's %d-frame views cut to %d frames but "
                    "validate on plain %d-frame views, which may span less time; --test-span %d "
                    "(with the teacher's --sampler-opt stride) validates on views like the "
                    "training ones", replayed, cfg.num_frames, cfg.num_frames, replayed)


def _start_epoch(s: Student, epoch: int, dist: _Dist) -> None:
    s.rng.reseed(derive_seed(s.spec.seed, epoch, dist.rank, _DROP_PATH_TAG))
    s.model.train()
    s.window = torch.zeros(6, dtype=torch.float64, device=dist.device)
    s.totals = torch.zeros(6, dtype=torch.float64, device=dist.device)
    s.nonfinite = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=dist.device)


def _open_student(cfg: FitConfig, spec: StudentSpec, dist: _Dist, *, num_classes: int,
                  feature_dim: int | None, resume: bool, overwrite: bool) -> Student:
    """Build the student, set up (rank 0) its run directory and restore ``last.pt`` on resume."""
    run = state = None
    if dist.rank == 0:
        run = RunDir(cfg.out_dir, resume=resume, overwrite=overwrite)
        run.write_config(cfg)
        state = run.resume_state() if resume else None
    dist.barrier()  # rank 0 has created, overwritten or truncated the directory
    if dist.rank != 0 and resume:
        path = checkpoint_file(cfg.out_dir, LAST)
        if path.exists():
            state = read_checkpoint(path)
    # A resumed student gets its weights from last.pt: loading --init first would be wasted.
    s = build_student(cfg, spec, num_classes=num_classes, device=dist.device,
                      feature_dim=feature_dim, load_init=state is None)
    s.run = run
    if state is not None:
        with s.rng.active():
            s.done, s.step, s.best = restore_training_state(state, s.net, s.optimizer)
        if s.parts.proj is not None:
            if "projector" not in state:
                raise CheckpointError(f"{checkpoint_file(cfg.out_dir, LAST)}: no 'projector' for "
                                      "the feature term")
            s.parts.proj.load_state_dict(state["projector"])
        s.best_epoch = state.get("best_epoch")
        s.train_time = float(state.get("train_time_s", 0.0))
        if run is not None:
            epochs = read_metrics(run.path, kind="epoch")
            s.last_record = epochs[-1] if epochs else None
        log.info("%s: resuming after epoch %d (step %d)", spec.label, s.done, s.step)
    if run is not None and cfg.tensorboard:
        run.open_tensorboard(resume_step=None if state is None else s.step)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        s.model = DistributedDataParallel(
            s.model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
    return s


def _accumulate(s: Student, parts: dict[str, torch.Tensor], logits: torch.Tensor,
                labels: torch.Tensor, n: int, lr: float) -> None:
    """Add clip-weighted sums on the device (no host sync per step)."""
    correct = (logits.argmax(dim=1) == labels).sum() if n else logits.new_zeros(())
    row = torch.stack([parts["loss"] * n, parts["kd_loss"] * n, parts["ce_loss"] * n,
                       parts["feat_loss"] * n, parts["loss"].new_tensor(float(n)),
                       correct.to(parts["loss"].dtype)]).to(torch.float64)
    s.window += row
    s.totals += row
    s.lr = lr
    # (step, loss) of the epoch's first non-finite loss, kept on the device: no sync per step
    loss = parts["loss"].detach().to(torch.float64)
    first = ~torch.isfinite(loss) & (s.nonfinite[0] < 0)
    s.nonfinite = torch.where(first, torch.stack([torch.full_like(loss, s.step), loss]),
                              s.nonfinite)


def _still_finite(s: Student, dist: _Dist, epoch: int) -> bool:
    """False, with ``s.diverged`` set, once a step of ``s`` (on any rank) had a loss that is
    NaN or infinite; the same answer on every rank."""
    if s.diverged is not None:
        return False
    step, loss = s.nonfinite.tolist()
    first = dist.min(torch.tensor([step if step >= 0 else math.inf], dtype=torch.float64,
                                  device=dist.device)).item()
    if math.isinf(first):
        return True
    s.diverged = {"epoch": epoch, "step": int(first),
                  "loss": str(loss) if step == first else "non-finite"}
    log.warning("%s: the loss became %s at epoch %d, step %d; this student stops here (no "
                "checkpoint from it)", s.spec.label, s.diverged["loss"], epoch, int(first))
    return False


def _means(sums: list[float], with_feat: bool) -> dict[str, float]:
    n = max(sums[_N], 1.0)
    out = {"loss": sums[_LOSS] / n, "kd": sums[_KD] / n, "ce": sums[_CE] / n}
    if with_feat:
        out["feat"] = sums[_FEAT] / n
    return out


def _log_window(s: Student, dist: _Dist, epoch: int) -> None:
    sums = dist.all_reduce(s.window.clone()).tolist()
    s.window.zero_()
    if s.run is not None:
        s.run.append_metrics({"type": "step", "epoch": epoch, "step": s.step,
                              **_means(sums, s.cfg.beta > 0), "lr": s.lr,
                              "clips": int(sums[_N])})


def _mix_record(mixing: MixCount | None, dist: _Dist, epoch: int) -> dict[str, float]:
    """The epoch's mixed fraction and cutmix share (over all ranks), logged; {} unmixed."""
    if mixing is None:
        return {}
    total = MixCount(*(dist.total(n) for n in (mixing.clips, mixing.mixed, mixing.cutmix)))
    record = total.record()
    log.debug("epoch %d: %d of %d clips mixed (%.1f%%), %.1f%% of them by cutmix", epoch,
             total.mixed, total.clips, 100 * record["mixed"], 100 * record["cutmix_share"])
    return record


def _val_due(cfg: FitConfig, epoch: int) -> bool:
    return epoch % cfg.val_every == 0 or epoch == cfg.epochs


def _validate(active: list[Student], cfg: FitConfig, vindex, dist: _Dist,
              epoch: int) -> list[dict[str, Any]] | None:
    """1-view validation of the active students on rank 0 (others get None)."""
    if dist.rank != 0:
        return None
    from dvfl_train.evaluate import evaluate_many

    started = time.perf_counter()
    # one decode of the validation videos for every student
    results = evaluate_many([s.net for s in active], vindex, cfg.test_view(),
                            batch_size=cfg.batch_size, workers=cfg.workers, device=dist.device,
                            amp=cfg.amp)
    seconds = time.perf_counter() - started
    log.debug("epoch %d: validated %d student(s) on %d videos in %.1f s", epoch, len(active),
             len(vindex), seconds)
    return [{"val_top1": r.report.top1, "val_top5": r.report.top5, "val_failed": r.num_failed,
             "val_time_s": seconds} for r in results]


def _epoch_record(s: Student, dist: _Dist, epoch: int, *, train_time: float, clips: int,
                  failed: int, invalid: int, val: dict[str, Any] | None) -> dict[str, Any]:
    sums = dist.all_reduce(s.totals.clone()).tolist()
    s.train_time += train_time
    record = {"type": "epoch", "epoch": epoch, "step": s.step, **_means(sums, s.cfg.beta > 0),
              "lr": s.lr, "train_top1": sums[_CORRECT] / max(sums[_N], 1.0), "clips": clips,
              "train_time_s": train_time, "clips_per_s": clips / max(train_time, 1e-9),
              "failed": failed, "invalid_views": invalid}
    if val is not None:
        record.update(val)
        if s.best is None or val["val_top1"] > s.best:
            s.best, s.best_epoch = val["val_top1"], epoch
            record["best"] = True
    return record


def _finish_epoch(s: Student, record: dict[str, Any], index, epoch: int) -> None:
    """Metrics line first, then last.pt (and best.pt): a resume never logs an epoch twice."""
    s.done = epoch
    s.session_epochs += 1
    s.last_record = record
    if s.run is None:
        return
    s.run.append_metrics(record)
    with s.rng.active():  # the checkpoint records this student's stream, not the process's
        state = training_state(s.net, s.optimizer, epoch=epoch, step=s.step,
                               best_metric=s.best, config=s.cfg)
    state.update(classes=list(index.classes), best_epoch=s.best_epoch,
                 train_time_s=s.train_time)
    if s.parts.proj is not None:
        state["projector"] = s.parts.proj.state_dict()
    s.run.save(LAST, state)
    if record.get("best"):
        s.run.save_as(BEST, LAST)
    val = (f", val top-1 {100 * record['val_top1']:.2f}%" if "val_top1" in record else "")
    log.debug("%s epoch %d/%d: loss %.4f, lr %.3g%s, %.1f clips/s", s.spec.label, epoch,
             s.cfg.epochs, record["loss"], record["lr"], val, record["clips_per_s"])


def _summaries(students: list[Student], dist: _Dist, failures: FailureLog,
               invalid_views: int) -> list[dict[str, Any]]:
    """Write summary.json (rank 0) and return every student's summary on every rank."""
    for s in students:
        if s.run is not None:
            s.run.close()  # the TensorBoard event files, when open
    failed = failures.failures
    if dist.world > 1:
        gathered: list[list[tuple[str, str]] | None] = [None] * dist.world
        torch.distributed.all_gather_object(gathered, failed)
        failed = [f for part in gathered for f in (part or [])]
    log_all = FailureLog()
    log_all.add(failed)
    if dist.rank == 0:
        log_all.report(log)
    reasons = dict(log_all.failures)
    out = []
    for s in students:
        path = Path(s.cfg.out_dir) / SUMMARY
        if s.session_epochs == 0 and s.diverged is None and path.exists():  # an earlier session
            out.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        summary = {
            "name": s.spec.label, "out_dir": s.cfg.out_dir, "alpha": s.cfg.alpha,
            "tau": s.cfg.tau, "beta": s.cfg.beta, "seed": s.cfg.seed, "epochs": s.done,
            "steps": s.step, "best_val_top1": s.best, "best_epoch": s.best_epoch,
            "final": s.last_record, "train_time_s": s.train_time,
            "failed_videos": [{"path": p, "reason": reasons[p]} for p in log_all.videos],
            "failed_clips": len(log_all), "invalid_views": invalid_views,
        }
        if s.diverged is not None:
            summary["diverged"] = s.diverged
        if s.run is not None:
            s.run.write_summary(summary)
        out.append(summary)
    return out
