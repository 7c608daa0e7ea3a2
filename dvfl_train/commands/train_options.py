"""Click options shared by `dvfl-train fit` and `dvfl-train sweep`, and the FitConfig they make.

Both commands train students on the same data with the same schedule; only what varies per
student (alpha, tau, seed) and the run-directory flags differ. Keeping the shared options in one
place keeps their names, defaults and help identical in both commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from dvfl_cache.commands.data import KINDS
from dvfl_cache.commands.options import parse_key_values, threads_option
from dvfl_cache.models.registry import MODEL_NAMES

__all__ = ["DEFAULTS", "data_model_options", "fit_config", "loss_schedule_options",
           "runtime_options"]

# Mirrors FitConfig's defaults (importing it would import torch and slow down --help); a test
# keeps the two in step.
DEFAULTS: dict[str, Any] = dict(
    split=1, num_frames=8, size=224, model="vfl-nano", alpha=0.3, tau=10.0, beta=0.0,
    label_smoothing=0.0, mixup=0.0, cutmix=0.0, epochs=120, warmup_epochs=20, batch_size=24,
    base_lr=0.1, optimizer="sgd", weight_decay=1e-4, clip_grad=5.0, val_every=1, seed=0, workers=4,
    device="auto", amp=True)


def _file(**kw: Any) -> click.Path:
    return click.Path(exists=True, dir_okay=False, **kw)


def _group(*options: Callable) -> Callable:
    """One decorator applying ``options`` in the order listed (as they appear in --help)."""
    def decorate(f: Callable) -> Callable:
        for opt in reversed(options):
            f = opt(f)
        return f
    return decorate


data_model_options = _group(
    click.option("--dataset", "kind", type=click.Choice(KINDS), default=None,
                 help="Dataset kind; its split's train/test lists under --root give the videos."),
    click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Dataset folder (or where the videos of --index now are)."),
    click.option("--split", type=int, default=DEFAULTS["split"], show_default=True),
    click.option("--index", "index_path", type=_file(), default=None,
                 help="Training index JSON (`dvfl-cache index`) instead of the split's train "
                      "list."),
    click.option("--val-index", type=_file(), default=None,
                 help="Validation index JSON; default: the split's test list, as the paper "
                      "does."),
    click.option("--val-subset", type=click.IntRange(1), default=None,
                 help="Validate on this many videos, evenly spaced through the index."),
    click.option("--val-every", type=click.IntRange(1), default=DEFAULTS["val_every"],
                 show_default=True,
                 help="Epochs between validations (the last always validates)."),
    click.option("--test-span", type=click.IntRange(1), default=None, metavar="N",
                 help="Validate (and let `eval` test) on N-frame views cut to --frames, the "
                      "way a student replaying an N-frame teacher's views sees them; use the "
                      "teacher's frames and --sampler-opt stride. Default: plain --frames "
                      "views."),
    click.option("--model", type=click.Choice(MODEL_NAMES), default=DEFAULTS["model"],
                 show_default=True, help="Student architecture."),
    click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE",
                 help="Override a student constructor option (repeatable), e.g. embed_dim=32."),
    click.option("--init", type=_file(), default=None,
                 help="Initial weights: ImageNet FocalNet, Video-FocalNet or dvfl checkpoint "
                      "(fresh classifier head)."),
    click.option("--drop-path", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="Stochastic depth rate (default: the model's, 0.2 for vfl-nano)."),
    click.option("--frames", "num_frames", type=click.IntRange(1),
                 default=DEFAULTS["num_frames"], show_default=True,
                 help="Frames per student clip (fewer than the cache's: subsampled from the "
                      "same views)."),
    click.option("--size", type=click.IntRange(8), default=DEFAULTS["size"], show_default=True,
                 help="Student input resolution (square)."),
    click.option("--sampler-opt", "sampler_opts", multiple=True, metavar="KEY=VALUE",
                 help="ViewSampler option for fresh views and validation (repeatable), e.g. "
                      "temporal=stride, flip=0."),
    click.option("--cache", default=None, help="Teacher-logit cache: directory, .zip or URL."),
    click.option("--teacher", default=None,
                 help="Online KD: teacher architecture (default: named by --teacher-weights)."),
    click.option("--teacher-weights", type=_file(), default=None,
                 help="Online KD: the teacher's trained weights (teacher in the loop, no "
                      "cache)."),
    click.option("--teacher-opt", "teacher_opts", multiple=True, metavar="KEY=VALUE",
                 help="Override an online teacher's constructor option (repeatable)."),
)

loss_schedule_options = _group(
    click.option("--beta", type=click.FloatRange(0), default=DEFAULTS["beta"],
                 show_default=True, help="Weight of the feature term (needs teacher features)."),
    click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True),
                 default=DEFAULTS["label_smoothing"], show_default=True),
    click.option("--mixup", type=click.FloatRange(0), default=DEFAULTS["mixup"],
                 show_default=True, help="Mixup Beta parameter (0: off; CE-only runs)."),
    click.option("--cutmix", type=click.FloatRange(0), default=DEFAULTS["cutmix"],
                 show_default=True, help="Cutmix Beta parameter (0: off; CE-only runs)."),
    click.option("--epochs", type=click.IntRange(1), default=DEFAULTS["epochs"],
                 show_default=True),
    click.option("--warmup-epochs", type=click.IntRange(0), default=DEFAULTS["warmup_epochs"],
                 show_default=True),
    click.option("--batch-size", type=click.IntRange(1), default=DEFAULTS["batch_size"],
                 show_default=True, help="Global batch over all processes."),
    click.option("--lr", "base_lr", type=click.FloatRange(0, min_open=True),
                 default=DEFAULTS["base_lr"], show_default=True,
                 help="Base LR for a batch of 512 (scaled linearly with --batch-size)."),
    # the choices mirror dvfl_train.schedule.OPTIMIZERS (importing it would import torch)
    click.option("--optimizer", type=click.Choice(["sgd", "adamw"]),
                 default=DEFAULTS["optimizer"], show_default=True,
                 help="sgd with momentum 0.9 (the DVFL-Net recipe) or adamw (Video-FocalNet's; "
                      "use --weight-decay 0.05 with it)."),
    click.option("--weight-decay", type=click.FloatRange(0), default=DEFAULTS["weight_decay"],
                 show_default=True),
    click.option("--clip-grad", type=click.FloatRange(0, min_open=True),
                 default=DEFAULTS["clip_grad"], show_default=True, help="Max gradient norm."),
)

runtime_options = _group(
    click.option("--workers", type=click.IntRange(0), default=DEFAULTS["workers"],
                 show_default=True, help="Decoding processes."),
    click.option("--device", default=DEFAULTS["device"], show_default=True,
                 help="auto, cpu, cuda, cuda:N or mps."),
    threads_option,
    click.option("--no-amp", is_flag=True, help="No bf16 autocast on CUDA."),
)


def fit_config(*, out_dir: str, alpha: float, tau: float, seed: int, kind: str | None,
               root: str | None, split: int, index_path: str | None, val_index: str | None,
               val_subset: int | None, val_every: int, test_span: int | None, model: str,
               model_opts: tuple[str, ...],
               init: str | None, drop_path: float | None, num_frames: int, size: int,
               sampler_opts: tuple[str, ...], cache: str | None, teacher: str | None,
               teacher_weights: str | None, teacher_opts: tuple[str, ...], beta: float,
               label_smoothing: float, mixup: float, cutmix: float, epochs: int,
               warmup_epochs: int, batch_size: int, base_lr: float, optimizer: str,
               weight_decay: float, clip_grad: float, workers: int, device: str, no_amp: bool):
    """The validated FitConfig of the shared options (kind and root default to the --index's)."""
    from dvfl_train.config import FitConfig

    if index_path is not None:
        from dvfl_cache.data.index import load_index

        index = load_index(index_path, root=root)
        kind, root = kind or index.kind, root or index.root
    if kind is None or root is None:
        raise click.UsageError("name the training videos: --dataset KIND --root DIR, or --index "
                               "FILE.json")
    cfg = FitConfig(
        dataset=kind, data_root=str(root), out_dir=str(out_dir), split=split,
        train_index=index_path, val_index=val_index, num_frames=num_frames, size=size,
        sampler=parse_key_values(sampler_opts, "--sampler-opt"), model=model,
        model_opts=parse_key_values(model_opts, "--model-opt"), drop_path=drop_path, init=init,
        cache=cache, teacher=teacher, teacher_weights=teacher_weights,
        teacher_opts=parse_key_values(teacher_opts, "--teacher-opt"), alpha=alpha, tau=tau,
        beta=beta, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, epochs=epochs,
        warmup_epochs=warmup_epochs, batch_size=batch_size, base_lr=base_lr,
        optimizer=optimizer, weight_decay=weight_decay, clip_grad=clip_grad, val_every=val_every,
        val_subset=val_subset, test_span=test_span, seed=seed, workers=workers, device=device,
        amp=not no_amp)
    cfg.validate()
    return cfg


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
