"""FitConfig: everything needed to reproduce one student training run, as one frozen record.

A run directory stores it as ``config.json`` (``to_dict``), and a resumed or repeated run reads it
back with ``from_dict``, which names the field at fault. ``validate`` refuses combinations that
cannot mean what the user hopes, before any data is touched.

Defaults follow the DVFL-Net recipe and its released UCF101 configs: SGD, base LR 0.1 and warm-up
LR 0.001 (quoted for a global batch of 512 and scaled linearly), 120 epochs with 20 of warm-up,
weight decay 1e-4, gradient clipping at norm 5, alpha 0.3 and tau 10. The minimum LR defaults to
0.001 (the released configs' MIN_LR, scaled like the others) so the cosine ends where the
warm-up began. ``batch_size`` is the *global* batch over all processes. Mixup and cutmix default
to off; on, they mix per row (``mix_prob`` of the rows, partners and lambdas drawn from (data seed,
video, view)), for plain CE and online KD alike; a mixed cache brings its own mixing.
Nesterov momentum (the reference's) is opt-in so that runs keep the round-1 recipe unless asked.

This module imports neither torch nor click: the command line is derived from the fields'
metadata (``dvfl_cache.settings``) and ``--help`` stays fast.

Versions: 1 (round 1) had no ``nesterov`` field and ran SGD with momentum 0.9 (the field
existed but had no option). ``from_dict`` fills the fields a version lacks with the values that
reproduce it (``_ADDED``), so round-1 runs resume and evaluate unchanged. Round 1 mixed (CE
runs only) one lambda per batch, pairing a batch with its reverse; version 2 mixes per row.
``mix_scheme`` (no option: only a record says "batch") keeps the old scheme for version-1
configs, so an old CE+mixup run still resumes bit-identically, and ``mix_prob`` is 1 for them.
Version 3 made ``cache`` a list (several caches: an ensemble) and added ``teacher_mix`` and
``views_subset``; versions 1-2 stored one path or null, which ``from_dict`` reads as a list of
one or none (a single string is accepted in any version, for hand-written configs). A version-2
run has no ``views_subset``: it resumes on all the views its cache has (``cache_views.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvfl_cache.errors import DvflError
from dvfl_cache.failbudget import max_failed_setting
from dvfl_cache.models.registry import is_foreign
from dvfl_cache.settings import check_finite, setting
from dvfl_cache.teacher_mix import TEACHER_MIXES

__all__ = ["CONFIG_VERSION", "KD_FORMS", "OPTIMIZERS", "PRED_LOSSES", "REFERENCE_BATCH",
           "REP_LOSSES", "TEACHER_MIXES", "ConfigError", "FitConfig", "MIX_SCHEMES",
           "cache_paths", "load_config", "scaled_lr"]

CONFIG_VERSION = 3

# Fields added after version 1: the version that added each, and the value that reproduces a
# run written by an older version.
_ADDED: dict[str, tuple[int, Any]] = {"nesterov": (2, False), "kd_form": (2, "kl"),
                                      "pred_loss": (2, "kl"), "rep_loss": (2, "mean"),
                                      "mix_prob": (2, 1.0), "mix_scheme": (2, "batch"),
                                      "teacher_mix": (3, "mean-logits"), "views_subset": (3, None)}

# Fields never written to config.json (secrets): a run is reproduced without them.
_NOT_RECORDED = ("storage_options",)

MIX_SCHEMES = ("row", "batch")   # per row (the cache's), or round 1's per batch (old runs)

KD_FORMS = ("kl", "reference")   # the true KL, or the published code's criterion
PRED_LOSSES = ("kl", "mse")      # how predictions are matched: tau-KL or squared distance
REP_LOSSES = ("mean", "sum")     # representation term: mean over elements, or summed over D

OPTIMIZERS = ("sgd", "adamw")
"""Optimizer names; ``dvfl_train.schedule.build_optimizer`` builds them."""

REFERENCE_BATCH = 512
"""The global batch the recipe's learning rates are quoted for."""


def scaled_lr(base: float, batch: int) -> float:
    """``base * batch / 512``: the linear scaling rule the recipe quotes its LRs under."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return base * batch / REFERENCE_BATCH


def _dataset_kinds() -> tuple[str, ...]:
    from dvfl_cache.data.readers import KINDS

    return KINDS


def _model_names() -> tuple[str, ...]:
    from dvfl_cache.models.registry import MODEL_NAMES

    return MODEL_NAMES

# Fields that may change when a run is resumed without changing what it computes.
RESUMABLE_CHANGES = frozenset({"workers", "device", "out_dir", "max_failed", "tensorboard"})
# Fields naming files or folders: compared resolved on resume (see resume_differences).
PATH_FIELDS = ("data_root", "train_index", "val_index", "init", "cache", "teacher_weights",
               "teacher_classes")

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(DvflError):
    """A run configuration that is malformed or self-contradictory."""


@dataclass(frozen=True)
class FitConfig:
    """One student training run. Paths are stored as given (str), so the record stays JSON.

    Each field declares its command-line option (``setting(flag=...)``); `dvfl-train fit` and
    `sweep` derive their options from here and ``from_cli`` is the only translation."""

    # data
    dataset: str = setting(flag="--dataset", choices=_dataset_kinds,
                           help="Dataset kind; its split's train/test lists under --root give "
                                "the videos.")
    data_root: str = setting(flag="--root", path="dir",
                             help="Dataset folder (or where the videos of --index now are).")
    out_dir: str = setting(flag="--out", path="out_dir", help="Run directory.")
    split: int = setting(1, flag="--split", help="Split number.")
    train_index: str | None = setting(None, flag="--index", path="file",
                                      help="Training index JSON (`dvfl-cache index`) instead of "
                                           "the split's train list.")
    val_index: str | None = setting(None, flag="--val-index", path="file",
                                    help="Validation index JSON; default: the split's test "
                                         "list, as the paper does.")
    num_frames: int = setting(8, flag="--frames", low=1,
                              help="Frames per student clip (fewer than the cache's: subsampled "
                                   "from the same views).")
    size: int = setting(224, flag="--size", low=8, help="Student input resolution (square).")
    sampler: dict[str, Any] = setting(
        flag="--sampler-opt", key_values=True, default_factory=dict, hash=False,
        help="ViewSampler option for fresh views and validation (repeatable), e.g. "
             "temporal=stride, flip=0.")
    # student
    model: str = setting("vfl-nano", flag="--model", choices=_model_names,
                         prefixes=("hf:", "py:"),
                         help="Student architecture: a registered name, hf:PATH (a Hugging "
                              "Face video classifier's config, built fresh at --frames/--size) "
                              "or py:MODULE:FUNCTION (your factory, called with --model-opt).")
    model_opts: dict[str, Any] = setting(
        flag="--model-opt", key_values=True, default_factory=dict, hash=False,
        help="Override a student constructor option (repeatable), e.g. embed_dim=32 or "
             "depths=1,1,2,1.")
    model_input: dict[str, Any] = setting(
        flag="--model-input", key_values=True, default_factory=dict, hash=False,
        help="hf:/py: students: the input the model expects (repeatable): layout=frames-first "
             "or channels-first, mean=R,G,B, std=R,G,B (as dvfl-cache build --teacher-input).")
    drop_path: float | None = setting(None, flag="--drop-path", low=0, high=1, high_open=True,
                                      help="Stochastic depth rate (default: the model's, 0.2 "
                                           "for vfl-nano).")
    init: str | None = setting(None, flag="--init", path="file",
                               help="Initial weights: ImageNet FocalNet, Video-FocalNet or dvfl "
                                    "checkpoint (fresh classifier head).")
    # teacher: a cache, or a model run online; neither for plain CE training
    # several caches: an ensemble of teachers over the same views (dvfl_train/ensemble.py)
    cache: tuple[str, ...] = setting(
        (), flag="--cache", multiple=True,
        help="Teacher-logit cache: directory, .zip or URL. Repeat for an ensemble of teachers "
             "over the same views (`dvfl-cache build --views-from`), combined by --teacher-mix.")
    teacher_mix: str = setting(
        "mean-logits", flag="--teacher-mix", choices=TEACHER_MIXES,
        help="How several caches' logits make one target: their mean, or the log of the mean "
             "of their softmax (at tau 1; the student's tau then applies).")
    # which cached views: epoch e replays view (e - 1) mod N of the first N; a run records the
    # N it started with (the cache's V when not given), so an extended cache never changes it
    views_subset: int | None = setting(
        None, flag="--views-subset", low=1,
        help="Train on the first N cached views per video only (reads only their rows). "
             "Default: all the cache's views, recorded with the run so --resume keeps them.")
    # Where a --cache URL lives (endpoint, profile, credentials): may hold secrets, so it is
    # never recorded (to_dict leaves it out) and a resume takes it from the command line again.
    storage_options: dict[str, Any] = setting(default_factory=dict, hash=False)
    teacher: str | None = setting(None, flag="--teacher",
                                  help="Online KD: teacher architecture (default: named by "
                                       "--teacher-weights), or hf:PATH (weights from its "
                                       "folder) / py:MODULE:FUNCTION.")
    teacher_weights: str | None = setting(None, flag="--teacher-weights", path="file",
                                          help="Online KD: the teacher's trained weights "
                                               "(teacher in the loop, no cache).")
    teacher_opts: dict[str, Any] = setting(
        flag="--teacher-opt", key_values=True, default_factory=dict, hash=False,
        help="Override an online teacher's constructor option (repeatable).")
    teacher_input: dict[str, Any] = setting(
        flag="--teacher-input", key_values=True, default_factory=dict, hash=False,
        help="hf:/py: online teachers: the input the model expects (repeatable), as "
             "dvfl-cache build --teacher-input.")
    teacher_classes: str | None = setting(
        None, flag="--teacher-classes", path="file",
        help="hf: online teachers with other labels than the dataset's: JSON file mapping each "
             "dataset class to a teacher label or list of labels, as dvfl-cache build's.")
    # loss
    alpha: float = setting(0.3, flag="--alpha", low=0, high=1,
                           help="Weight of the KD term (0: cross-entropy only).")
    tau: float = setting(10.0, flag="--tau", low=0, low_open=True,
                         help="Distillation temperature.")
    beta: float = setting(0.0, flag="--beta", low=0,
                          help="Weight of the feature term (needs teacher features).")
    label_smoothing: float = setting(0.0, flag="--label-smoothing", low=0, high=1,
                                     high_open=True, help="Label smoothing of the CE term.")
    mixup: float = setting(0.0, flag="--mixup", low=0,
                           help="Mixup Beta parameter (0: off), per row; plain CE or online KD "
                                "(a mixed --cache brings its own mixing).")
    cutmix: float = setting(0.0, flag="--cutmix", low=0,
                            help="Cutmix Beta parameter (0: off); with --mixup each mixed row "
                                 "picks one at even odds.")
    mix_prob: float = setting(1.0, flag="--mix-prob", low=0, high=1,
                              help="Fraction of rows mixed once --mixup or --cutmix is > 0 (1: "
                                   "every row, the reference recipe).")
    # how mixing pairs clips: per row ("row"); "batch" only in configs of round-1 runs
    mix_scheme: str = setting("row")
    # optimisation (LRs quoted for a global batch of 512)
    optimizer: str = setting("sgd", flag="--optimizer", choices=OPTIMIZERS,
                             help="sgd with --momentum (the DVFL-Net recipe) or adamw "
                                  "(Video-FocalNet's; use --weight-decay 0.05 with it).")
    epochs: int = setting(120, flag="--epochs", low=1, help="Training epochs.")
    warmup_epochs: int = setting(20, flag="--warmup-epochs", low=0,
                                 help="Epochs of linear LR warm-up.")
    batch_size: int = setting(24, flag="--batch-size", low=1,
                              help="Global batch over all processes.")
    base_lr: float = setting(0.1, flag="--lr", low=0, low_open=True,
                             help="Base LR for a batch of 512 (scaled linearly with "
                                  "--batch-size).")
    warmup_lr: float = setting(0.001, flag="--warmup-lr", low=0,
                               help="LR at the first warm-up step, for a batch of 512.")
    min_lr: float = setting(0.001, flag="--min-lr", low=0,
                            help="LR at the end of the cosine, for a batch of 512.")
    weight_decay: float = setting(1e-4, flag="--weight-decay", low=0,
                                  help="Weight decay of weights (not norms, biases, "
                                       "layer-scales).")
    momentum: float = setting(0.9, flag="--momentum", low=0, high=1, high_open=True,
                              help="SGD momentum.")
    nesterov: bool = setting(False, flag="--nesterov/--no-nesterov",
                             help="Nesterov momentum for sgd (the reference recipe's).")
    clip_grad: float | None = setting(5.0, flag="--clip-grad", low=0, low_open=True,
                                      help="Max gradient norm.")
    # evaluation during training
    val_every: int = setting(1, flag="--val-every", low=1,
                             help="Epochs between validations (the last always validates).")
    val_subset: int | None = setting(None, flag="--val-subset", low=1,
                                     help="Validate on this many videos, evenly spaced through "
                                          "the index.")
    # validation/test views of test_span frames cut to num_frames, as a student replaying a
    # T-frame teacher's views saw them in training; None = plain num_frames-frame views
    test_span: int | None = setting(
        None, flag="--test-span", low=1, metavar="N",
        help="Validate (and let `eval` test) on N-frame views cut to --frames, the way a "
             "student replaying an N-frame teacher's views sees them; use the teacher's frames "
             "and --sampler-opt stride. Default: plain --frames views.")
    # runtime
    seed: int = setting(0, flag="--seed", low=0,
                        help="Seeds the student's init, drop path and the data order.")
    data_seed: int | None = setting(None)  # data order (views, batches, mixup); None = seed
    workers: int = setting(4, flag="--workers", low=0, help="Decoding processes.")
    device: str = setting("auto", flag="--device", help="auto, cpu, cuda, cuda:N or mps.")
    amp: bool = setting(True, flag="--amp/--no-amp", help="bf16 autocast on CUDA; ignored "
                                                          "elsewhere.")
    max_failed: float = max_failed_setting()
    tensorboard: bool = setting(
        False, flag="--tensorboard/--no-tensorboard",
        help="Also write TensorBoard event files (per student: loss and its parts, learning "
             "rate, top-1, mixed fraction) to OUT/tensorboard beside metrics.jsonl; needs "
             "pip install 'dvfl[tensorboard]'.")
    # loss forms other than dvfl's defaults (dvfl_train.losses)
    kd_form: str = setting(
        "kl", flag="--kd-form", choices=KD_FORMS,
        help="KD term: kl (the true tau-KL) or reference (the published DVFL-Net code's "
             "criterion, softmax where log-softmax belongs; for comparison only).")
    pred_loss: str = setting(
        "kl", flag="--pred-loss", choices=PRED_LOSSES,
        help="How the student matches the teacher's predictions: kl (tau-KL) or mse (squared "
             "distance of the probabilities, as in 'Efficient Video Classification Using Fewer "
             "Frames').")
    rep_loss: str = setting(
        "mean", flag="--rep-loss", choices=REP_LOSSES,
        help="Representation term (--beta): mean over elements, or sum over the feature "
             "dimension per clip (the fewer-frames paper's squared distance).")

    def __post_init__(self) -> None:
        # One cache may be given as a path (or None: no cache), as before ensembles.
        object.__setattr__(self, "cache", tuple(os.fspath(c) for c in cache_paths(self.cache)))

    def scaled_lrs(self) -> tuple[float, float, float]:
        """(base, warm-up, minimum) LR for this run's global batch, by the linear scaling rule."""
        return tuple(scaled_lr(lr, self.batch_size)  # type: ignore[return-value]
                     for lr in (self.base_lr, self.warmup_lr, self.min_lr))

    def mix_config(self, data_seed: int):
        """The run's per-row mixing (``dvfl_cache.data.mix.MixConfig``, seeded by the data
        seed), or None when mixup and cutmix are off or mixing is round 1's per-batch scheme."""
        from dvfl_cache.data.mix import MixConfig

        mix = MixConfig(mixup=self.mixup, cutmix=self.cutmix, prob=self.mix_prob, seed=data_seed)
        return mix if mix.enabled and self.mix_scheme == "row" else None

    def test_view(self):
        """The run's test views (validation, eval, predict): ``dvfl_cache.data.views.TestView``
        of its frames, size, sampler temporal/stride and test span (older configs have them)."""
        from dvfl_cache.data.views import TestView

        return TestView(num_frames=self.num_frames, size=self.size,
                        temporal=str(self.sampler.get("temporal", "segment")),
                        stride=int(self.sampler.get("stride", 4)), span=self.test_span)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with a ``version`` key; ``from_dict`` inverts it exactly."""
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            if f.name in _NOT_RECORDED:
                continue
            value = copy.deepcopy(getattr(self, f.name))
            out[f.name] = list(value) if isinstance(value, tuple) else value  # as JSON has it
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "run config") -> FitConfig:
        """Parse a dict (e.g. a ``config.json``); errors say which field of ``source`` is wrong.

        Types are checked, not coerced (an int is accepted where a float is expected). An older
        ``version`` gets the values that reproduce it for the fields it lacks; a missing one is
        taken as the current version so hand-written configs stay short.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", None)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or not 1 <= version <= CONFIG_VERSION):
            newer = isinstance(version, int) and version > CONFIG_VERSION
            hint = "written by a newer dvfl; upgrade dvfl" if newer else "not a dvfl config"
            raise ConfigError(f"{source}: config version {version!r} is not 1..{CONFIG_VERSION} "
                              f"({hint})")
        for name, (since, old_value) in _ADDED.items():
            if version is not None and version < since:
                if name in data:
                    raise ConfigError(f"{source}: field {name!r} is from config version {since}, "
                                      f"but the file says version {version}")
                data[name] = old_value
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(map(repr, unknown))} "
                              "(written by a newer dvfl? upgrade dvfl)")
        missing = [name for name, f in fields.items() if name not in data
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(map(repr, missing))}")
        if "cache" in data:  # versions 1-2 (and hand-written configs): one path or null
            data["cache"] = cache_paths(data["cache"])
        hints = typing.get_type_hints(cls)
        values = {name: _parse(name, value, hints[name], source) for name, value in data.items()}
        return cls(**values)

    @classmethod
    def from_cli(cls, params: dict[str, Any]) -> FitConfig:
        """The validated config of a command's options (keyword arguments named after fields).

        The only translation from the command line. Two rules need more than a default: the
        dataset kind and root default to those of ``--index``, and an ``alpha`` left unset
        (None) is the recipe's 0.3 when there is a teacher (``cache`` or ``teacher_weights``)
        and 0 (plain cross-entropy) otherwise.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in params.items() if k in names}
        if values.get("train_index") is not None:
            from dvfl_cache.data.index import load_index

            index = load_index(values["train_index"], root=values.get("data_root"))
            values["dataset"] = values.get("dataset") or index.kind
            values["data_root"] = values.get("data_root") or index.root
        if values.get("dataset") is None or values.get("data_root") is None:
            raise ConfigError("name the training videos: --dataset KIND --root DIR, or --index "
                              "FILE.json")
        if values.get("alpha", 0.0) is None:
            teacher = (values.get("cache") or values.get("teacher_weights")
                       or is_foreign(values.get("teacher")))
            values["alpha"] = _FIELDS["alpha"].default if teacher else 0.0
        values["data_root"] = str(values["data_root"])
        values["out_dir"] = str(values["out_dir"])
        for name in ("model", "teacher"):  # an hf: folder, named absolutely like the files
            spec = values.get(name)
            if isinstance(spec, str) and spec.startswith("hf:") and os.path.isdir(spec[3:]):
                values[name] = "hf:" + os.path.abspath(spec[3:])
        for name in PATH_FIELDS:  # a run names its files absolutely: resumable from anywhere
            if isinstance(values.get(name), str):
                values[name] = _absolute(values[name])
            elif name == "cache" and values.get(name) is not None:
                values[name] = tuple(_absolute(os.fspath(c)) for c in cache_paths(values[name]))
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @property
    def online_teacher(self) -> bool:
        """A teacher network runs in the loop: weights given, or an hf:/py: teacher spec."""
        return self.teacher_weights is not None or is_foreign(self.teacher)

    def validate(self) -> None:
        """Refuse contradictions and out-of-range values, listing every problem in one error."""
        problems: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        problems += check_finite(self)  # nan passes every comparison below
        need(bool(self.dataset), "dataset must name a dataset kind")
        need(bool(self.data_root), "data_root must be a path")
        need(bool(self.out_dir), "out_dir must be a path")
        need(self.split >= 1, f"split={self.split} must be >= 1")
        need(self.num_frames >= 1, f"num_frames={self.num_frames} must be >= 1")
        need(self.size >= 1, f"size={self.size} must be >= 1")
        need(bool(self.model), "model must name a registered model")
        need(self.drop_path is None or 0.0 <= self.drop_path < 1.0,
             f"drop_path={self.drop_path} must be in [0, 1)")

        need(0.0 <= self.alpha <= 1.0, f"alpha={self.alpha} must be in [0, 1]")
        need(self.tau > 0.0, f"tau={self.tau} must be > 0")
        need(self.beta >= 0.0, f"beta={self.beta} must be >= 0")
        need(0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        need(self.kd_form in KD_FORMS,
             f"kd_form={self.kd_form!r} must be one of {', '.join(KD_FORMS)}")
        need(self.pred_loss in PRED_LOSSES,
             f"pred_loss={self.pred_loss!r} must be one of {', '.join(PRED_LOSSES)}")
        need(self.rep_loss in REP_LOSSES,
             f"rep_loss={self.rep_loss!r} must be one of {', '.join(REP_LOSSES)}")
        need(self.kd_form != "reference" or self.pred_loss == "kl",
             f"kd_form='reference' is a variant of the KL term; it cannot be combined with "
             f"pred_loss={self.pred_loss!r}")
        need(self.mixup >= 0.0, f"mixup={self.mixup} must be >= 0")
        need(self.cutmix >= 0.0, f"cutmix={self.cutmix} must be >= 0")

        has_teacher = bool(self.cache) or self.online_teacher
        need(self.views_subset is None or bool(self.cache),
             f"views_subset={self.views_subset} needs a cache (--cache)")
        need(len(self.cache) < 2 or self.beta == 0.0,
             f"beta={self.beta} > 0 with {len(self.cache)} caches: the feature term needs one "
             "teacher's features")
        need(not (self.cache and self.online_teacher),
             "cache and an online teacher are both set: choose one source of teacher logits")
        need(self.teacher is None or self.online_teacher,
             f"teacher={self.teacher!r} needs teacher_weights: a teacher must be used with its own "
             "trained weights and head")
        need(self.alpha == 0.0 or has_teacher,
             f"alpha={self.alpha} > 0 needs teacher logits: set cache or teacher_weights, "
             "or alpha=0 for plain cross-entropy")
        need(self.beta == 0.0 or has_teacher,
             f"beta={self.beta} > 0 needs teacher features: set cache or teacher_weights")
        need(0.0 <= self.mix_prob <= 1.0, f"mix_prob={self.mix_prob} must be in [0, 1]")
        # a mix-prob that mixes nothing would be recorded as if it had: refuse it (a cache
        # replays its own mixing, its mix-prob included)
        need(self.mix_prob == 1.0 or self.mixup > 0 or self.cutmix > 0,
             f"mix_prob={self.mix_prob:g} does nothing without mixup or cutmix"
             + ("; a --cache replays its own mixing (its mix-prob included): drop --mix-prob"
                if self.cache else ""))
        need(len(self.cache) >= 2 or self.teacher_mix == _FIELDS["teacher_mix"].default,
             f"teacher_mix={self.teacher_mix!r} combines several caches; "
             f"{len(self.cache)} given")
        repeated = _repeated(self.cache)
        need(not repeated, f"cache {repeated!r} is given twice: an ensemble needs different "
                           "teachers")
        need(self.mix_scheme in MIX_SCHEMES,
             f"mix_scheme={self.mix_scheme!r} must be one of {', '.join(MIX_SCHEMES)}")
        need(self.mix_scheme == "row" or not has_teacher,
             "mix_scheme='batch' (round 1's) mixes plain CE runs only")
        # a cache's own mixing is checked when it is opened (teachers.open_cache)

        need(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        need(0 <= self.warmup_epochs <= self.epochs,
             f"warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs}]")
        need(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        need(self.base_lr > 0.0, f"base_lr={self.base_lr} must be > 0")
        need(self.warmup_lr >= 0.0, f"warmup_lr={self.warmup_lr} must be >= 0")
        need(0.0 <= self.min_lr <= self.base_lr,
             f"min_lr={self.min_lr} must be in [0, base_lr={self.base_lr}]")
        need(self.weight_decay >= 0.0, f"weight_decay={self.weight_decay} must be >= 0")
        need(self.optimizer in OPTIMIZERS,
             f"optimizer={self.optimizer!r} must be one of {', '.join(OPTIMIZERS)}")
        need(0.0 <= self.momentum < 1.0, f"momentum={self.momentum} must be in [0, 1)")
        need(not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0.0),
             f"nesterov needs optimizer=sgd with momentum > 0 (got {self.optimizer}, "
             f"momentum={self.momentum})")
        need(self.clip_grad is None or self.clip_grad > 0.0,
             f"clip_grad={self.clip_grad} must be > 0 (or None for no clipping)")

        need(self.val_every >= 1, f"val_every={self.val_every} must be >= 1")
        need(self.val_subset is None or self.val_subset >= 1,
             f"val_subset={self.val_subset} must be >= 1 (or None for the whole split)")
        need(self.test_span is None or self.test_span >= self.num_frames,
             f"test_span={self.test_span} must be >= num_frames={self.num_frames} (or None)")
        need(self.seed >= 0, f"seed={self.seed} must be >= 0")
        need(self.data_seed is None or self.data_seed >= 0,
             f"data_seed={self.data_seed} must be >= 0 (or None to use seed)")
        need(self.workers >= 0, f"workers={self.workers} must be >= 0")
        need(bool(_DEVICE_RE.match(self.device)),
             f"device={self.device!r} must be auto, cpu, mps, cuda or cuda:N")
        need(not self.teacher_opts or self.online_teacher,
             "teacher_opts only apply to an online teacher (teacher_weights)")
        try:  # numpy only: the sampler options must make a ViewSampler before any data is read
            from dvfl_cache.data.views import ViewSampler

            ViewSampler.from_dict({**self.sampler, "num_frames": self.num_frames})
        except (TypeError, ValueError) as exc:
            problems.append(f"sampler options {self.sampler}: {exc}")
        need(not self.model_input or is_foreign(self.model),
             "model_input applies to hf: and py: students")
        need(not self.teacher_input or is_foreign(self.teacher),
             "teacher_input applies to hf: and py: online teachers")
        need(self.teacher_classes is None or is_foreign(self.teacher),
             "teacher_classes applies to hf: online teachers")
        for name in ("sampler", "model_opts", "teacher_opts", "storage_options", "model_input",
                     "teacher_input"):
            try:
                json.dumps(getattr(self, name), allow_nan=False)
            except (TypeError, ValueError) as exc:
                problems.append(f"{name} must be JSON-able ({exc})")

        if problems:
            raise ConfigError(f"invalid run config for {self.out_dir}: " + "; ".join(problems))


_FIELDS = {f.name: f for f in dataclasses.fields(FitConfig)}


def _repeated(paths: tuple[str, ...]) -> str | None:
    """The first of ``paths`` that names a store given before it (resolved, for local ones)."""
    seen = set()
    for p in paths:
        key = p if "://" in p else os.path.realpath(p)
        if key in seen:
            return p
        seen.add(key)
    return None


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _same_file(old: Any, new: Any, name: str) -> bool:
    """Two spellings of one input: equal resolved paths, or (moved data) the same content
    identity: an index's digest, a cache's metadata."""
    if old == new:
        return True
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    if "://" not in old + new and os.path.realpath(old) == os.path.realpath(new):
        return True
    try:
        if name in ("train_index", "val_index"):
            from dvfl_cache.data.index import load_index

            return load_index(old).digest == load_index(new).digest
        if name == "cache":
            from dvfl_cache.cache.store import CacheReader

            with CacheReader(old) as a, CacheReader(new) as b:  # same but for provenance
                return not a.meta.differences(b.meta)
    except (DvflError, OSError):
        return False
    return False


def resume_differences(old: dict[str, Any], new: dict[str, Any], *,
                       ignore: frozenset[str] = frozenset()) -> list[str]:
    """The settings in which ``new`` computes something else than the stored ``old``, as
    'name: old -> new'. Paths are compared resolved (another working directory, absolute vs
    relative), so only a real change of inputs or settings stops a resume."""
    skip = RESUMABLE_CHANGES | ignore
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if k == "cache":  # one path or null (versions 1-2), or a list; same files in order
            a, b = cache_paths(a), cache_paths(b)
            if len(a) == len(b) and all(_same_file(x, y, k) for x, y in zip(a, b)):
                continue
        if k in skip or a == b:
            continue
        if k in PATH_FIELDS and _same_file(a, b, k):
            continue
        out.append(f"{k}: {a!r} -> {b!r}")
    return out


def cache_paths(value: Any) -> Any:
    """The ``cache`` field as a list: a single path (as versions 1-2 stored it) is a list of
    one, null none; anything else is returned as it is, for the type check to name."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return list(value) if isinstance(value, tuple) else value


def load_config(path: str | Path) -> FitConfig:
    """Read a ``config.json``; a missing or malformed file is an error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    return FitConfig.from_dict(data, source=str(path))


def _parse(name: str, value: Any, hint: Any, source: str) -> Any:
    parsed = _convert(value, hint)
    if parsed is _BAD:
        raise ConfigError(f"{source}: field {name!r} expects {_describe(hint)}, "
                          f"found {value!r} ({type(value).__name__})")
    return parsed


_BAD = object()


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (ints widen to float), or ``_BAD``; bools are never numbers."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, inner)
    if hint is bool:
        return value if isinstance(value, bool) else _BAD
    if isinstance(value, bool):
        return _BAD
    if hint is int:
        return value if isinstance(value, int) else _BAD
    if hint is float:
        return float(value) if isinstance(value, (int, float)) else _BAD
    if hint is str:
        return value if isinstance(value, str) else _BAD
    if (origin is tuple and isinstance(value, (list, tuple))
            and typing.get_args(hint)[1:] == (Ellipsis,)):
        items = [_convert(v, typing.get_args(hint)[0]) for v in value]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    if origin is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return copy.deepcopy(value)
    return _BAD


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        return "an object with string keys"
    if typing.get_origin(hint) is tuple:
        return "a list of strings (or one string)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, str(hint))
