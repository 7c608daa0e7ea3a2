"""`dvfl-train sweep`: one student per alpha/tau/seed grid point, all from one decoded batch."""

from __future__ import annotations

import click

from dvfl_cache.commands.options import echo_config, options_from, recipe_options
from dvfl_train.commands.train_options import (EpochProgress, data_model_options, fit_config,
                                               loss_schedule_options, runtime_options)
from dvfl_train.config import FitConfig

__all__ = ["sweep_cmd"]


def _numbers(kind: type, *, low: float, low_open: bool = False):
    """Callback parsing a comma-separated list of ``kind`` values above ``low``."""
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            items = [kind(x) for x in str(value).split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {value!r}",
                                     ctx=ctx, param=param) from None
        bad = [x for x in items if x < low or (low_open and x == low)]
        if not items or bad:
            raise click.BadParameter(f"need values {'>' if low_open else '>='} {low:g}, got "
                                     f"{value!r}", ctx=ctx, param=param)
        return items
    return parse


def _layouts(ctx, param, value):
    from dvfl_train.evaluate import parse_views

    try:
        layouts = tuple(dict.fromkeys(parse_views(v).label for v in value.split(",")
                                      if v.strip()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    if not layouts:
        raise click.BadParameter("name at least one layout, e.g. 1,4x3", ctx=ctx, param=param)
    return layouts


@click.command("sweep")
@recipe_options("sweep", grid={"alpha": "alphas", "tau": "taus"})
@data_model_options
@click.option("--alphas", default="0.3,0.5,0.7", show_default=True,
              callback=_numbers(float, low=0.0), help="KD weights, comma-separated (0 = the "
                                                      "CE baseline).")
@click.option("--taus", default="5,10,15", show_default=True,
              callback=_numbers(float, low=0.0, low_open=True),
              help="Temperatures, comma-separated.")
@click.option("--seeds", default=None, callback=_numbers(int, low=0),
              help="Student seeds (init and drop path), comma-separated; default: --seed.")
@click.option("--no-baseline", is_flag=True,
              help="No CE-only baseline (alpha 0, one per seed).")
@loss_schedule_options
@options_from(FitConfig, ("seed",), seed={
    "help": "Data seed: views, batch order; shared by every student of the sweep."})
@runtime_options
@options_from(FitConfig, ("out_dir",), out_dir={
    "required": True,
    "help": "Sweep folder: runs/<name>/ per student, results.csv, results.md, plots."})
@click.option("--parallel", type=click.IntRange(1), default=None,
              help="Students trained side by side on each decoded batch; default: all of them.")
@click.option("--eval-views", default="1,4x3", show_default=True, callback=_layouts,
              metavar="1|NxC,...", help="Test-view layouts for each run's best.pt.")
@click.option("--overwrite", is_flag=True, help="Start the sweep over in an existing --out.")
@click.option("--resume", is_flag=True,
              help="Continue the sweep in --out: finished students and evaluations are skipped, "
                   "the others continue after their last finished epoch.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
              help="Steps between metrics.jsonl step records.")
def sweep_cmd(print_config, alphas, taus, seeds, no_baseline, parallel, eval_views, overwrite,
              resume, log_every, threads, **settings):
    """Train one student per (alpha, tau, seed) from --cache, plus a CE baseline, sharing each
    decoded batch between them; evaluate every best.pt and tabulate.

    Writes runs/<name>/ (a `fit` run directory each, plus eval_<views>.json), results.csv,
    results.md (mean ± std over seeds, the teacher's own accuracy from the cache) and, with
    matplotlib, top-1 against alpha and tau and the validation curves as PNG. `--recipe
    dvfl-net` sets every default to the reference recipe (the grid: its alpha and tau).
    """
    import os

    from dvfl_cache.runtime import resolve_device, set_compute_threads
    from dvfl_train.sweep import SweepConfig, expand_grid, run_sweep

    try:
        points = expand_grid(alphas, taus, seeds if seeds is not None else [settings["seed"]],
                             baseline=not no_baseline)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # alpha and tau are per student (the grid points); the shared config leaves them unset
    # (None: FitConfig's rule) and every student's own config is validated below.
    cfg = fit_config({**settings, "alpha": None})
    sweep = SweepConfig(base=cfg, points=tuple(points), parallel=parallel,
                        eval_views=eval_views)
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
