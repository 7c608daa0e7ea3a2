"""The conditions a benchmark ran under, recorded beside its numbers.

Why: this project's CPU box changes speed by up to 3x from day to day and is shared with other
jobs, so a number without its machine, its load and its OpenMP wait policy cannot be compared
with another. Every benchmark in ``tools/`` calls ``start()`` before it measures and
``finish()`` after, and writes the result under ``"conditions"`` of its JSON. What cannot be
found is recorded as None, never guessed.

The scripts import this module by name (``python tools/X.py`` puts ``tools/`` on ``sys.path``;
a test loading a tool by its path puts it there itself).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
PACKAGES = ("torch", "av", "zarr", "numpy", "numcodecs", "click", "dvfl")
# What decides how OpenMP threads wait (dvfl's entry points set OMP_WAIT_POLICY=PASSIVE unless
# one of these is set; see dvfl_cache.runtime.passive_openmp_waits).
OPENMP_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
REPO = Path(__file__).resolve().parents[1]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first 'model name' of /proc/cpuinfo (None where there is none, e.g. not Linux)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _threads() -> int | None:
    """torch's intra-op threads, if this process has imported torch (never imports it: the
    OpenMP environment must be settled before torch loads its runtime)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def start(tool: str, argv: list[str] | None = None) -> dict[str, Any]:
    """The conditions before measuring: machine, software, environment, load, and the command
    (``tool``, e.g. "bench_data", with ``argv``, by default this process's arguments)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "schema": SCHEMA,
        "date_utc": now_utc(),
        "end_utc": None,
        "command": shlex.join(["python", f"tools/{tool}.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "threads": _threads(),
        "openmp_env": {k: os.environ.get(k) for k in OPENMP_ENV},
        "load_before": _load(),
        "load_after": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def finish(cond: dict[str, Any]) -> dict[str, Any]:
    """``cond`` completed after measuring: end time, load after, torch's threads."""
    return {**cond, "end_utc": now_utc(), "load_after": _load(),
            "threads": _threads() if _threads() is not None else cond.get("threads")}


def unknown(**known: Any) -> dict[str, Any]:
    """Conditions of a run recorded before this module existed: every field None but what the
    published text states (``known``)."""
    empty: dict[str, Any] = {"schema": SCHEMA, "date_utc": None, "end_utc": None, "command": None,
                             "git_commit": None, "git_dirty": None, "cpu_model": None,
                             "cores": None, "cores_usable": None, "threads": None,
                             "openmp_env": {k: None for k in OPENMP_ENV}, "load_before": None,
                             "load_after": None, "python": None, "platform": None,
                             "packages": {name: None for name in PACKAGES}}
    unexpected = set(known) - set(empty)
    if unexpected:
        raise KeyError(f"not a condition: {sorted(unexpected)}")
    return {**empty, **known}


def record(kind: str, result: dict[str, Any], cond: dict[str, Any]) -> dict[str, Any]:
    """``result`` as a result file of ``benchmarks/results/`` wants it: its ``kind``, written by
    a tool, and ``cond`` completed now (``finish``)."""
    return {"kind": kind, "source": "tool", **result, "conditions": finish(cond)}
