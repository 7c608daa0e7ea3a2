"""Options shared by commands that read a dataset, and KEY=VALUE model options."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from dvfl_cache.commands.data import KINDS


def dataset_options(*, subset: str = "train", subset_help: str = "") -> Callable:
    """--dataset/--root/--split/--subset/--videos/--annotations, or --index."""
    opts = [
        click.option("--dataset", "kind", type=click.Choice(KINDS), default=None,
                     help="Dataset kind; read its annotations under --root."),
        click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder where the dataset was extracted (or where an --index's "
                          "videos are now)."),
        click.option("--split", type=int, default=1, show_default=True, help="Split number."),
        click.option("--subset", type=click.Choice(["train", "test", "val"]), default=subset,
                     show_default=True, help=subset_help or "Which subset of the split."),
        click.option("--index", "index_path", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="An index JSON from `dvfl-cache index` instead of "
                                        "--dataset."),
        click.option("--videos", "videos_dir", type=click.Path(exists=True, file_okay=False),
                     default=None, help="Video folder, if not found under --root."),
        click.option("--annotations", type=click.Path(exists=True), default=None,
                     help="Annotation folder or file, if not found under --root."),
    ]

    def decorate(f: Callable) -> Callable:
        for opt in reversed(opts):
            f = opt(f)
        return f
    return decorate


threads_option = click.option(
    "--threads", type=click.IntRange(0), default=0, show_default=True,
    help="CPU compute threads. 0: on a CPU device, the cores the decoding --workers leave "
         "(OMP_NUM_THREADS, when set, wins); on a GPU, PyTorch's default.")


def index_from_options(kind, root, split, subset, index_path, videos_dir, annotations):
    from dvfl_cache.data.source import resolve_index

    return resolve_index(index=index_path, kind=kind, root=root, split=split, subset=subset,
                         videos_dir=videos_dir, annotations=annotations)


def parse_key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """KEY=VALUE pairs -> dict; values are JSON when they parse (8, 0.1, [1,1,2,1], true)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
