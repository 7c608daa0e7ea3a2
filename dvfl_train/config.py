"""FitConfig: everything needed to reproduce one student training run, as one frozen record.

A run directory stores it as ``config.json`` (``to_dict``), and a resumed or repeated run reads it
back with ``from_dict``, which names the field at fault. ``validate`` refuses combinations that
cannot mean what the user hopes, before any data is touched.

Defaults follow the DVFL-Net recipe and its released UCF101 configs: SGD, base LR 0.1 and warm-up
LR 0.001 (quoted for a global batch of 512 and scaled linearly), 120 epochs with 20 of warm-up,
weight decay 1e-4, gradient clipping at norm 5, alpha 0.3 and tau 10. The minimum LR defaults to
0.001 (the released configs' MIN_LR, scaled like the others) so the cosine ends where the
warm-up began. ``batch_size`` is the *global* batch over all processes. Mixup and cutmix default
to off: a mixed clip has no cached teacher logits, so they only apply to plain CE training.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvfl_cache.errors import DvflError

from dvfl_train.losses import KD_FORMS, PRED_LOSSES, REP_LOSSES
from dvfl_train.schedule import OPTIMIZERS, scaled_lr

__all__ = ["CONFIG_VERSION", "ConfigError", "FitConfig", "load_config"]

CONFIG_VERSION = 1

# Fields that may change when a run is resumed without changing what it computes.
RESUMABLE_CHANGES = frozenset({"workers", "device", "out_dir"})

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(DvflError):
    """A run configuration that is malformed or self-contradictory."""


@dataclass(frozen=True)
class FitConfig:
    """One student training run. Paths are stored as given (str), so the record stays JSON."""

    # data
    dataset: str                      # dataset kind, as DatasetIndex.kind ("ucf101", ...)
    data_root: str
    out_dir: str                      # the run directory
    split: int = 1
    train_index: str | None = None    # a saved DatasetIndex; None = build from data_root
    val_index: str | None = None
    num_frames: int = 8
    size: int = 224
    sampler: dict[str, Any] = field(default_factory=dict, hash=False)  # ViewSampler overrides
    # student
    model: str = "vfl-nano"
    model_opts: dict[str, Any] = field(default_factory=dict, hash=False)
    drop_path: float | None = None    # None = the model's default
    init: str | None = None           # initial weights (e.g. ImageNet FocalNet), None = random
    # teacher: a cache, or a model run online; neither for plain CE training
    cache: str | None = None
    teacher: str | None = None        # registry name; None = taken from teacher_weights
    teacher_weights: str | None = None
    teacher_opts: dict[str, Any] = field(default_factory=dict, hash=False)  # online teacher
    # loss
    alpha: float = 0.3
    tau: float = 10.0
    beta: float = 0.0                 # representation term (fewer-frames recipe)
    label_smoothing: float = 0.0
    mixup: float = 0.0                # Beta(mixup, mixup) mixing; 0 = off
    cutmix: float = 0.0
    # optimisation (LRs quoted for a global batch of 512)
    optimizer: str = "sgd"            # sgd (the DVFL-Net recipe) | adamw (Video-FocalNet's)
    epochs: int = 120
    warmup_epochs: int = 20
    batch_size: int = 24
    base_lr: float = 0.1
    warmup_lr: float = 0.001
    min_lr: float = 0.001
    weight_decay: float = 1e-4
    momentum: float = 0.9
    clip_grad: float | None = 5.0     # max gradient norm; None = no clipping
    # evaluation during training
    val_every: int = 1                # epochs between validations
    val_subset: int | None = None     # validate on this many videos; None = all
    # validation/test views of test_span frames cut to num_frames, as a student replaying a
    # T-frame teacher's views saw them in training; None = plain num_frames-frame views
    test_span: int | None = None
    # runtime
    seed: int = 0                     # model init, drop path, and the data order by default
    data_seed: int | None = None      # data order (views, batches, mixup); None = seed
    workers: int = 4
    device: str = "auto"              # auto | cpu | cuda | cuda:N | mps
    amp: bool = True                  # bf16 autocast on CUDA; ignored elsewhere
    # loss forms other than dvfl's defaults (dvfl_train.losses); declared last so that the
    # derived CLI and older config.json files pick them up with today's behaviour
    kd_form: str = field(default="kl", metadata={"help": (
        "KD term: kl (the true tau-KL) or reference (the published DVFL-Net code's criterion, "
        "softmax where log-softmax belongs; for comparison only, never the default).")})
    pred_loss: str = field(default="kl", metadata={"help": (
        "How the student matches the teacher's predictions: kl (tau-KL) or mse (squared "
        "distance of the probabilities, as in 'Efficient Video Classification Using Fewer "
        "Frames').")})
    rep_loss: str = field(default="mean", metadata={"help": (
        "Representation term (beta): mean over elements, or sum over the feature dimension "
        "per clip (the fewer-frames paper's squared distance).")})

    def scaled_lrs(self) -> tuple[float, float, float]:
        """(base, warm-up, minimum) LR for this run's global batch, by the linear scaling rule."""
        return tuple(scaled_lr(lr, self.batch_size)  # type: ignore[return-value]
                     for lr in (self.base_lr, self.warmup_lr, self.min_lr))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with a ``version`` key; ``from_dict`` inverts it exactly."""
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            out[f.name] = copy.deepcopy(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "run config") -> FitConfig:
        """Parse a dict (e.g. a ``config.json``); errors say which field of ``source`` is wrong.

        Types are checked, not coerced (an int is accepted where a float is expected). A missing
        ``version`` is taken as the current one so hand-written configs stay short.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            newer = isinstance(version, int) and version > CONFIG_VERSION
            hint = "written by a newer dvfl; upgrade dvfl" if newer else "not a dvfl config"
            raise ConfigError(f"{source}: config version {version!r} is not {CONFIG_VERSION} "
                              f"({hint})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(map(repr, unknown))}")
        missing = [name for name, f in fields.items() if name not in data
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(map(repr, missing))}")
        hints = typing.get_type_hints(cls)
        values = {name: _parse(name, value, hints[name], source) for name, value in data.items()}
        return cls(**values)

    def validate(self) -> None:
        """Refuse contradictions and out-of-range values, listing every problem in one error."""
        problems: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

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

        has_teacher = self.cache is not None or self.teacher_weights is not None
        need(not (self.cache is not None and self.teacher_weights is not None),
             "cache and teacher_weights are both set: choose one source of teacher logits")
        need(self.teacher is None or self.teacher_weights is not None,
             f"teacher={self.teacher!r} needs teacher_weights: a teacher must be used with its own "
             "trained weights and head")
        need(self.alpha == 0.0 or has_teacher,
             f"alpha={self.alpha} > 0 needs teacher logits: set cache or teacher_weights, "
             "or alpha=0 for plain cross-entropy")
        need(self.beta == 0.0 or has_teacher,
             f"beta={self.beta} > 0 needs teacher features: set cache or teacher_weights")
        need(not ((self.mixup > 0.0 or self.cutmix > 0.0) and has_teacher),
             "mixup/cutmix cannot be combined with a cache or teacher: mixed clips have no cached "
             "logits (set mixup=0 and cutmix=0, or train without a teacher)")

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
        need(not self.teacher_opts or self.teacher_weights is not None,
             "teacher_opts only apply to an online teacher (teacher_weights)")
        for name in ("sampler", "model_opts", "teacher_opts"):
            try:
                json.dumps(getattr(self, name), allow_nan=False)
            except (TypeError, ValueError) as exc:
                problems.append(f"{name} must be JSON-able ({exc})")

        if problems:
            raise ConfigError(f"invalid run config for {self.out_dir}: " + "; ".join(problems))


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
    if origin is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return copy.deepcopy(value)
    return _BAD


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        return "an object with string keys"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, str(hint))
