"""The names of a run directory's files, and the one reader of its metrics log.

Torch-free, so reports and the sweep plan can read runs without loading the training stack;
``dvfl_train.checkpoint`` (which writes these files) re-exports everything here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from dvfl_cache.errors import DvflError

__all__ = ["BEST", "CONFIG", "LAST", "METRICS", "RUN_FILES", "SUMMARY", "TENSORBOARD",
           "RunDirError", "checkpoint_file", "metric_lines", "read_metrics"]

log = logging.getLogger(__name__)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LAST = "last"   # checkpoint names: <name>.pt
BEST = "best"
RUN_FILES = (CONFIG, METRICS, SUMMARY, f"{LAST}.pt", f"{BEST}.pt")
TENSORBOARD = "tensorboard"  # a folder of event files (--tensorboard), beside METRICS


class RunDirError(DvflError):
    """A run directory that cannot be created, resumed or overwritten as asked."""


def checkpoint_file(run: str | os.PathLike, name: str = BEST) -> Path:
    """``<run>/<name>.pt``: ``last.pt`` or ``best.pt`` of a run directory."""
    return Path(run) / f"{name}.pt"


def metric_lines(path: str | os.PathLike) -> list[tuple[dict[str, Any] | None, str]]:
    """(record, raw line) per line of a metrics log; record None for a line that is not complete
    JSON (a run killed mid-write tears its last line). A missing file has no lines."""
    path = Path(path)
    if not path.exists():
        return []
    out: list[tuple[dict[str, Any] | None, str]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a torn line", path, number)
            out.append((None, raw))
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int):
            raise RunDirError(f"{path}:{number}: not a metrics record with an integer epoch")
        out.append((rec, raw))
    return out


def read_metrics(run: str | os.PathLike, *, kind: str | None = None) -> list[dict[str, Any]]:
    """Every complete record of ``<run>/metrics.jsonl`` (only ``type == kind`` ones if given)."""
    return [rec for rec, _ in metric_lines(Path(run) / METRICS)
            if rec is not None and (kind is None or rec.get("type") == kind)]
