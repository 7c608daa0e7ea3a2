"""`dvfl-train fit`: train a student from a teacher cache, an online teacher, or labels alone."""

from __future__ import annotations

import click

from dvfl_train.commands.train_options import (DEFAULTS, EpochProgress, data_model_options,
                                               fit_config, loss_schedule_options,
                                               runtime_options)

__all__ = ["DEFAULTS", "fit_cmd"]


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

    from dvfl_cache.runtime import resolve_device, set_compute_threads
    from dvfl_train.trainer import fit

    if alpha is None:
        alpha = DEFAULTS["alpha"] if (shared["cache"] or shared["teacher_weights"]) else 0.0
    threads = shared.pop("threads")
    cfg = fit_config(out_dir=out_dir, alpha=alpha, tau=tau, seed=seed, **shared)
    set_compute_threads(device=resolve_device(cfg.device), workers=cfg.workers,
                        threads=threads)

    main_rank = int(os.environ.get("RANK", "0")) == 0
    progress = EpochProgress(enabled=main_rank, named=False)

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
