"""`dvfl-cache build`: the teacher over every view of every video, into a sharded Zarr store."""

from __future__ import annotations

import click

from dvfl_cache.commands.options import (canonical_command, dataset_options, index_from_options,
                                         parse_key_values, storage_option, storage_options_from,
                                         threads_option)


@click.command("build")
@dataset_options(subset="train")
@click.option("--teacher", default="vfn-base", show_default=True,
              help="Registered model name, or a dvfl checkpoint that names its architecture.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Teacher weights: a dvfl checkpoint or a released Video-FocalNet .pth.")
@click.option("--random-weights", is_flag=True,
              help="Use a randomly initialised teacher (tests, benchmarks) instead of --weights.")
@click.option("--teacher-opt", "teacher_opts", multiple=True, metavar="KEY=VALUE",
              help="Override a teacher constructor option (repeatable), e.g. embed_dim=32.")
@click.option("--views-per-video", type=click.IntRange(1), default=1, show_default=True,
              help="Views cached per video; epoch e of training replays view e mod V.")
@click.option("--sampler", type=click.Choice(["segment", "stride"]), default="segment",
              show_default=True, help="Temporal sampler (TSN segments or fixed stride).")
@click.option("--stride", type=click.IntRange(1), default=4, show_default=True,
              help="Frame stride for --sampler stride.")
@click.option("--frames", type=click.IntRange(1), default=8, show_default=True,
              help="Frames per teacher clip.")
@click.option("--size", type=click.IntRange(8), default=224, show_default=True,
              help="Teacher input resolution (square).")
@click.option("--flip", "flip_p", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Horizontal flip probability (use 0 for Something-Something-v2).")
@click.option("--area", default="0.08,1", show_default=True, metavar="MIN,MAX",
              help="Random-resized-crop area range, as fractions of the frame (raise MIN for "
                   "small videos, where an 8% crop keeps few pixels).")
@click.option("--jitter", default=None, metavar="B,C,S,H",
              help="Colour jitter strengths (brightness, contrast, saturation, hue), drawn "
                   "once per clip.")
@click.option("--gray", "gray_p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Grayscale probability.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True,
              help="Store to write: a directory or an fsspec URL (s3://bucket/c.zarr, gs://...).")
@storage_option
@click.option("--claim-ttl", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds after which a shard claimed by a process that stopped renewing its "
                   "claim (killed, lost machine) is taken over by another builder.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Logit storage type.")
@click.option("--features", is_flag=True,
              help="Also store the teacher's pooled pre-logit embedding per view.")
@click.option("--views-per-shard", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=4, show_default=True,
              help="Decoding processes.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if "
                                             "available).")
@threads_option
@click.option("--resume", is_flag=True, help="Finish an interrupted build of the same cache.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at --out.")
def build_cmd(kind, root, split, subset, index_path, videos_dir, annotations, teacher, weights,
              random_weights, teacher_opts, views_per_video, sampler, stride, frames, size,
              flip_p, area, jitter, gray_p, seed, out, storage_opts, claim_ttl, dtype, features,
              views_per_shard, batch_size, workers, device, threads, resume, overwrite):
    """Run the teacher once over every sampled view and store its raw logits.

    Resumable (--resume) after any crash; under `torchrun --nproc-per-node N dvfl-cache build
    ...` the ranks split the shards between them.
    """
    import os

    from tqdm import tqdm

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.runtime import resolve_device, set_compute_threads

    sampler_opts = {"temporal": sampler, "stride": stride, "flip": flip_p, "gray_p": gray_p}
    lo, hi = _numbers(area, 2, "--area", "two numbers MIN,MAX")
    if not 0 < lo <= hi <= 1:
        raise click.BadParameter(f"need 0 < MIN <= MAX <= 1, got {area!r}", param_hint="--area")
    sampler_opts["area"] = [lo, hi]
    if jitter:
        sampler_opts["jitter"] = _numbers(jitter, 4, "--jitter", "four numbers B,C,S,H")
    index = index_from_options(kind, root, split, subset, index_path, videos_dir, annotations)
    cfg = BuildConfig(out=out, teacher=teacher, weights=weights, random_weights=random_weights,
                      teacher_opts=parse_key_values(teacher_opts, "--teacher-opt"),
                      views_per_video=views_per_video, sampler=sampler_opts, frames=frames,
                      size=size, seed=seed, dtype=dtype, features=features,
                      views_per_shard=views_per_shard, batch_size=batch_size, workers=workers,
                      device=device, resume=resume, overwrite=overwrite,
                      storage_options=storage_options_from(storage_opts) or {},
                      claim_ttl_s=claim_ttl,
                      command=tuple(canonical_command(click.get_current_context())))
    set_compute_threads(device=resolve_device(device), workers=workers, threads=threads)
    rank = int(os.environ.get("RANK", "0"))
    bar = tqdm(desc=f"build[{rank}]" if "WORLD_SIZE" in os.environ else "build", unit="view",
               disable=rank != 0, dynamic_ncols=True)
    try:
        result = build_cache(cfg, index, progress=bar.update,
                             on_start=lambda n: setattr(bar, "total", n) or bar.refresh())
    finally:
        bar.close()
    if rank == 0:
        state = "complete" if result.complete else "incomplete (other ranks still running?)"
        click.echo(f"{result.path}: {result.rows_written} views in {result.shards_written} "
                   f"shards written by this process; store {state}, "
                   f"{result.shards_total} shards")
        if result.fp16_kl:
            worst = ", ".join(f"tau {k}: {v:.2e}" for k, v in result.fp16_kl.items())
            click.echo(f"float16 storage error, worst KL vs float32: {worst}")
        if result.failed:
            click.echo(f"{len(result.failed)} video(s) failed to decode; their views are "
                       f"marked missing:", err=True)
            for v, reason in sorted(result.failed.items()):
                click.echo(f"  {index.videos[v].path}: {reason}", err=True)


def _numbers(text: str, count: int, flag: str, what: str) -> list[float]:
    """`count` comma-separated numbers, or a usage error naming the option."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise click.BadParameter(f"expected {what}, got {text!r}", param_hint=flag)
    return values
