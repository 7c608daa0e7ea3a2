"""`dvfl-cache extend`: more views per video in a finished store, equal to building them all."""

from __future__ import annotations

import click

from dvfl_cache.cache.build_config import BuildConfig
from dvfl_cache.commands.options import (canonical_command, check_model_options, dataset_options,
                                         field_values, index_from_options, options_from,
                                         storage_option, storage_options_from, threads_option)


@click.command("extend")
@click.argument("store")
@dataset_options(subset="train")
@options_from(BuildConfig, ("teacher", "weights", "random_weights", "teacher_opts",
                            "teacher_input", "teacher_classes"))
@options_from(BuildConfig, ("views_per_video",),
              views_per_video={"required": True, "default": None,
                               "help": "The store's new views per video V2 (views V..V2-1 are "
                                       "added with the store's sampler, seed and mixing)."})
@storage_option
@options_from(BuildConfig, ("claim_ttl_s", "max_failed", "batch_size", "workers", "device"))
@threads_option
def extend_cmd(store, kind, root, split, subset, index_path, videos_dir, annotations, threads,
               storage_opts, **settings):
    """Add views to STORE with the teacher it was built with; existing shard files stay as they
    are. Resumable: run the same command again after a kill (several processes share the work).
    """
    from tqdm import tqdm

    from dvfl_cache.cache.extend import extend_cache
    from dvfl_cache.cache.location import check_writable
    from dvfl_cache.runtime import resolve_device, set_compute_threads

    check_writable(store)  # a zip or an http(s) store: say so before reading the dataset
    cfg = BuildConfig(out=store, **field_values(BuildConfig, settings),
                      storage_options=storage_options_from(storage_opts) or {},
                      command=tuple(canonical_command(click.get_current_context())))
    check_model_options(cfg.teacher, cfg.teacher_opts, "--teacher-opt")
    index = index_from_options(kind, root, split, subset, index_path, videos_dir, annotations)
    set_compute_threads(device=resolve_device(cfg.device), workers=cfg.workers, threads=threads)
    bar = tqdm(desc="extend", unit="view", dynamic_ncols=True)
    try:
        result = extend_cache(cfg, index, progress=bar.update,
                              on_start=lambda n: setattr(bar, "total", n) or bar.refresh())
    finally:
        bar.close()
    state = "complete" if result.complete else "incomplete (other processes still running?)"
    click.echo(f"{result.path}: {result.rows_written} views in {result.shards_written} shards "
               f"written by this process; store {state}, {result.shards_total} shards")
    if result.failed:
        click.echo(f"{len(result.failed)} video(s) failed to decode; their views are marked "
                   "missing", err=True)
    if result.complete and _has_card(store, cfg.storage_options):
        click.echo(f"{store}: its card (README.md, manifest.sha256) describes the store before "
                   f"this extend; write it again with `dvfl-cache card {store}`", err=True)


def _has_card(store: str, storage_options) -> bool:
    from dvfl_cache.cache.card import CARD_NAME, store_get
    from dvfl_cache.cache.store import CacheReader

    with CacheReader(store, storage_options=storage_options or None) as reader:
        return store_get(reader, CARD_NAME) is not None
