"""Secrets never printed: the one rule for showing a command line that may carry credentials.

Why a module of its own: a command line is shown in three kinds of places (the build records
kept for a store's card, the resume command printed on Ctrl-C, hints naming a command to run
again), built from parsed parameters or from the raw argv. All of them hide the value of every
`--storage-option KEY=VALUE` (keys, secrets, tokens, endpoints alike: which keys are secret is
the storage library's business, not ours) as `KEY=***`, so one function decides how.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SECRET_OPTIONS", "hide_argv", "hidden"]

# Options whose values may hold credentials.
SECRET_OPTIONS = ("--storage-option",)


def hidden(pair: str) -> str:
    """`KEY=VALUE` shown as `KEY=***`."""
    return f"{pair.partition('=')[0]}=***"


def hide_argv(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(argv with every secret option's value hidden, whether any was hidden).

    Both spellings are covered: `--storage-option KEY=V` and `--storage-option=KEY=V`."""
    out: list[str] = []
    hid = False
    after_flag = False
    for a in argv:
        if after_flag:
            out.append(hidden(a))
            hid, after_flag = True, False
            continue
        flag, eq, value = a.partition("=")
        if flag in SECRET_OPTIONS and eq:
            out.append(f"{flag}={hidden(value)}")
            hid = True
        else:
            out.append(a)
            after_flag = a in SECRET_OPTIONS
    return out, hid
