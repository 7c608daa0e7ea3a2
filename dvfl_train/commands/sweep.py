"""`dvfl-train sweep`: one student per alpha/tau/seed grid point, all from one decoded batch."""

from __future__ import annotations

import click

from dvfl_cache.commands.options import echo_config, field_values, options_from, recipe_options
from dvfl_cache.errors import DvflError
from dvfl_train.commands.train_options import (EpochProgress, data_model_options, fit_config,
                                               loss_schedule_options, runtime_options)
from dvfl_train.config import FitConfig
from dvfl_train.sweep_plan import SweepGrid

__all__ = ["sweep_cmd"]


@click.command("sweep")
@recipe_options("sweep", grid={"alpha": "alphas", "tau": "taus"})
@data_model_options
@options_from(SweepGrid, ("alphas", "taus", "seeds", "baseline"))
@loss_schedule_options
@options_from(FitConfig, ("seed",), seed={
    "help": "Data seed: views, batch order; shared by every student of the sweep."})
@runtime_options
@options_from(FitConfig, ("out_dir",), out_dir={
    "required": True,
    "help": "Sweep folder: runs/<name>/ per student, results.csv, results.md, plots."})
@options_from(SweepGrid, ("parallel", "eval_views"))
@click.option("--overwrite", is_flag=True, help="Start the sweep over in an existing --out.")
@click.option("--resume", is_flag=True,
              help="Continue the sweep in --out: finished students and evaluations are skipped, "
                   "the others continue after their last finished epoch.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
              help="Steps between metrics.jsonl step records.")
def sweep_cmd(print_config, overwrite, resume, log_every, threads, **settings):
    """Train one student per (alpha, tau, seed) from --cache, plus a CE baseline, sharing each
    decoded batch between them; evaluate every best.pt and tabulate.

    Writes runs/<name>/ (a `fit` run directory each, plus eval_<views>.json), results.csv,
    results.md (mean ± std over seeds, the teacher's own accuracy from the cache) and, with
    matplotlib, top-1 against alpha and tau and the validation curves as PNG. `--recipe
    dvfl-net` sets every default to the reference recipe (the grid: its alpha and tau).
    """
    import os

    from dvfl_cache.runtime import resolve_device, set_compute_threads
    from dvfl_train.sweep import run_sweep

    grid = SweepGrid(**field_values(SweepGrid, settings))
    # alpha and tau are per student (the grid points); the shared config leaves them unset
    # (None: FitConfig's rule) and every student's own config is validated below.
    cfg = fit_config({**settings, "alpha": None})
    try:
        sweep = grid.sweep(cfg)
    except DvflError as exc:
        raise click.UsageError(str(exc)) from None
    sweep.validate()
    if print_config:  # sweep.json as the sweep would write it; nothing created, nothing read
        echo_config(sweep.to_dict())
        return
    set_compute_threads(device=resolve_device(cfg.device), workers=cfg.workers,
                        threads=threads)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    epochs = EpochProgress(enabled=main_rank, named=True)

    def progress(event) -> None:
        if not main_rank:
            return
        if event.kind == "group_start":
            click.echo(f"group {event.group}/{event.groups}: {len(event.names)} student(s) "
                       f"side by side: {', '.join(event.names)}")
        elif event.kind == "skip":
            click.echo(f"{event.name}: {event.message} done earlier, skipped")
        elif event.kind == "eval":
            click.echo(f"{event.name} {event.views}: {event.message}")
        elif event.kind == "train":
            epochs(event.train)

    with epochs:
        rows = run_sweep(sweep, resume=resume, overwrite=overwrite, log_every=log_every,
                         progress=progress)
    if not main_rank:
        return
    for row in rows:
        accs = ", ".join(f"{v}: {100 * t1:.2f}%" for v, (t1, _) in row.acc.items())
        click.echo(f"{row.name}: top-1 {accs}")
    click.echo(f"wrote {cfg.out_dir}/results.csv and {cfg.out_dir}/results.md")
