"""`dvfl-cache build`: the teacher over every view of every video, into a sharded Zarr store."""

from __future__ import annotations

import click

from dvfl_cache.cache.build_config import BuildConfig
from dvfl_cache.commands.options import (canonical_command, check_model_options, dataset_options,
                                         echo_config, field_values, index_from_options,
                                         options_from, recipe_options, storage_option,
                                         storage_options_from, threads_option)
from dvfl_cache.commands.store import storage_error_lines
from dvfl_cache.data.views import ViewSampler

# The ViewSampler fields `build` exposes; their options come from the fields' metadata.
SAMPLER_OPTIONS = ("temporal", "stride", "flip", "area", "jitter", "jitter_mode", "gray_p")


def teacher_geometry(settings: dict) -> None:
    """An hf: teacher's own frames and size are the defaults of --frames and --size (given
    values are kept, and checked against the model when it loads)."""
    from dvfl_cache.models.registry import is_foreign

    if not is_foreign(settings.get("teacher")):
        return
    from dvfl_cache.models.load import preview_input

    given = preview_input(settings["teacher"])
    if given is None:
        return
    ctx = click.get_current_context()
    for key, value in (("frames", given.frames), ("size", given.size)):
        if ctx.get_parameter_source(key) == click.core.ParameterSource.DEFAULT:
            settings[key] = value


@click.command("build")
@recipe_options("build")
@dataset_options(subset="train")
@options_from(BuildConfig, ("teacher", "weights", "random_weights", "teacher_opts",
                            "teacher_input", "teacher_classes", "check_teacher",
                            "check_index", "force",
                            "views_per_video", "frames", "size"))
@options_from(ViewSampler, SAMPLER_OPTIONS)
@options_from(BuildConfig, ("mixup", "cutmix", "mix_prob", "seed"))
@options_from(BuildConfig, ("views_from",))
@options_from(BuildConfig, ("out",), out={"required": True})
@storage_option
@options_from(BuildConfig, ("claim_ttl_s",))
@options_from(BuildConfig, ("dtype", "features", "views_per_shard", "batch_size", "workers",
                            "device"))
@threads_option
@options_from(BuildConfig, ("resume", "overwrite", "repair", "max_failed"))
def build_cmd(print_config, kind, root, split, subset, index_path, videos_dir, annotations,
              threads, storage_opts, **settings):
    """Run the teacher once over every sampled view and store its raw logits.

    `--recipe dvfl-net` builds with the reference recipe's views and mixing. Resumable
    (--resume) after any crash; under `torchrun ... -m dvfl_cache.cli build ...`, or several
    `build --resume` processes on one store, the processes claim the shards between them.
    """
    import os

    from tqdm import tqdm

    from dvfl_cache.cache.build import build_cache
    from dvfl_cache.runtime import resolve_device, set_compute_threads

    sampler = {k: list(v) if isinstance(v, tuple) else v
               for k, v in ((k, settings.pop(k)) for k in SAMPLER_OPTIONS)}
    teacher_geometry(settings)
    cfg = BuildConfig(**field_values(BuildConfig, settings), sampler=sampler,
                      storage_options=storage_options_from(storage_opts) or {},
                      command=tuple(canonical_command(click.get_current_context())))
    check_model_options(cfg.teacher, cfg.teacher_opts, "--teacher-opt")
    if print_config:  # no store written, no video, no teacher
        if cfg.views_from is not None:  # the views (and mixing) are that store's: show them
            from dvfl_cache.cache.sameviews import views_from_config

            cfg = views_from_config(cfg, cfg.views_from, dict(cfg.storage_options) or None)
        echo_config(cfg.record())
        return
    index = index_from_options(kind, root, split, subset, index_path, videos_dir, annotations)
    # the teacher takes every core and the decoders share them (runtime.py says why)
    set_compute_threads(device=resolve_device(cfg.device), workers=cfg.workers, threads=threads,
                        share_cores=True)
    rank = int(os.environ.get("RANK", "0"))
    bar = tqdm(desc=f"build[{rank}]" if "WORLD_SIZE" in os.environ else "build", unit="view",
               disable=rank != 0, dynamic_ncols=True)
    try:
        result = build_cache(cfg, index, progress=bar.update,
                             on_start=lambda n: setattr(bar, "total", n) or bar.refresh())
    finally:
        bar.close()
    if rank == 0:
        if result.teacher_check:
            c = result.teacher_check
            click.echo(f"teacher check: top-1 {100 * c['top1']:.2f}% ({c['correct']} / "
                       f"{c['videos']} test views; chance {100 * c['chance']:.2f}%)"
                       + ("" if c["above_chance"] else ", not above chance (--force)"))
        state = "complete" if result.complete else "incomplete (other ranks still running?)"
        click.echo(f"{result.path}: {result.rows_written} views in {result.shards_written} "
                   f"shards written by this process; store {state}, "
                   f"{result.shards_total} shards")
        if result.fp16_kl:
            worst = ", ".join(f"tau {k}: {v:.2e}" for k, v in result.fp16_kl.items())
            click.echo(f"float16 storage error, worst KL vs float32: {worst}")
        for line in storage_error_lines(result.storage_error):
            click.echo(f"{cfg.dtype} storage error, {line}")
        if result.failed:
            click.echo(f"{len(result.failed)} video(s) failed to decode; their views are "
                       f"marked missing:", err=True)
            for v, reason in sorted(result.failed.items()):
                click.echo(f"  {index.videos[v].path}: {reason}", err=True)
        if result.failed_rows:
            click.echo(f"{len(result.failed_rows)} mixed row(s) marked missing because their "
                       "partner failed to decode:", err=True)
            for row, f in sorted(result.failed_rows.items()):
                click.echo(f"  row {row} (video {f['video']}): partner {f['partner']} "
                           f"{f.get('path', '')}: {f['reason']}", err=True)

