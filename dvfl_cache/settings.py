"""A setting is declared once: a frozen-dataclass field whose metadata says how users set it.

``setting(default, flag="--lr", help=..., choices=..., low=...)`` is ``dataclasses.field`` plus
the command-line face of the field. The click options are derived from it by
``dvfl_cache.commands.options.options_from`` (names, defaults, help, choices and ranges), so the
dataclass is the only place a default or a help text is written. This module imports neither
click nor torch: configs that use it stay cheap to import and plain to read.

``parse_key_values`` is the one KEY=VALUE rule of every ``--*-opt`` option: a value is JSON
when it parses (``8``, ``0.1``, ``true``, ``[1,1,2,1]``), a bare comma list is a list
(``depths=1,1,2,1``), a bare word is a string (``temporal=stride``); text that starts like
JSON (``[``, ``{``, ``"``) but does not parse is an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from dvfl_cache.errors import DvflError

__all__ = ["check_finite", "check_options", "parse_key_values", "setting"]


def setting(default: Any = dataclasses.MISSING, *, flag: str | None = None, help: str = "",
            choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
            low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, finite: bool = True, path: str | None = None,
            metavar: str | None = None,
            key_values: bool = False, ordered: bool = False, multiple: bool = False,
            parse: Callable[[str], Any] | None = None, prefixes: tuple[str, ...] = (),
            default_factory: Any = dataclasses.MISSING, hash: bool | None = None) -> Any:
    """A dataclass field with its command-line face in ``metadata``.

    ``flag`` is the option name (``None``: not on the command line; ``"--amp/--no-amp"`` for a
    boolean pair). ``choices`` may be a callable so a registry is read when the options are
    made; ``prefixes`` admits any value starting with one of them besides the choices (model
    specs: ``hf:PATH``, ``py:MODULE:FUNCTION``). ``path`` is "file" or "dir" (to read: must
    exist) or "out_dir" (to write).
    ``key_values`` makes a repeatable KEY=VALUE option collected into a dict; ``multiple`` a
    repeatable option collected into a tuple. Otherwise a tuple field is a comma list of its
    length on the command line; ``low``/``high`` bound each item and ``ordered`` asks for
    MIN <= MAX. A float (or each float item) must be finite unless ``finite=False``: ``nan``
    passes every range check and ``inf`` most, and either would only fail deep in the work
    (``Beta(inf, inf)``) or, worse, run (an ``inf`` learning rate). A ``tuple[X, ...]`` field is a comma list of any length (duplicates dropped);
    ``parse`` turns each text item into its value (raising ``ValueError`` with the reason)
    where ``X`` is ``str``.
    """
    meta = {"flag": flag, "help": help, "choices": choices, "range": (low, high, low_open,
                                                                     high_open),
            "finite": finite,
            "path": path, "metavar": metavar, "key_values": key_values, "ordered": ordered,
            "multiple": multiple, "parse": parse, "prefixes": prefixes}
    return dataclasses.field(default=default, default_factory=default_factory, hash=hash,
                             metadata=meta)


def check_finite(record: Any) -> list[str]:
    """The float fields of the dataclass instance ``record`` (items of float tuples included)
    that hold ``nan`` or ``inf`` although their ``setting`` did not allow it, as
    'name=value must be a finite number': the same rule as the command line's, for records read
    from files or built in code."""
    problems = []
    for f in dataclasses.fields(record):
        if not f.metadata.get("finite", True):
            continue
        value = getattr(record, f.name)
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            problems.append(f"{f.name}={value} must be a finite number")
    return problems


def parse_key_values(pairs: Iterable[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE pairs -> dict (the rule in the module docstring); a malformed pair is a
    ``DvflError`` naming ``flag``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise DvflError(f"{flag}: expected KEY=VALUE, got {pair!r}")
        out[key] = _value(key, text, flag)
    return out


def _value(key: str, text: str, flag: str) -> Any:
    for candidate in (text, f"[{text}]") if "," in text else (text,):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    if text.lstrip()[:1] in ("[", "{", '"'):
        raise DvflError(f"{flag}: {key}: {text!r} is not a JSON value")
    return text


def check_options(given: Iterable[str], accepted: Iterable[str], *, what: str,
                  error: type[Exception] = DvflError) -> None:
    """The one unknown-option check: ``error`` listing the unknown and the accepted names."""
    accepted = set(accepted)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise error(f"unknown option(s) {', '.join(unknown)} for {what}; accepted: "
                    f"{', '.join(sorted(accepted))}")
