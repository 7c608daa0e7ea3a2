"""`dvfl-train fit`: train a student from a teacher cache, an online teacher, or labels alone."""

from __future__ import annotations

import dataclasses

import click

from dvfl_cache.commands.options import echo_config, options_from, recipe_options
from dvfl_train.commands.train_options import (EpochProgress, data_model_options, fit_config,
                                               loss_schedule_options, runtime_options)
from dvfl_train.config import FitConfig

__all__ = ["fit_cmd"]

_ALPHA = next(f.default for f in dataclasses.fields(FitConfig) if f.name == "alpha")


@click.command("fit")
@recipe_options("fit")
@data_model_options
@options_from(FitConfig, ("alpha", "tau"), alpha={
    "default": None, "help": f"Weight of the KD term (0: cross-entropy only). Default: {_ALPHA} "
                             "with --cache or --teacher-weights, else 0 (plain cross-entropy)."})
@loss_schedule_options
@options_from(FitConfig, ("seed",))
@runtime_options
@options_from(FitConfig, ("out_dir",), out_dir={"required": True})
@click.option("--overwrite", is_flag=True, help="Start over in an existing run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last epoch.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
              help="Steps between metrics.jsonl step records.")
def fit_cmd(print_config, overwrite, resume, log_every, threads, **settings):
    """Train a student, distilling from --cache (or an online --teacher-weights), or with
    cross-entropy alone (--alpha 0, e.g. to fine-tune a teacher).

    Writes config.json, metrics.jsonl, last.pt, best.pt (by validation top-1) and
    summary.json to --out. `--recipe dvfl-net` trains with the reference recipe. Under
    `torchrun --nproc-per-node N -m dvfl_train.cli fit ...` the processes share each batch.
    """
    import os

    from dvfl_cache.runtime import resolve_device, set_compute_threads
    from dvfl_train.trainer import fit

    cfg = fit_config(settings)
    if print_config:  # config.json as the run would write it; nothing created, nothing read
        echo_config(cfg.to_dict())
        return
    set_compute_threads(device=resolve_device(cfg.device), workers=cfg.workers,
                        threads=threads)

    main_rank = int(os.environ.get("RANK", "0")) == 0
    with EpochProgress(enabled=main_rank, named=False) as progress:
        summary = fit(cfg, resume=resume, overwrite=overwrite, log_every=log_every,
                      progress=progress)
    if not main_rank:
        return
    if summary["best_val_top1"] is not None:
        click.echo(f"best val top-1 {100 * summary['best_val_top1']:.2f}% at epoch "
                   f"{summary['best_epoch']}; run in {cfg.out_dir}")
    if summary["failed_videos"]:
        click.echo(f"{len(summary['failed_videos'])} video(s) failed to decode and were "
                   "skipped:", err=True)
        for f in summary["failed_videos"]:
            click.echo(f"  {f['path']}: {f['reason']}", err=True)
