"""Where the teacher's targets come from: one object per run, cached, online or none.

The training loop asks a teacher source three things, and nothing else:

    plan = teacher.plan(epoch, index)        which views the epoch trains on (EpochPlan)
    cuts = teacher.cuts(student_cut)         what to decode from each view (the student's cut,
                                             and online the teacher's full view at its size)
    logits, features = teacher.targets(batch, device)   the batch's targets on the device

- ``NoTeacher``: plain CE. Views are drawn by ``ViewSampler(mode="train")`` (view e - 1 of
  every video at epoch e); there are no targets.
- ``CachedTeacher``: epoch e replays cached view (e - 1) mod V. Its logits (and features) are
  one contiguous ``epoch_block`` read, kept on the device; a batch finds its rows by video id.
  ``EnsembleTeacher``: the same over several caches of the same views, their logits combined
  per epoch (``ensemble.py``).
- ``OnlineTeacher``: views drawn like ``NoTeacher``'s at the teacher's frames; the teacher runs
  on the full view at its own size, decoded once with the student's cut of the same frames.

Mixed views (a row holding a mix of two clips) live in the plan and the clip dataset: a mixed
cache's plan carries each row's stored mix; without a cache, ``mix`` (the run's ``MixConfig``,
seeded by the data seed) has the dataset draw one per row, so the online teacher's cut is the
mixed clip the student's cut comes from. The loop does not branch on either.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from dvfl_cache.cache.epochs import EpochPlan, ensemble_plan, plan_epoch
from dvfl_cache.cache.store import CacheReader
from dvfl_cache.data.dataset import Cut
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.mix import MixConfig
from dvfl_cache.data.views import ViewSampler
from dvfl_cache.errors import DvflError

from dvfl_train.config import ConfigError, FitConfig
from dvfl_train.train_data import as_input

__all__ = ["CachedTeacher", "EnsembleTeacher", "NoTeacher", "OnlineTeacher", "TeacherSource",
           "check_mixing", "load_online_teacher", "open_cache", "open_teacher"]

log = logging.getLogger(__name__)

TEACHER_CUT = "teacher_clip"


class TeacherSource:
    """Base: no teacher. ``view_frames``: the frame count of the views the run trains on;
    ``mix``: per-row mixing drawn for the run (None: none, or the cache's stored mixes)."""

    kind = "none"

    def __init__(self, *, num_classes: int, view_frames: int, sampler: ViewSampler | None,
                 feature_dim: int | None = None, need_features: bool = False,
                 mix: MixConfig | None = None):
        self.num_classes, self.view_frames, self.sampler = num_classes, view_frames, sampler
        self.feature_dim, self.need_features, self.mix = feature_dim, need_features, mix

    def plan(self, epoch: int, index: DatasetIndex) -> EpochPlan:
        return plan_epoch(epoch, index)

    def cuts(self, student: Cut) -> tuple[Cut, ...]:
        return (student,)

    def targets(self, batch: dict, device: torch.device
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits (B, C), features (B, D) or None), float32 on ``device``; None without one."""
        return None, None

    def _blank(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Targets of the one blank clip a rank feeds when its share decoded to nothing."""
        feats = (torch.zeros(1, self.feature_dim or 0, device=device) if self.need_features
                 else None)
        return torch.zeros(1, self.num_classes, device=device), feats


class NoTeacher(TeacherSource):
    """Plain CE training: sampled views, no targets."""


class CachedTeacher(TeacherSource):
    """Teacher logits (and features) stored in a dvfl cache, replayed view for view."""

    kind = "cached"

    def __init__(self, reader: CacheReader | None, *, num_classes: int, view_frames: int,
                 feature_dim: int | None = None, need_features: bool = False):
        super().__init__(num_classes=num_classes, view_frames=view_frames, sampler=None,
                         feature_dim=feature_dim, need_features=need_features)
        self.reader = reader
        self.views: int | None = None  # the first N views per video (cache_views.py)
        self._logits: torch.Tensor | None = None
        self._features: torch.Tensor | None = None
        self._device = torch.device("cpu")

    def to(self, device: torch.device) -> CachedTeacher:
        self._device = torch.device(device)
        return self

    def plan(self, epoch: int, index: DatasetIndex) -> EpochPlan:
        plan = plan_epoch(epoch, index, reader=self.reader, need_features=self.need_features,
                          views=self.views)
        features = (None if plan.teacher_features is None
                    else torch.from_numpy(plan.teacher_features))
        self.use_block(torch.from_numpy(plan.teacher_logits), features)
        return plan

    def use_block(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """Serve targets from these rows (one per index position), e.g. an epoch's block."""
        self._logits = logits.to(self._device)
        self._features = None if features is None else features.to(self._device)

    def targets(self, batch, device):
        if batch["clip"] is None:
            return self._blank(device)
        rows = batch["video"].to(device, non_blocking=True)
        return self._logits[rows], (None if self._features is None else self._features[rows])


class EnsembleTeacher(CachedTeacher):
    """CachedTeacher over K caches of the same views (dvfl_train/ensemble.py); rows invalid
    in any cache are left out of the epoch."""

    kind = "cached"

    def __init__(self, readers: list[CacheReader], *, mix: str, num_classes: int,
                 view_frames: int):
        from dvfl_cache.cache.sameviews import check_same_views

        for other in readers[1:]:
            check_same_views(readers[0], other)
        super().__init__(readers[0], num_classes=num_classes, view_frames=view_frames)
        # `mix` is the base's per-row mixing (None: a cache brings its own); this is the target's
        self.readers, self.teacher_mix = list(readers), mix

    def plan(self, epoch: int, index: DatasetIndex) -> EpochPlan:
        plan = ensemble_plan(epoch, index, self.readers, mix=self.teacher_mix, views=self.views)
        self.use_block(torch.from_numpy(plan.teacher_logits))
        return plan


class OnlineTeacher(TeacherSource):
    """A frozen teacher network run on each batch (online KD)."""

    kind = "online"

    def __init__(self, model: nn.Module, *, sampler: ViewSampler, num_classes: int,
                 need_features: bool = False, amp: bool = False, mix: MixConfig | None = None):
        super().__init__(num_classes=num_classes, view_frames=model.num_frames, sampler=sampler,
                         feature_dim=model.num_features, need_features=need_features, mix=mix)
        self.model, self.amp = model, amp
        self.size = int(model.config["img_size"])

    def cuts(self, student: Cut) -> tuple[Cut, ...]:
        return (student, Cut(TEACHER_CUT, self.size, as_uint8=student.as_uint8))

    def targets(self, batch, device):
        if batch["clip"] is None:
            return self._blank(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=self.amp and device.type == "cuda"):
            features = self.model.forward_features(as_input(batch[TEACHER_CUT], device))
            logits = self.model.forward_head(features).float()
        return logits, (features.float() if self.need_features else None)


# -- opening one ------------------------------------------------------------------------------

def open_teacher(cfg: FitConfig, index: DatasetIndex, *, data_seed: int, need_features: bool,
                 device: torch.device) -> TeacherSource:
    """The run's teacher source: ``cfg.cache``, else ``cfg.teacher_weights``, else none."""
    num_classes = index.num_classes
    student_mixes = cfg.mixup > 0 or cfg.cutmix > 0
    if len(cfg.cache) > 1:
        readers = [open_cache(c, index, num_frames=cfg.num_frames, need_features=False,
                              student_mixes=student_mixes, workers=max(1, cfg.workers),
                              storage_options=cfg.storage_options or None)
                   for c in cfg.cache]
        log.info("teacher logits: %s of %s", cfg.teacher_mix,
                 ", ".join(f"{c} ({r.meta.teacher.name})" for c, r in zip(cfg.cache, readers)))
        return EnsembleTeacher(readers, mix=cfg.teacher_mix, num_classes=num_classes,
                               view_frames=readers[0].meta.num_frames).to(device)
    if cfg.cache:
        (path,) = cfg.cache
        reader = open_cache(path, index, num_frames=cfg.num_frames,
                            need_features=need_features, student_mixes=student_mixes,
                            workers=max(1, cfg.workers),
                            storage_options=cfg.storage_options or None)
        log.info("teacher logits from %s (%s, %d views per video%s)", path,
                 reader.meta.teacher.name, reader.meta.views_per_video,
                 "" if reader.meta.mix is None else ", mixed rows")
        return CachedTeacher(reader, num_classes=num_classes, view_frames=reader.meta.num_frames,
                             feature_dim=reader.meta.feature_dim,
                             need_features=need_features).to(device)
    model = None
    if cfg.online_teacher:
        model = load_online_teacher(cfg, num_classes=num_classes, classes=index.classes
                                    ).to(device)
    frames = model.num_frames if model is not None else cfg.num_frames
    try:
        sampler = ViewSampler.from_dict({**cfg.sampler, "mode": "train", "seed": data_seed,
                                         "num_frames": frames})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.out_dir}: bad sampler options {cfg.sampler}: {exc}") from None
    mix = cfg.mix_config(data_seed)
    if mix is not None and len(index) < 2:
        raise ConfigError(f"{cfg.out_dir}: mixing (--mixup/--cutmix) needs at least 2 training "
                          f"videos to pair; the index has {len(index)}")
    if model is None:
        return NoTeacher(num_classes=num_classes, view_frames=frames, sampler=sampler, mix=mix)
    return OnlineTeacher(model, sampler=sampler, num_classes=num_classes,
                         need_features=need_features, amp=cfg.amp, mix=mix)


def open_cache(path: str, index: DatasetIndex, *, num_frames: int, need_features: bool,
               student_mixes: bool = False, workers: int = 1,
               storage_options: dict[str, Any] | None = None) -> CacheReader:
    """The cache, refused unless it was built for exactly these videos and can serve the run
    (``dvfl_cache.cache.health.check_replayable``, which the public ``CachedClips`` asks too).

    ``student_mixes``: the run asks for --mixup/--cutmix, which a cache cannot serve: a mixed
    one brings its own mixing, an unmixed one has no logits of mixed clips. ``storage_options``:
    fsspec settings of a URL (``--storage-option``)."""
    reader = CacheReader(path, storage_options=storage_options)
    if student_mixes:
        _refuse_mixing(reader, path)
    from dvfl_cache.cache.health import check_replayable

    check_replayable(reader, index, num_frames=num_frames, need_features=need_features,
                     workers=workers)
    return reader


def check_mixing(cfg: FitConfig) -> None:
    """Refuse ``--mixup/--cutmix`` with a ``--cache`` in one line, reading only its metadata:
    what ``open_cache`` refuses, for a sweep to check before it makes its folder."""
    if cfg.cache and (cfg.mixup > 0 or cfg.cutmix > 0):
        _refuse_mixing(CacheReader(cfg.cache[0], storage_options=cfg.storage_options or None),
                       cfg.cache[0])


def _refuse_mixing(reader: CacheReader, path: str) -> None:
    m = reader.meta.mix
    if m is not None:
        raise ConfigError(f"{path}: the cache is already mixed (mixup {m.mixup:g}, cutmix "
                          f"{m.cutmix:g}, mix-prob {m.prob:g}); drop --mixup/--cutmix: a student "
                          "trained from a mixed cache takes its mixing from the cache")
    raise ConfigError(f"{path}: mixup/cutmix cannot be combined with a cache built without "
                      "mixing (its logits are of unmixed clips); build the cache with "
                      "`dvfl-cache build --mixup/--cutmix`, or train online with "
                      "--teacher-weights")


def load_online_teacher(cfg: FitConfig, *, num_classes: int,
                        classes: tuple[str, ...] | None = None) -> nn.Module:
    """The teacher for online KD, frozen and in eval mode.

    ``cfg.teacher`` names the architecture of ``cfg.teacher_weights``; without a name the weights
    must be a dvfl checkpoint, which names its own. The teacher's clip geometry is its own:
    ``num_frames`` and the ``img_size`` of its config. An ``hf:`` teacher brings its weights
    and input; a ``py:`` one runs at the student's frames and size. Either must have the
    dataset's classes (its own names, or generic LABEL_i in the dataset's order).
    """
    from dvfl_cache.models.load import classes_for_dataset, load_model, read_class_file
    from dvfl_cache.models.registry import is_foreign

    opts = dict(cfg.teacher_opts)
    if is_foreign(cfg.teacher):
        def load(class_map=None):
            return load_model(cfg.teacher, cfg.teacher_weights, options=opts,
                              num_classes=num_classes, num_frames=cfg.num_frames, size=cfg.size,
                              clip_input=cfg.teacher_input or None, class_map=class_map,
                              identify=False)

        loaded = load()
        labels = loaded.extra.get("labels")
        mapping = None if cfg.teacher_classes is None else read_class_file(cfg.teacher_classes)
        if labels is not None and classes is not None:
            _, class_map = classes_for_dataset(labels, classes, spec=cfg.teacher,
                                               mapping=mapping)
            if class_map is not None:
                loaded = load(class_map)
        elif mapping is not None:
            raise DvflError(f"--teacher-classes: {cfg.teacher} has no label names to map onto")
        where = cfg.teacher
    else:
        try:
            if cfg.teacher is None:
                loaded = load_model(cfg.teacher_weights, options=opts, identify=False)
            else:
                loaded = load_model(cfg.teacher, cfg.teacher_weights,
                                    options={"num_classes": num_classes, **opts},
                                    identify=False)
        except (TypeError, ValueError) as exc:
            raise DvflError(f"teacher {cfg.teacher}: {exc}") from None
        where = cfg.teacher_weights
    teacher = loaded.model
    log.info("online teacher %s", loaded.report or where)
    if teacher.num_classes != num_classes:
        raise DvflError(f"{where}: the teacher has {teacher.num_classes} classes, "
                        f"the dataset {num_classes}")
    if cfg.num_frames > teacher.num_frames:
        raise DvflError(f"{where}: the teacher takes {teacher.num_frames} frames; "
                        f"a student of {cfg.num_frames} cannot share its views")
    teacher.eval().requires_grad_(False)
    return teacher
