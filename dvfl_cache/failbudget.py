"""The one rule for "too many videos failed": a job in which more than ``max_failed`` of its
videos failed has failed, whatever it wrote.

Why a fraction with a small default (0.05): real copies of Kinetics-style datasets commonly miss
1-3% of their videos, which must not stop a week of work, while a wrong ``--root`` (every video
missing) or a broken decoder must never end in "done" with exit status 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from dvfl_cache.errors import DvflError
from dvfl_cache.settings import setting

__all__ = ["DEFAULT_MAX_FAILED", "TooManyFailed", "check_failed", "failed_line",
           "max_failed_setting"]

DEFAULT_MAX_FAILED = 0.05
MAX_FAILED_HELP = ("Fail the job (non-zero exit) when more than this fraction of its videos fail "
                   "to decode; the first few failures and the count are named.")
SHOWN = 3


def max_failed_setting():
    """The ``--max-failed`` field, declared here once for BuildConfig and FitConfig."""
    return setting(DEFAULT_MAX_FAILED, flag="--max-failed", low=0, high=1, metavar="FRACTION",
                   help=MAX_FAILED_HELP)


class TooManyFailed(DvflError):
    """More than ``--max-failed`` of a job's videos failed."""


def failed_line(failed: Sequence[tuple[str, str]], total: int, *, what: str) -> str:
    """'N of M videos failed <what>: path (reason); ...' with the first few named."""
    named = "; ".join(f"{p} ({r})" for p, r in failed[:SHOWN])
    more = f"; ... and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
    return f"{len(failed)} of {total} videos failed {what}: {named}{more}"


def check_failed(failed: Sequence[tuple[str, str]], total: int, max_failed: float, *,
                 what: str = "to decode", kept: str = "") -> None:
    """Raise ``TooManyFailed`` when ``len(failed) / total`` exceeds ``max_failed``.

    ``failed`` are distinct videos as (path, reason); ``kept`` says what was written anyway
    (and how to go on), appended to the line.
    """
    if total <= 0 or not failed or len(failed) / total <= max_failed:
        return
    raise TooManyFailed(f"{failed_line(failed, total, what=what)} (more than --max-failed "
                        f"{max_failed:g}){'; ' + kept if kept else ''}")
