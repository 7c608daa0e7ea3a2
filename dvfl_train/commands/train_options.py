"""Click options shared by `dvfl-train fit` and `dvfl-train sweep`, and the FitConfig they make.

Both commands train students on the same data with the same schedule; only what varies per
student (alpha, tau, seed) and the run-directory flags differ. The options are derived from
FitConfig's fields (``options_from``) and a command's keyword arguments are the field names, so
``FitConfig.from_cli`` is the only translation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from dvfl_cache.commands.options import (check_model_options, group, options_from,
                                         storage_option, storage_options_from, threads_option)
from dvfl_train.config import FitConfig

__all__ = ["EpochProgress", "LOSS_SCHEDULE", "RUNTIME", "DATA_MODEL", "data_model_options",
           "fit_config", "loss_schedule_options", "runtime_options"]

# FitConfig fields shared by `fit` and `sweep`, in --help order. The options themselves
# (names, defaults, help, choices, ranges) come from the fields' metadata in config.py.
DATA_MODEL = ("dataset", "data_root", "split", "train_index", "val_index", "val_subset",
              "val_every", "test_span", "model", "model_opts", "model_input", "init", "drop_path",
              "num_frames", "size", "sampler", "cache", "teacher_mix", "views_subset", "teacher",
              "teacher_weights", "teacher_opts", "teacher_input", "teacher_classes")
LOSS_SCHEDULE = ("beta", "kd_form", "pred_loss", "rep_loss", "label_smoothing", "mixup", "cutmix",
                 "mix_prob", "epochs", "warmup_epochs",
                 "batch_size", "base_lr", "warmup_lr", "min_lr", "optimizer", "momentum",
                 "nesterov", "weight_decay", "clip_grad")
RUNTIME = ("workers", "device", "amp", "max_failed", "tensorboard")

# --storage-option (build's and info's declaration) follows --cache: where a URL cache lives
data_model_options = group(options_from(FitConfig, DATA_MODEL), storage_option)
loss_schedule_options = options_from(FitConfig, LOSS_SCHEDULE)
runtime_options = group(options_from(FitConfig, RUNTIME), threads_option)


def fit_config(settings: dict[str, Any]) -> FitConfig:
    """The validated FitConfig of a command's options; model options of the wrong name or type,
    and a --teacher-mix given without an ensemble to combine, are a usage error of their flag
    before anything is built."""
    _hf_student_geometry(settings)
    check_model_options(settings["model"], settings["model_opts"], "--model-opt")
    ctx = click.get_current_context(silent=True)
    explicit = ctx is not None and ctx.get_parameter_source("teacher_mix") not in (
        None, click.core.ParameterSource.DEFAULT)
    if explicit and len(settings.get("cache") or ()) < 2:  # FitConfig sees only the default
        raise click.BadParameter(f"combines the logits of several --cache stores; "
                                 f"{len(settings.get('cache') or ())} given",
                                 param_hint="--teacher-mix")
    if settings.get("teacher"):
        check_model_options(settings["teacher"], settings["teacher_opts"], "--teacher-opt")
    storage = storage_options_from(settings.pop("storage_opts", ()))
    return FitConfig.from_cli({**settings, "storage_options": storage or {}})


def _hf_student_geometry(settings: dict[str, Any]) -> None:
    """An hf: student's config gives the defaults of --frames and --size (given values, and a
    recipe's, are kept): the model is built at them."""
    model = settings.get("model")
    ctx = click.get_current_context(silent=True)
    if not (isinstance(model, str) and model.startswith("hf:")) or ctx is None:
        return
    from dvfl_cache.models.load import preview_input

    own = preview_input(model)
    defaults = {f.name: f.default for f in dataclasses.fields(FitConfig)}
    for key, value in (("num_frames", own.frames), ("size", own.size)):
        if (key in settings and settings[key] == defaults[key]
                and ctx.get_parameter_source(key) == click.core.ParameterSource.DEFAULT):
            settings[key] = value


def epoch_line(record: dict[str, Any], *, epochs: int) -> str:
    """One line per epoch: losses, LR, accuracy, throughput, and anything skipped."""
    parts = [f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f} "
             f"(kd {record['kd']:.4f}, ce {record['ce']:.4f}"
             + (f", feat {record['feat']:.4f}" if "feat" in record else "") + ")",
             f"lr {record['lr']:.3g}", f"train top-1 {100 * record['train_top1']:.1f}%"]
    if "val_top1" in record:
        parts.append(f"val top-1 {100 * record['val_top1']:.2f}% top-5 "
                     f"{100 * record['val_top5']:.2f}%" + (" (best)" if record.get("best")
                                                           else ""))
    if "mixed" in record:
        parts.append(f"mixed {100 * record['mixed']:.0f}% of clips (cutmix "
                     f"{100 * record['cutmix_share']:.0f}% of those)")
    parts.append(f"{record['clips_per_s']:.1f} clips/s")
    if record["failed"] or record["invalid_views"]:
        parts.append(f"skipped {record['failed']} undecodable + {record['invalid_views']} "
                     "invalid cached view(s)")
    return ", ".join(parts)


class EpochProgress:
    """The training part of a command's output: a tqdm bar per epoch, then one line per student
    (prefixed with its name when `named`); silent on ranks other than 0."""

    def __init__(self, *, enabled: bool, named: bool):
        self.enabled, self.named = enabled, named
        self.bar = None

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc) -> None:
        """An error or Ctrl-C mid-epoch: clear the bar so the error line stands alone."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if event.kind == "epoch_start":
            from tqdm import tqdm

            self.bar = tqdm(total=event.steps, desc=f"epoch {event.epoch}/{event.epochs}",
                            unit="batch", leave=False, dynamic_ncols=True)
        elif event.kind == "step" and self.bar is not None:
            self.bar.update(1)
        elif event.kind == "epoch_end":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            for name, record in event.records.items():
                line = epoch_line(record, epochs=event.epochs)
                click.echo(f"{name}: {line}" if self.named else line)
