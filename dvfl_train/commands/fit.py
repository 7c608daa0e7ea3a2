"""`dvfl-train fit`: train a student from a teacher cache, an online teacher, or labels alone."""

from __future__ import annotations

from typing import Any

import click

from dvfl_train.commands.train_options import (DEFAULTS, data_model_options, fit_config,
                                               loss_schedule_options, runtime_options)

__all__ = ["DEFAULTS", "epoch_line", "fit_cmd"]


@click.command("fit")
@data_model_options
@click.option("--alpha", type=click.FloatRange(0, 1), default=None,
              help=f"Weight of the KD term (0: cross-entropy only). Default: {DEFAULTS['alpha']} "
                   "with --cache or --teacher-weights, else 0 (plain cross-entropy).")
@click.option("--tau", type=click.FloatRange(0, min_open=True), default=DEFAULTS["tau"],
              show_default=True, help="Distillation temperature.")
@loss_schedule_options
@click.option("--seed", type=click.IntRange(0), default=DEFAULTS["seed"], show_default=True,
              help="Seeds the student's init, drop path and the data order.")
@runtime_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run directory.")
@click.option("--overwrite", is_flag=True, help="Start over in an existing run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last epoch.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
              help="Steps between metrics.jsonl step records.")
def fit_cmd(alpha, tau, seed, out_dir, overwrite, resume, log_every, **shared):
    """Train a student, distilling from --cache (or an online --teacher-weights), or with
    cross-entropy alone (--alpha 0, e.g. to fine-tune a teacher).

    Writes config.json, metrics.jsonl, last.pt, best.pt (by validation top-1) and
    summary.json to --out. Under `torchrun --nproc-per-node N dvfl-train fit ...` the
    processes share each batch.
    """
    import os

    from tqdm import tqdm

    from dvfl_train.trainer import fit

    if alpha is None:
        alpha = DEFAULTS["alpha"] if (shared["cache"] or shared["teacher_weights"]) else 0.0
    cfg = fit_config(out_dir=out_dir, alpha=alpha, tau=tau, seed=seed, **shared)

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
