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


storage_option = click.option(
    "--storage-option", "storage_opts", multiple=True, metavar="KEY=VALUE",
    help="fsspec storage setting for s3://, gs://, ... addresses (repeatable), e.g. "
         "endpoint_url=http://127.0.0.1:9000, profile=lab, anon=true; the standard environment "
         "variables (AWS_ENDPOINT_URL, AWS_PROFILE, ...) also apply. Never stored or logged.")


def storage_options_from(pairs: tuple[str, ...]) -> dict | None:
    """--storage-option pairs -> fsspec storage options (None when none were given)."""
    return parse_key_values(pairs, "--storage-option") or None


def redacted_argv(argv: list[str]) -> list[str]:
    """The command line as typed, with every --storage-option value hidden (it may hold a
    secret); recorded in the store so its card can say exactly how it was built."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append(a.partition("=")[0] + "=***")
            hide = False
        elif a == "--storage-option":
            out.append(a)
            hide = True
        elif a.startswith("--storage-option="):
            out.append("--storage-option=" + a.split("=", 2)[1] + "=***")
        else:
            out.append(a)
    return out


def canonical_command(ctx: click.Context, *, hide: tuple[str, ...] = ("storage_opts",)
                      ) -> list[str]:
    """This invocation as a command line: every option that differs from its default, with
    values of `hide` (secrets) replaced by KEY=***. Built from the parsed parameters, so it is
    the same however the command was launched (shell, torchrun, a test runner)."""
    words = ["dvfl-cache", *ctx.command_path.split()[1:]]  # however the group was launched
    args: list[str] = []
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            args += [str(v) for v in (value if isinstance(value, tuple) else (value,))]
            continue
        if value is None or value == p.default or (p.multiple and not value):
            continue
        flag = max(p.opts, key=len)
        if p.is_flag:
            args.append(flag)
            continue
        for v in (value if p.multiple else (value,)):
            shown = f"{str(v).partition('=')[0]}=***" if p.name in hide else str(v)
            args += [flag, shown]
    return words + args
