"""`dvfl-cache info | verify | export | import | pack | card`: inspect and share a cache.

STORE may be a store directory, a packed .zip, or an fsspec URL of either (s3://, gs://, or
http(s):// served by any server that honours byte ranges); outputs may be URLs too.
Library code lives in dvfl_cache.cache.
"""

from __future__ import annotations

import json
from typing import Any

import click

from dvfl_cache.commands.options import (dataset_options, index_from_options, storage_option,
                                         storage_options_from)
from dvfl_cache.tables import pct


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _pct(x: float | None) -> str:
    return pct(x, unit="%", missing="n/a (no valid rows)")


def storage_error_lines(err: dict[str, Any] | None) -> list[str]:
    """One line per coded field of a `storage_error` summary (codec error vs float32)."""
    out = []
    for field, e in (err or {}).items():
        if "kl_worst" in e:
            worst = ", ".join(f"tau={t}: {v:.3g}" for t, v in e["kl_worst"].items())
            mean = ", ".join(f"{v:.2g}" for v in e["kl_mean"].values())
            out.append(f"{field}: worst KL vs float32 {worst} (mean {mean}) over "
                       f"{e['rows']} views")
        else:
            out.append(f"{field}: 1 - cosine vs float32 worst {e['cos_worst']:.3g}, mean "
                       f"{e['cos_mean']:.3g} over {e['rows']} views")
    return out


_LABELS = {"names": "the dataset's class names",
           "generic": "generic (LABEL_i or unnamed outputs), taken in the dataset's class order",
           "mapped": "mapped onto the dataset's classes (--teacher-classes)"}


def _teacher_lines(d: dict[str, Any]) -> list[tuple[str, str]]:
    """An hf:/py: teacher's input, label set and pre-build check, as `info` shows them."""
    out = []
    cin = d.get("teacher_input")
    if cin:
        out.append(("teacher input", f"{cin['frames']} x {cin['size']}px, {cin['layout']}, mean "
                    f"{', '.join(f'{v:g}' for v in cin['mean'])}, std "
                    f"{', '.join(f'{v:g}' for v in cin['std'])} (from {cin['source']})"))
    if d.get("teacher_labels"):
        out.append(("teacher labels", _LABELS.get(d["teacher_labels"], d["teacher_labels"])))
    check = d.get("teacher_check")
    if check:
        out.append(("teacher check", f"top-1 {100 * check['top1']:.2f}% on the test views of "
                    f"{check['videos']} videos before the build (chance "
                    f"{100 * check['chance']:.2f}%"
                    + ("" if check["above_chance"] else "; built anyway with --force") + ")"))
    return out


def _print_info(d: dict[str, Any]) -> None:
    lines = [
        ("store", d["store"]),
        ("format", d["format"]),
        ("teacher", f"{d['teacher']} " + (f"(weights sha256 {d['teacher_weights_sha256']})"
                                          if d["teacher_weights_sha256"] else
                                          "(random weights, no checkpoint)")),
        *_teacher_lines(d),
        ("dataset", f"{d['dataset']}, {d['num_classes']} classes, {d['num_videos']} videos"),
        ("index digest", d["index_digest"]),
        ("views", f"{d['views_per_video']} per video, {d['rows']} rows, {d['num_frames']} frames"
                  f" each"),
        ("sampler", f"{d['sampler']['name']} seed {d['sampler']['seed']}, jitter per "
                    f"{d['jitter_mode']}"),
        ("mixing", "none" if not d["mix"] else
         f"mixup {d['mix']['mixup']}, cutmix {d['mix']['cutmix']}, prob {d['mix']['prob']}; "
         + ", ".join(f"{k} {v}" for k, v in d["mixed_rows"].items()) + " valid rows"),
        ("teacher ran", "not recorded (format v1)" if not d["teacher_precision"] else
         f"on {d['teacher_precision']['device']}, autocast "
         f"{d['teacher_precision']['autocast'] or 'off (float32)'}; decoder version "
         f"{d['decoder_version']}"),
        ("dtype", d["dtype"] + (f", features {d['feature_dim']}" if d["feature_dim"] else "")),
        ("completeness", f"{d['shards_done']} / {d['shards_total']} shards done"
                         + ("" if d["complete"] else " (INCOMPLETE)")),
        ("size on disk", f"{_human_bytes(d['size_bytes'])} (logits and features alone: "
                         f"{_human_bytes(d['logit_bytes'])})"),
        ("bytes per view", ", ".join(f"{k} {v}" for k, v in d["bytes_per_view"].items())),
        ("teacher top-1", f"{_pct(d['teacher_top1'])} over {d['valid_rows']} valid views"
                          + (f" ({_pct(d['valid_rows'] / d['done_rows'])} of the "
                             f"{d['done_rows']} rows of done shards)" if d["done_rows"] else "")),
        ("teacher top-5", _pct(d["teacher_top5"])),
        ("fp16 KL (worst)", "not recorded" if not d["fp16_kl"] else
         ", ".join(f"tau={t}: {v:.3g}" for t, v in d["fp16_kl"].items())),
        *(("storage error", line) for line in storage_error_lines(d["storage_error"])),
        ("failed videos", str(len(d["failed_videos"]))),
        ("created", f"{d['created']} by dvfl {d['dvfl_version']}"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k:<{width}}  {v}")
    for f in d["failed_videos"]:
        click.echo(f"  video {f['video']} {f.get('path', '')}: {f['reason']}")


@click.command("info")
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@storage_option
def info_cmd(store: str, as_json: bool, storage_opts: tuple[str, ...]) -> None:
    """Teacher, dataset, views, completeness, size and teacher accuracy of a cache STORE."""
    from dvfl_cache.cache.inspect import info

    d = info(store, storage_options=storage_options_from(storage_opts))
    if as_json:
        click.echo(json.dumps(d, indent=1))
    else:
        _print_info(d)


@click.command("verify")
@click.argument("store")
@dataset_options(subset="train", subset_help="Subset the cache was built on.")
@click.option("--recompute", type=click.IntRange(1), default=None, metavar="N",
              help="Also re-run the teacher on N rows spread over the store (mixed rows "
                   "included) and fail if its logits differ beyond the stored precision.")
@click.option("--teacher", default=None,
              help="With --recompute: the teacher, a registered name, a dvfl checkpoint, hf:PATH "
                   "or py:MODULE:FUNCTION (its recorded input and options are replayed).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --recompute: the teacher's weights (none for a random-weights cache).")
@click.option("--device", default=None, help="With --recompute: cpu, cuda, ... (default: cuda "
                                             "if available).")
@storage_option
def verify_cmd(store: str, kind, root, split, subset, index_path, videos_dir, annotations,
               recompute, teacher, weights, device, storage_opts) -> None:
    """Read every chunk of STORE and check checksums, completeness and contents, and, when
    the store has a dataset card (README.md), that it matches the card and its manifest."""
    from tqdm import tqdm

    from dvfl_cache.cache.inspect import verify
    from dvfl_cache.cache.store import CacheReader

    if recompute is not None and teacher is None:
        raise click.UsageError("--recompute needs --teacher (a model name or checkpoint)")
    index = None
    if index_path is not None or kind is not None or recompute is not None:
        index = index_from_options(kind, root, split, subset, index_path, videos_dir,
                                   annotations)
    so = storage_options_from(storage_opts)
    total = CacheReader(store, storage_options=so).meta.num_shards
    with tqdm(total=total, unit="shard", desc="verify", leave=False) as bar:
        d = verify(store, index=index, storage_options=so, progress=bar.update)
    where = index_path or (f"{index.kind} {index.subset}" if index is not None else None)
    click.echo(f"OK: {d['store']}: {d['shards_checked']} shards, {d['rows_checked']} rows "
               f"verified ({d['valid_rows']} valid, {100 * d['valid_fraction']:.1f}%)"
               + (f" against {where}" if where else "")
               + (f"; matches its card (manifest {d['card']})" if d["card"] else ""))
    if recompute is not None:
        from dvfl_cache.cache.recompute import recompute as run

        with tqdm(total=recompute, unit="row", desc="recompute", leave=False) as bar:
            r = run(store, index, teacher=teacher, weights=weights, n=recompute, device=device,
                    progress=bar.update, storage_options=so)
        click.echo(f"OK: teacher recomputed on {r['rows']} rows ({r['mixed_rows']} mixed): "
                   f"largest logit difference {r['max_abs_diff']:.3g} (tolerance "
                   f"{r['atol']:g} + {r['rtol']:g} x |logit|)")
    if d["stale_temp_files"]:
        click.echo(f"note: {len(d['stale_temp_files'])} leftover *.partial files from killed "
                   "writes (ignored by readers and pack; safe to delete)")


@click.command("export")
@click.argument("store")
@click.argument("out")
@click.option("--format", "fmt", type=click.Choice(["hdf5", "parquet"]), default=None,
              help="What to write: HDF5 (every array, for `import`) or Parquet (one row per "
                   "view, for pandas/DuckDB/HF datasets). Default: from OUT's suffix "
                   "(.h5/.hdf5, .parquet/.pq); another suffix is refused.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Parquet: the dataset folder the store was built from, to add each row's "
                   "video path (the store keeps video numbers only).")
@click.option("--index", "index_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Parquet: an index JSON (`dvfl-cache index`) naming the "
                                 "store's videos, instead of --root.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@storage_option
def export_cmd(store: str, out: str, fmt: str | None, root: str | None, index_path: str | None,
               overwrite: bool, storage_opts: tuple[str, ...]) -> None:
    """Export STORE to OUT (path or URL): HDF5 (arrays, meta and failure records; `import`
    reads it back) or Parquet (one row per cached view with its view record and logits)."""
    from tqdm import tqdm

    from dvfl_cache.cache.share import export_format, export_hdf5, export_parquet

    fmt = export_format(out, fmt)
    options = storage_options_from(storage_opts)
    if fmt == "hdf5":
        if root is not None or index_path is not None:
            raise click.UsageError("--root/--index name video paths for a Parquet export; "
                                   "HDF5 keeps the store's arrays as they are")
        with tqdm(unit="shard", desc="export", leave=False) as bar:
            d = export_hdf5(store, out, overwrite=overwrite, progress=bar.update,
                            storage_options=options)
        click.echo(f"wrote {d['hdf5']} ({d['shards']} shards, {_human_bytes(d['bytes'])})")
        return
    index = _store_index(store, root, index_path, options)
    with tqdm(unit="shard", desc="export", leave=False) as bar:
        d = export_parquet(store, out, index=index, overwrite=overwrite, progress=bar.update,
                           storage_options=options)
    click.echo(f"wrote {d['parquet']} ({d['rows']} rows, {d['shards']} shards, "
               f"{_human_bytes(d['bytes'])})" + ("" if index is not None else
                                                 "; no video paths (pass --root or --index)"))


def _store_index(store: str, root: str | None, index_path: str | None, options):
    """The store's videos: --index, or its dataset's list read under --root; None: neither."""
    if root is None and index_path is None:
        return None
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.source import resolve_index

    d = CacheReader(store, storage_options=options).meta.dataset
    if index_path is None and d.kind == "list":
        raise click.UsageError(f"{store} was built from a saved index; pass --index THAT.json")
    return resolve_index(index=index_path, kind=d.kind, root=root, split=d.split,
                         subset=d.subset)


@click.command("import")
@click.argument("src")
@click.argument("out_store")
@click.option("--overwrite", is_flag=True, help="Replace OUT_STORE if it exists.")
@storage_option
def import_cmd(src: str, out_store: str, overwrite: bool, storage_opts: tuple[str, ...]) -> None:
    """Rebuild a cache store OUT_STORE (directory or URL) from an HDF5 file written by
    `export` (path or URL)."""
    from tqdm import tqdm

    from dvfl_cache.cache.share import import_hdf5

    with tqdm(unit="shard", desc="import", leave=False) as bar:
        d = import_hdf5(src, out_store, overwrite=overwrite, progress=bar.update,
                        storage_options=storage_options_from(storage_opts))
    click.echo(f"wrote {d['store']} ({d['shards']} shards)")


@click.command("pack")
@click.argument("store")
@click.argument("out")
@click.option("--allow-incomplete", is_flag=True, help="Pack even if some shards are not done.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@storage_option
def pack_cmd(store: str, out: str, allow_incomplete: bool, overwrite: bool,
             storage_opts: tuple[str, ...]) -> None:
    """Pack a finished STORE (directory or object-store URL) into one uncompressed zip OUT
    (path or URL; servable over HTTP), with its dataset card README.md inside."""
    from tqdm import tqdm

    from dvfl_cache.cache.share import pack

    with tqdm(unit="file", desc="pack", leave=False) as bar:
        d = pack(store, out, allow_incomplete=allow_incomplete, overwrite=overwrite,
                 progress=bar.update, storage_options=storage_options_from(storage_opts))
    click.echo(f"wrote {d['zip']} ({d['files']} files, {_human_bytes(d['bytes'])}, manifest "
               f"{d['manifest']})" + ("" if d["complete"] else " (INCOMPLETE store)"))


@click.command("card")
@click.argument("store")
@storage_option
def card_cmd(store: str, storage_opts: tuple[str, ...]) -> None:
    """Write STORE's dataset card (README.md with a YAML header) and manifest.sha256 into it."""
    from tqdm import tqdm

    from dvfl_cache.cache.card import CARD_NAME
    from dvfl_cache.cache.share import write_card

    with tqdm(unit="file", desc="card", leave=False) as bar:
        fields = write_card(store, storage_options=storage_options_from(storage_opts),
                            progress=bar.update)
    click.echo(f"wrote {store.rstrip('/')}/{CARD_NAME} ({fields['manifest']['files']} files, "
               f"manifest {fields['manifest']['sha256']})")
