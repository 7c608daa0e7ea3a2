"""`dvfl-train fit`: train a student from a teacher cache, an online teacher, or labels alone."""

from __future__ import annotations

from typing import Any

import click

from dvfl_cache.commands.data import KINDS
from dvfl_cache.commands.options import parse_key_values
from dvfl_cache.models.registry import MODEL_NAMES

# Mirrors FitConfig's defaults (importing it would import torch and slow down --help); a test
# keeps the two in step.
DEFAULTS: dict[str, Any] = dict(
    split=1, num_frames=8, size=224, model="vfl-nano", alpha=0.3, tau=10.0, beta=0.0,
    label_smoothing=0.0, mixup=0.0, cutmix=0.0, epochs=120, warmup_epochs=20, batch_size=24,
    base_lr=0.1, weight_decay=1e-4, clip_grad=5.0, val_every=1, seed=0, workers=4,
    device="auto", amp=True)


def _file(**kw: Any) -> click.Path:
    return click.Path(exists=True, dir_okay=False, **kw)


@click.command("fit")
@click.option("--dataset", "kind", type=click.Choice(KINDS), default=None,
              help="Dataset kind; its split's train/test lists under --root give the videos.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Dataset folder (or where the videos of --index now are).")
@click.option("--split", type=int, default=DEFAULTS["split"], show_default=True)
@click.option("--index", "index_path", type=_file(), default=None,
              help="Training index JSON (`dvfl-cache index`) instead of the split's train list.")
@click.option("--val-index", type=_file(), default=None,
              help="Validation index JSON; default: the split's test list, as the paper does.")
@click.option("--val-subset", type=click.IntRange(1), default=None,
              help="Validate on this many videos, evenly spaced through the index.")
@click.option("--val-every", type=click.IntRange(1), default=DEFAULTS["val_every"],
              show_default=True, help="Epochs between validations (the last always validates).")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=DEFAULTS["model"],
              show_default=True, help="Student architecture.")
@click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE",
              help="Override a student constructor option (repeatable), e.g. embed_dim=32.")
@click.option("--init", type=_file(), default=None,
              help="Initial weights: ImageNet FocalNet, Video-FocalNet or dvfl checkpoint "
                   "(fresh classifier head).")
@click.option("--drop-path", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Stochastic depth rate (default: the model's, 0.2 for vfl-nano).")
@click.option("--frames", "num_frames", type=click.IntRange(1), default=DEFAULTS["num_frames"],
              show_default=True, help="Frames per student clip (fewer than the cache's: "
                                      "subsampled from the same views).")
@click.option("--size", type=click.IntRange(8), default=DEFAULTS["size"], show_default=True,
              help="Student input resolution (square).")
@click.option("--sampler-opt", "sampler_opts", multiple=True, metavar="KEY=VALUE",
              help="ViewSampler option for fresh views and validation (repeatable), e.g. "
                   "temporal=stride, flip=0.")
@click.option("--cache", default=None, help="Teacher-logit cache: directory, .zip or URL.")
@click.option("--teacher", default=None,
              help="Online KD: teacher architecture (default: named by --teacher-weights).")
@click.option("--teacher-weights", type=_file(), default=None,
              help="Online KD: the teacher's trained weights (teacher in the loop, no cache).")
@click.option("--teacher-opt", "teacher_opts", multiple=True, metavar="KEY=VALUE",
              help="Override an online teacher's constructor option (repeatable).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=None,
              help=f"Weight of the KD term (0: cross-entropy only). Default: {DEFAULTS['alpha']} "
                   "with --cache or --teacher-weights, else 0 (plain cross-entropy).")
@click.option("--tau", type=click.FloatRange(0, min_open=True), default=DEFAULTS["tau"],
              show_default=True, help="Distillation temperature.")
@click.option("--beta", type=click.FloatRange(0), default=DEFAULTS["beta"], show_default=True,
              help="Weight of the feature term (needs teacher features).")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True),
              default=DEFAULTS["label_smoothing"], show_default=True)
@click.option("--mixup", type=click.FloatRange(0), default=DEFAULTS["mixup"], show_default=True,
              help="Mixup Beta parameter (0: off; CE-only runs).")
@click.option("--cutmix", type=click.FloatRange(0), default=DEFAULTS["cutmix"],
              show_default=True, help="Cutmix Beta parameter (0: off; CE-only runs).")
@click.option("--epochs", type=click.IntRange(1), default=DEFAULTS["epochs"], show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(0), default=DEFAULTS["warmup_epochs"],
              show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULTS["batch_size"],
              show_default=True, help="Global batch over all processes.")
@click.option("--lr", "base_lr", type=click.FloatRange(0, min_open=True),
              default=DEFAULTS["base_lr"], show_default=True,
              help="Base LR for a batch of 512 (scaled linearly with --batch-size).")
@click.option("--weight-decay", type=click.FloatRange(0), default=DEFAULTS["weight_decay"],
              show_default=True)
@click.option("--clip-grad", type=click.FloatRange(0, min_open=True),
              default=DEFAULTS["clip_grad"], show_default=True, help="Max gradient norm.")
@click.option("--seed", type=click.IntRange(0), default=DEFAULTS["seed"], show_default=True,
              help="Seeds the student's init, drop path and the data order.")
@click.option("--workers", type=click.IntRange(0), default=DEFAULTS["workers"],
              show_default=True, help="Decoding processes.")
@click.option("--device", default=DEFAULTS["device"], show_default=True,
              help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--no-amp", is_flag=True, help="No bf16 autocast on CUDA.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run directory.")
@click.option("--overwrite", is_flag=True, help="Start over in an existing run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last epoch.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
              help="Steps between metrics.jsonl step records.")
def fit_cmd(kind, root, split, index_path, val_index, val_subset, val_every, model, model_opts,
            init, drop_path, num_frames, size, sampler_opts, cache, teacher, teacher_weights,
            teacher_opts, alpha, tau, beta, label_smoothing, mixup, cutmix, epochs,
            warmup_epochs, batch_size, base_lr, weight_decay, clip_grad, seed, workers, device,
            no_amp, out_dir, overwrite, resume, log_every):
    """Train a student, distilling from --cache (or an online --teacher-weights), or with
    cross-entropy alone (--alpha 0, e.g. to fine-tune a teacher).

    Writes config.json, metrics.jsonl, last.pt, best.pt (by validation top-1) and
    summary.json to --out. Under `torchrun --nproc-per-node N dvfl-train fit ...` the
    processes share each batch.
    """
    import os

    from tqdm import tqdm

    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    if index_path is not None:
        from dvfl_cache.data.index import load_index

        index = load_index(index_path, root=root)
        kind, root = kind or index.kind, root or index.root
    if kind is None or root is None:
        raise click.UsageError("name the training videos: --dataset KIND --root DIR, or --index "
                               "FILE.json")
    if alpha is None:
        alpha = DEFAULTS["alpha"] if (cache or teacher_weights) else 0.0
    cfg = FitConfig(
        dataset=kind, data_root=str(root), out_dir=str(out_dir), split=split,
        train_index=index_path, val_index=val_index, num_frames=num_frames, size=size,
        sampler=parse_key_values(sampler_opts, "--sampler-opt"), model=model,
        model_opts=parse_key_values(model_opts, "--model-opt"), drop_path=drop_path, init=init,
        cache=cache, teacher=teacher, teacher_weights=teacher_weights,
        teacher_opts=parse_key_values(teacher_opts, "--teacher-opt"), alpha=alpha, tau=tau,
        beta=beta, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, epochs=epochs,
        warmup_epochs=warmup_epochs, batch_size=batch_size, base_lr=base_lr,
        weight_decay=weight_decay, clip_grad=clip_grad, val_every=val_every,
        val_subset=val_subset, seed=seed, workers=workers, device=device, amp=not no_amp)
    cfg.validate()

    main_rank = int(os.environ.get("RANK", "0")) == 0
    bar: list[tqdm] = []

    def progress(event) -> None:
        if not main_rank:
            return
        if event.kind == "epoch_start":
            bar.append(tqdm(total=event.steps, desc=f"epoch {event.epoch}/{event.epochs}",
                            unit="batch", leave=False, dynamic_ncols=True))
        elif event.kind == "step" and bar:
            bar[-1].update(1)
        elif event.kind == "epoch_end":
            if bar:
                bar.pop().close()
            for record in event.records.values():
                click.echo(epoch_line(record, epochs=event.epochs))

    summary = fit(cfg, resume=resume, overwrite=overwrite, log_every=log_every,
                  progress=progress)
    if not main_rank:
        return
    if summary["best_val_top1"] is not None:
        click.echo(f"best val top-1 {100 * summary['best_val_top1']:.2f}% at epoch "
                   f"{summary['best_epoch']}; run in {out_dir}")
    if summary["failed_videos"]:
        click.echo(f"{len(summary['failed_videos'])} video(s) failed to decode and were "
                   "skipped:", err=True)
        for f in summary["failed_videos"]:
            click.echo(f"  {f['path']}: {f['reason']}", err=True)


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
