"""One student of a run: its network, optimizer, random stream and optimizer step.

Why this shape:
- ``StudentSpec`` holds only what differs between the students of one run (loss weights and
  forms, init seed, run directory); everything else is the shared ``FitConfig``, so
  ``spec.config(shared)`` is the student's own reproducible config.
- Each student owns its drop-path random stream (``_RngSlot``), swapped in around its steps:
  students sharing a process would otherwise shift each other's masks, and a student trained in
  a sweep would differ from the same student trained alone.
- The feature term's projection rides beside the network (``StudentNet``), so checkpoints hold
  a plain model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dvfl_train.checkpoint import RunDir
from dvfl_train.config import ConfigError, FitConfig
from dvfl_train.losses import kd_loss
from dvfl_train.schedule import build_optimizer, set_lr

__all__ = ["Student", "StudentNet", "StudentSpec", "build_student", "clip_grad_norm", "derive_seed",
           "train_step"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentSpec:
    """What differs between the students of one run: loss weights and forms, init seed, run
    directory."""

    alpha: float
    tau: float
    beta: float
    seed: int
    out_dir: str
    name: str = ""  # for progress lines; default: the run directory's name
    # loss forms (FitConfig.pred_loss / rep_loss); None keeps the shared config's, so students of
    # one pass may compare the forms side by side
    pred_loss: str | None = None
    rep_loss: str | None = None

    @property
    def label(self) -> str:
        return self.name or Path(self.out_dir).name

    def config(self, cfg: FitConfig) -> FitConfig:
        """The student's own FitConfig (its config.json): reproduces it alone, data order too."""
        data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
        forms = {name: value for name, value in (("pred_loss", self.pred_loss),
                                                 ("rep_loss", self.rep_loss)) if value is not None}
        return dataclasses.replace(cfg, alpha=self.alpha, tau=self.tau, beta=self.beta,
                                   seed=self.seed, out_dir=str(self.out_dir),
                                   data_seed=None if data_seed == self.seed else data_seed,
                                   **forms)


class StudentNet(nn.Module):
    """The network plus, for the feature term, the projection to the teacher's width.

    The projection is trained with the student but is not part of the network, so ``best.pt``
    still loads as a plain model; it is saved beside it as ``projector``.
    """

    def __init__(self, net: nn.Module, feature_dim: int | None = None):
        super().__init__()
        self.net = net
        self.proj = nn.Linear(net.num_features, feature_dim) if feature_dim else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.proj is None:
            return self.net(x), None
        features = self.net.forward_features(x)
        return self.net.forward_head(features), self.proj(features)


class _RngSlot:
    """A student's own torch random stream (drop path), swapped in around its steps.

    Students share the process's default generators, so without this one student's steps would
    shift another's drop-path masks, and a student trained in a sweep would differ from the same
    student trained alone.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def reseed(self, seed: int) -> None:
        with self.active():
            torch.default_generator.manual_seed(seed)
            if self.cuda is not None:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(seed)

    @contextmanager
    def active(self) -> Iterator[None]:
        outer_cpu = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state(self.device) if self.cuda is not None else None
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            torch.set_rng_state(outer_cpu)
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer_cuda, self.device)


@dataclass(eq=False)
class Student:
    """One student's state during training."""

    spec: StudentSpec
    cfg: FitConfig
    model: nn.Module               # the one handle: StudentNet, DDP-wrapped when data-parallel
    optimizer: torch.optim.Optimizer
    rng: _RngSlot
    run: RunDir | None = None      # rank 0 only
    done: int = 0                  # finished epochs
    step: int = 0                  # optimizer steps taken
    best: float | None = None
    best_epoch: int | None = None
    train_time: float = 0.0
    window: torch.Tensor | None = None   # sums since the last step record
    totals: torch.Tensor | None = None   # sums over the epoch
    lr: float = 0.0
    last_record: dict[str, Any] | None = None
    session_epochs: int = 0        # epochs trained by this call
    nonfinite: torch.Tensor | None = None  # (step, loss) of the epoch's first non-finite loss
    diverged: dict[str, Any] | None = None  # where the loss stopped being finite: it stopped

    @property
    def parts(self) -> StudentNet:
        """The network and its projection, under any DDP wrapper."""
        return getattr(self.model, "module", self.model)

    @property
    def net(self) -> nn.Module:
        """The bare network: what checkpoints hold and validation scores."""
        return self.parts.net


def derive_seed(*key: int) -> int:
    """A 63-bit seed from integer keys (a SeedSequence), for per-(seed, epoch, rank) streams."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0] >> 1)


def build_student(cfg: FitConfig, spec: StudentSpec, *, num_classes: int, device: torch.device,
                  feature_dim: int | None = None, load_init: bool = True) -> Student:
    """The student's network (init seeded by ``spec.seed``, then ``cfg.init`` if set and
    ``load_init``) and optimizer, on ``device``; no run directory yet. ``cfg`` is the student's
    own config (``spec.config(shared)``)."""
    from dvfl_cache.models.load import load_model
    from dvfl_cache.models.registry import is_foreign

    foreign = is_foreign(cfg.model)
    if foreign:  # hf:/py:: the run's geometry, the options are the model's own (config, kwargs)
        opts: dict[str, Any] = dict(cfg.model_opts)
        if cfg.drop_path is not None:
            raise ConfigError(f"{spec.out_dir}: --drop-path applies to the Video-FocalNet "
                              f"family; set {cfg.model}'s own option with --model-opt")
    else:
        opts = {"num_classes": num_classes, "num_frames": cfg.num_frames, "img_size": cfg.size}
        if cfg.drop_path is not None:
            opts["drop_path_rate"] = cfg.drop_path
        opts.update(cfg.model_opts)
    init = cfg.init if load_init else None
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(spec.seed)
        try:
            net = load_model(cfg.model, options=opts, pretrained=False, num_classes=num_classes,
                             num_frames=cfg.num_frames, size=cfg.size,
                             clip_input=cfg.model_input or None).model
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{spec.out_dir}: cannot build student {cfg.model}: {exc}") from None
        student_net = StudentNet(net, feature_dim if spec.beta > 0 else None)
    if net.num_frames != cfg.num_frames or net.num_classes != num_classes:
        raise ConfigError(f"{spec.out_dir}: model options give {net.num_frames} frames and "
                          f"{net.num_classes} classes; the run needs {cfg.num_frames} and "
                          f"{num_classes} (set them with --frames, not --model-opt)")
    if init is not None:
        if foreign:
            from dvfl_cache.models.load import load_state

            summary = load_state(net, init, fresh_head=True, prefix="net.")
        else:
            from dvfl_cache.models import load_pretrained

            summary = load_pretrained(net, init, fresh_head=True).summary()
        log.info("%s: init %s", spec.label, summary)
    student_net.to(device)
    optimizer = build_optimizer(student_net, lr=cfg.scaled_lrs()[1],
                                weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, name=cfg.optimizer)
    return Student(spec=spec, cfg=cfg, model=student_net, optimizer=optimizer,
                   rng=_RngSlot(device))


def train_step(student: Student, clip: torch.Tensor, target: torch.Tensor, *,
               teacher_logits: torch.Tensor | None, teacher_features: torch.Tensor | None = None,
               lr: float, weight: float = 1.0, amp: bool = False,
               label_smoothing: float | None = None
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer step of one student; returns the (detached) loss parts and logits.

    ``weight`` scales the loss before backward: a rank's share of the global batch under DDP.
    ``label_smoothing`` overrides the config's: 0 for soft targets smoothed already (mixed
    rows, whose one-hots are smoothed before mixing).
    """
    cfg = student.cfg
    set_lr(student.optimizer, lr)
    student.optimizer.zero_grad(set_to_none=True)
    with student.rng.active():
        with torch.autocast(clip.device.type, dtype=torch.bfloat16,
                            enabled=amp and clip.device.type == "cuda"):
            logits, features = student.model(clip)
        use_feat = cfg.beta > 0
        smoothing = cfg.label_smoothing if label_smoothing is None else label_smoothing
        parts = kd_loss(logits, teacher_logits, target, cfg.alpha, cfg.tau,
                        smoothing, beta=cfg.beta,
                        student_features=features if use_feat else None,
                        teacher_features=teacher_features if use_feat else None,
                        kd_form=cfg.kd_form, pred_loss=cfg.pred_loss, rep_loss=cfg.rep_loss)
        (parts["loss"] * weight).backward()
    if cfg.clip_grad is not None:
        clip_grad_norm(student.model.parameters(), cfg.clip_grad)
    student.optimizer.step()
    student.step += 1
    return {k: v.detach() for k, v in parts.items()}, logits.detach()


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, bit for bit, minus its no-op pass on the CPU.

    torch always multiplies every gradient by min(1, max_norm / (norm + 1e-6)) so that a GPU
    never waits for the norm; multiplying by 1.0 changes nothing but still reads and writes
    every gradient (88 MB for the nano). On the CPU the comparison costs nothing, so the
    multiply runs only when it clips, or when the norm is not finite (torch's NaN factor then
    reaches every gradient, and so it does here). Returns the total norm, as torch does.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params or params[0].grad.device.type != "cpu":
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.nn.utils.get_total_norm([p.grad for p in params])
    if not bool(max_norm / (total + 1e-6) >= 1.0):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
