"""Click options derived from dataclass settings, and the options of commands that read a
dataset.

``options_from(cls, names)`` turns fields declared with ``dvfl_cache.settings.setting`` into
click options: the option's Python name is the field's, so a command's keyword arguments are
the dataclass's and no translation table exists anywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import click

from dvfl_cache.data.readers import KINDS, SUBSETS
from dvfl_cache.errors import DvflError
from dvfl_cache.redact import hidden
from dvfl_cache.settings import parse_key_values as _parse_key_values

log = logging.getLogger(__name__)


def group(*options: Callable) -> Callable:
    """One decorator applying ``options`` in the order listed (as they appear in --help)."""
    def decorate(f: Callable) -> Callable:
        for opt in reversed(options):
            f = opt(f)
        return f
    return decorate


def options_from(cls: type, names: Sequence[str], **changes: dict[str, Any]) -> Callable:
    """Click options for the fields ``names`` of the dataclass ``cls``, from their metadata.

    ``changes[name]`` replaces metadata keys for one command (``default``, ``help``,
    ``required``) where a command gives a field another meaning or default.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return group(*(_option(fields[n], hints[n], changes.get(n, {})) for n in names))


def field_values(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` (a command's keyword arguments) that are fields of ``cls``,
    removed from ``params``."""
    return {f.name: params.pop(f.name) for f in dataclasses.fields(cls) if f.name in params}


def _option(f: dataclasses.Field, hint: Any, change: dict[str, Any]) -> Callable:
    meta = {**f.metadata, **change}
    if not meta.get("flag"):
        raise TypeError(f"field {f.name} has no command-line flag")
    if "default" in change:
        default = change["default"]
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        default = None
    kind = _strip_none(hint)
    kw: dict[str, Any] = dict(help=meta.get("help") or None, metavar=meta.get("metavar"),
                              required=meta.get("required", False))
    if meta.get("key_values"):
        return click.option(meta["flag"], f.name, multiple=True, callback=_key_values,
                            **{**kw, "metavar": "KEY=VALUE"})
    if meta.get("multiple"):  # repeatable: --cache A --cache B
        return click.option(meta["flag"], f.name, multiple=True, **kw)
    if kind is bool:  # "--x/--no-x" is a pair; a lone "--x" a flag that turns the default over
        pair = "/" in meta["flag"]
        flag = {} if pair else {"is_flag": True, "flag_value": not default}
        return click.option(meta["flag"], f.name, default=default, **flag, show_default=pair,
                            **{k: v for k, v in kw.items() if k != "metavar"})
    low, high, low_open, high_open = meta.get("range") or (None, None, False, False)
    if meta.get("choices") is not None:
        choices = meta["choices"]
        names = list(choices() if callable(choices) else choices)
        kw["type"] = (ChoiceOrSpec(names, tuple(meta["prefixes"])) if meta.get("prefixes")
                      else click.Choice(names))
    elif meta.get("path"):  # "file" / "dir" to read (must exist), "out_dir" to write
        kw["type"] = click.Path(exists=meta["path"] != "out_dir",
                                dir_okay=meta["path"] != "file", file_okay=meta["path"] == "file")
    elif typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        any_length = len(items) == 2 and items[1] is Ellipsis
        kw["type"] = _Items(items[0], None if any_length else len(items), low=low, high=high,
                            low_open=low_open, high_open=high_open,
                            finite=meta.get("finite", True),
                            ordered=meta.get("ordered", False), parse=meta.get("parse"))
        kw["metavar"] = kw["metavar"] or (
            f"{_ITEM_NAMES.get(items[0], 'X')},..." if any_length else ",".join(["N"] * len(items)))
    elif kind is int:
        kw["type"] = (int if low is None and high is None else
                      click.IntRange(low, high, min_open=low_open, max_open=high_open))
    elif kind is float:
        kw["type"] = (FiniteFloat(low, high, min_open=low_open, max_open=high_open)
                      if meta.get("finite", True) else
                      click.FloatRange(low, high, min_open=low_open, max_open=high_open))
    shown = (",".join(x if isinstance(x, str) else f"{x:g}" for x in default)
             if isinstance(default, tuple) else default is not None)
    return click.option(meta["flag"], f.name, default=default, show_default=shown, **kw)


class ChoiceOrSpec(click.Choice):
    """One of the choices, or a value starting with one of ``prefixes`` (hf:PATH, py:M:F)."""

    def __init__(self, choices: Sequence[str], prefixes: tuple[str, ...]):
        super().__init__(choices)
        self.prefixes = prefixes

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join([*self.choices, *(f"{p}..." for p in self.prefixes)]) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, str) and value.startswith(self.prefixes):
            return value
        return super().convert(value, param, ctx)


def _strip_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _key_values(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict:
    try:
        return _parse_key_values(value, param.opts[0])
    except DvflError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


class FiniteFloat(click.FloatRange):
    """A float within the range that is neither ``nan`` (which passes every comparison) nor
    ``inf``: the one float type of options derived from settings (``setting(finite=...)``)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        x = super().convert(value, param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return x


_ITEM_NAMES = {int: "N", float: "X", str: "S"}


class _Items(click.ParamType):
    """Comma-separated items of one type: exactly ``count`` of them (``--area 0.08,1``, ``--jitter
    0.4,0.4,0.4,0.1``; numbers within the field's range, MIN <= MAX when ``ordered``), or, with
    ``count`` None, one or more with duplicates dropped (``--alphas 0.3,0.5``, ``--eval-views
    1,4x3``, each text item through ``parse``)."""

    name = "list"

    def __init__(self, item: type, count: int | None, *, low, high, low_open, high_open,
                 finite, ordered, parse):
        self.item, self.count, self.ordered, self.parse = item, count, ordered, parse
        self.finite = finite
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        texts = [x.strip() for x in str(value).split(",")]
        if self.count is None:
            texts = [x for x in texts if x]
        what = {int: "integers", float: "numbers"}.get(self.item, "items")
        try:
            if self.item is str:
                values = tuple(self.parse(x) if self.parse else x for x in texts)
            else:
                values = tuple(self.item(x) for x in texts)
        except ValueError as exc:
            detail = str(exc) if self.item is str else f"expected comma-separated {what}"
            self.fail(f"{detail}, got {value!r}", param, ctx)
        if self.count is not None and len(values) != self.count:
            self.fail(f"expected {self.count} comma-separated {what}, got {value!r}", param, ctx)
        if not values:
            self.fail(f"expected one or more comma-separated {what}, got {value!r}", param, ctx)
        for x in values if self.item is not str else ():
            if self.finite and not math.isfinite(x):
                self.fail(f"{x} is not a finite number in {value!r}", param, ctx)
            if ((self.low is not None and (x < self.low or (self.low_open and x == self.low)))
                    or (self.high is not None
                        and (x > self.high or (self.high_open and x == self.high)))):
                self.fail(f"{x:g} is outside {'(' if self.low_open else '['}{self.low}, "
                          f"{self.high}{')' if self.high_open else ']'} in {value!r}", param, ctx)
        if self.ordered and list(values) != sorted(values):
            self.fail(f"need MIN <= MAX, got {value!r}", param, ctx)
        return values if self.count is not None else tuple(dict.fromkeys(values))


def dataset_options(*, subset: str = "train", subset_help: str = "") -> Callable:
    """--dataset/--root/--split/--subset/--videos/--annotations, or --index."""
    opts = [
        click.option("--dataset", "kind", type=click.Choice(KINDS), default=None,
                     help="Dataset kind; read its annotations under --root."),
        click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder where the dataset was extracted (or where an --index's "
                          "videos are now)."),
        click.option("--split", type=int, default=1, show_default=True, help="Split number."),
        click.option("--subset", type=click.Choice(SUBSETS), default=subset,
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
         "(`build`: every core, shared with its decoders; OMP_NUM_THREADS, when set, wins); on "
         "a GPU, PyTorch's default.")


def index_from_options(kind, root, split, subset, index_path, videos_dir, annotations):
    from dvfl_cache.data.source import resolve_index

    return resolve_index(index=index_path, kind=kind, root=root, split=split, subset=subset,
                         videos_dir=videos_dir, annotations=annotations)


def key_values_option(flag: str, name: str, help: str) -> Callable:
    """A repeatable KEY=VALUE option parsed by the one rule (``dvfl_cache.settings``)."""
    return click.option(flag, name, multiple=True, metavar="KEY=VALUE", callback=_key_values,
                        help=help)


def check_model_options(name: str, options: dict[str, Any], flag: str) -> None:
    """Unknown constructor options and values of the wrong type as a usage error of ``flag``."""
    from dvfl_cache.models.registry import MODEL_NAMES, ModelOptionError, check_model_options

    if name not in MODEL_NAMES:
        return  # a checkpoint path, hf: or py: spec: its loader checks its own options
    try:
        check_model_options(name, options, flag=flag)
    except ModelOptionError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


storage_option = click.option(
    "--storage-option", "storage_opts", multiple=True, metavar="KEY=VALUE",
    help="fsspec storage setting for s3://, gs://, ... addresses (repeatable), e.g. "
         "endpoint_url=http://127.0.0.1:9000, profile=lab, anon=true; the standard environment "
         "variables (AWS_ENDPOINT_URL, AWS_PROFILE, ...) also apply. Never stored or logged.")


def storage_options_from(pairs: tuple[str, ...]) -> dict | None:
    """--storage-option pairs -> fsspec storage options (None when none were given)."""
    return _parse_key_values(pairs, "--storage-option") or None


def _shown(value: Any) -> str:
    """A parsed value as the command line spells it (the inverse of the KEY=VALUE rule and of
    comma tuples): lists and tuples comma-joined, numbers and words as they are."""
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def canonical_command(ctx: click.Context, *, hide: tuple[str, ...] = ("storage_opts",)
                      ) -> list[str]:
    """This invocation as a command line: every option that differs from its default, with
    values of `hide` (secrets) replaced by KEY=***. Built from the parsed parameters, so it is
    the same however the command was launched (shell, torchrun, a test runner)."""
    # The sub-command names, not the launcher: `python -m dvfl_cache.cli` (torchrun's form) makes
    # the root's name "python -m dvfl_cache.cli", which command_path would carry along.
    names, c = [], ctx
    while c.parent is not None:
        names.append(c.info_name)
        c = c.parent
    words = ["dvfl-cache", *reversed(names)]
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
            if value:
                args.append(flag)
            elif p.secondary_opts:  # --x/--no-x whose default is on
                args.append(p.secondary_opts[0])
            continue
        if isinstance(value, dict):  # KEY=VALUE options, parsed by the one rule
            values = [f"{k}={_shown(v)}" for k, v in value.items()]
        elif p.multiple:
            values = [str(v) for v in value]
        else:
            values = [_shown(value)]
        for v in values:
            args += [flag, hidden(v) if p.name in hide else v]
    return words + args


# -- --recipe and --print-config -----------------------------------------------------------------

# Sampler keys a run sets itself (mode, its data seed, --frames): a recipe's never reach the
# sampler options.
_RUN_SET_SAMPLER = ("mode", "seed", "num_frames")
# With a --cache, fit and sweep replay the cache's mixing: a recipe's mixing is the build's.
_MIX = ("mixup", "cutmix", "mix_prob")


def recipe_options(stage: str, *, grid: dict[str, str] | None = None) -> Callable:
    """``--recipe NAME`` and ``--print-config`` on the command of ``stage`` (build, fit, sweep).

    The one place a recipe becomes a command's settings (``resolve_recipe``): every option the
    user left at its default takes the recipe's value, an option given on the command line (or
    by the environment, or a default map) keeps the user's. ``grid`` maps a recipe setting to a
    list option that sweeps it (sweep: ``alpha -> alphas``). ``--print-config`` reaches the
    command as ``print_config``; the command prints its resolved record and returns.
    """
    from dvfl_cache.recipes import list_recipes

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def command(*args, recipe: str | None, **params):
            if recipe is not None:
                ctx = click.get_current_context()
                explicit = {name for name in params
                            if ctx.get_parameter_source(name) not in (
                                None, click.core.ParameterSource.DEFAULT)}
                params = resolve_recipe(recipe, stage, params, explicit=explicit, grid=grid or {})
            return f(*args, **params)

        return group(
            click.option("--recipe", default=None, metavar="NAME",
                         help="Set every default to a published recipe ("
                              f"{', '.join(list_recipes())}; docs/reference-differences.md); "
                              "options given explicitly win."),
            click.option("--print-config", is_flag=True,
                         help="Print the resolved settings as the JSON the run would record, "
                              "and exit without doing any work."),
        )(command)
    return decorate


def resolve_recipe(name: str, stage: str, params: dict[str, Any], *, explicit: set[str],
                   grid: dict[str, str]) -> dict[str, Any]:
    """``params`` (a command's keyword arguments) with recipe ``name``'s values for every
    parameter not in ``explicit``. Library-level rules, in one place:

    - ``sampler``: merged key by key under the user's ``--sampler-opt`` entries (fit, sweep), or
      spread over the command's sampler options (build), where a recipe value no option can
      express must equal the option-less default (else a ``RecipeError``: the recipe cannot be
      applied); keys the run sets itself (``num_frames``, ...) are left to the run.
    - fit/sweep with a ``--cache``: no mixing from the recipe (the cache's own mixing is
      replayed); without any teacher: no KD weight (FitConfig's rule makes it plain CE).
    - ``pending`` settings (not yet fields of this dvfl) are skipped.
    - a setting the recipe ``needs`` from the user (``--init``) that is missing is a warning.
    """
    from dvfl_cache.recipes import RecipeError, get_recipe

    recipe = get_recipe(name)
    prefix = "build" if stage == "build" else "train"
    values = recipe.values(stage)
    sampler = {k: _plain(v) for k, v in values.pop("sampler").items()
               if k not in _RUN_SET_SAMPLER and f"sampler.{k}" not in recipe.pending}
    values = {k: v for k, v in values.items() if f"{prefix}.{k}" not in recipe.pending}
    if stage != "build":
        if params.get("cache"):
            values = {k: v for k, v in values.items() if k not in _MIX}
        if not (params.get("cache") or params.get("teacher_weights")
                or str(params.get("teacher") or "").startswith(("hf:", "py:"))):
            values.pop("alpha", None)
    out = dict(params)
    for key, value in values.items():
        option = grid.get(key, key)
        if option not in out:
            raise RecipeError(f"recipe {name!r} sets {key!r}, which `{stage}` has no option for")
        if option not in explicit:
            out[option] = (value,) if key in grid else value
    if "sampler" in out:  # fit, sweep: one KEY=VALUE mapping, the user's entries win
        out["sampler"] = {**sampler, **(out["sampler"] if "sampler" in explicit else {})}
    else:
        from dvfl_cache.data.views import ViewSampler

        defaults = {f.name: f.default for f in dataclasses.fields(ViewSampler)}
        for key, value in sampler.items():
            if key in out:
                if key not in explicit:
                    out[key] = tuple(value) if isinstance(value, list) else value
            elif _plain(defaults.get(key)) != value:
                raise RecipeError(f"recipe {name!r} sets sampler {key}={value!r}, which `{stage}` "
                                  "has no option for")
    for key, what in recipe.needs.items():
        # a build that needs no weights file: a random teacher, or --teacher CKPT / hf:PATH
        # (its own)
        teacher = str(out.get("teacher") or "")
        own_weights = key == "weights" and (out.get("random_weights") or os.path.isfile(teacher)
                                            or teacher.startswith("hf:"))
        if key in out and out[key] is None and not own_weights:
            flag = next((p for p in click.get_current_context().command.params
                         if p.name == key), None)
            log.warning("--recipe %s: the reference %s; pass the file with %s FILE", name,
                        what, flag.opts[0] if flag else key)
    return out


def _plain(value: Any) -> Any:
    """Tuples as lists: the form a config records and compares on --resume."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def echo_config(record: dict[str, Any]) -> None:
    """``--print-config``: the record a run would write, as JSON on stdout."""
    import json

    click.echo(json.dumps(record, indent=2))
