"""Where a run computes: the device, and how many CPU threads compute uses beside the decoders.

Device: every command takes ``--device auto|cpu|cuda|cuda:N|mps``; ``resolve_device`` turns it
into a ``torch.device`` in one place, so "auto" means the same everywhere (CUDA, then MPS, then
the CPU), a bare "cuda" under torchrun means this process's GPU (``LOCAL_RANK``), and a device
this machine lacks is one clear error instead of a failure deep inside the first forward.

Threads: PyTorch starts one intra-op thread per physical core, and each DataLoader worker is a
separate process decoding on those same cores. On a small CPU machine the two fight: on 2 cores,
the demo's sweep of tiny students took 25% less time, and its teacher 14% less, with 1 compute
thread beside 1 decoding worker than with 2 + 1 (docs/demo.md, item 8). So on the CPU the
commands give compute the cores that the workers (and the other processes of a torchrun on this
machine) leave, unless the user says otherwise with ``--threads`` or ``OMP_NUM_THREADS``. On a
GPU the host threads only launch kernels, so nothing is changed there unless asked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dvfl_cache.errors import DvflError

if TYPE_CHECKING:
    import torch

__all__ = ["auto_threads", "available_cores", "openmp_wait_env", "passive_openmp_waits",
           "resolve_device", "set_compute_threads"]

log = logging.getLogger(__name__)

_torch_default: int | None = None  # torch's own count, read before we first change it


def resolve_device(name: str | None = "auto") -> torch.device:
    """``--device`` as a ``torch.device``; None and "auto" pick CUDA, then MPS, then the CPU."""
    import torch

    if name is None or name == "auto":
        name = ("cuda" if torch.cuda.is_available()
                else "mps" if torch.backends.mps.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise DvflError(f"--device {name}: {exc} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DvflError(f"--device {name}: CUDA is not available on this machine "
                            "(use --device cpu, or auto)")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))
                               % torch.cuda.device_count())
        elif dev.index >= torch.cuda.device_count():
            raise DvflError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DvflError(f"--device {name}: MPS is not available on this machine")
    return dev


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# What the user may have chosen about OpenMP waiting (standard, GNU, LLVM/Intel runtimes).
OPENMP_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def openmp_wait_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``environ`` for passive OpenMP waiting: none when the user set
    any of ``OPENMP_WAIT_VARS`` (their choice wins; ``GOMP_SPINCOUNT=300000`` alone restores
    libgomp's own default)."""
    if any(environ.get(k) for k in OPENMP_WAIT_VARS):
        return {}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


def passive_openmp_waits() -> dict[str, str]:
    """Ask for passive OpenMP waiting in this process (see the module docstring); returns what
    was set. The runtime reads it once, when torch loads it, so this must run before the
    first ``import torch`` (the entry points call it first); afterwards it only reaches
    child processes started with this environment."""
    added = openmp_wait_env(os.environ)
    os.environ.update(added)
    if added and "torch" in sys.modules:
        log.debug("OpenMP wait policy set after torch was imported: applies to child "
                  "processes only")
    return added


def auto_threads(*, cores: int, workers: int, local_processes: int = 1,
                 share_cores: bool = False) -> int:
    """Compute threads for one process: its share of the cores, less one per decoding worker
    (with ``share_cores``, the whole share: the decoders run on the same cores), at least 1."""
    if cores < 1 or workers < 0 or local_processes < 1:
        raise ValueError(f"need cores >= 1, workers >= 0, local_processes >= 1; got {cores}, "
                         f"{workers}, {local_processes}")
    return max(1, cores // local_processes - (0 if share_cores else workers))


def set_compute_threads(*, device: torch.device, workers: int, threads: int = 0,
                        share_cores: bool = False) -> int | None:
    """Set torch's intra-op threads for a run on ``device`` (see ``resolve_device``) with
    ``workers`` decoding processes.

    ``threads`` > 0 is used as given. With 0 (auto) the count is chosen by ``auto_threads`` on a
    CPU device (``share_cores``: see there; the cache build), and left alone on an accelerator
    or when ``OMP_NUM_THREADS`` is set (the user's choice wins). Returns the count set, or None
    when torch's own default was kept.
    """
    import torch

    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: auto), got {threads}")
    if threads == 0:
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        if device.type != "cpu":
            return None
        global _torch_default
        if _torch_default is None:
            _torch_default = torch.get_num_threads()
        cores = min(available_cores(), _torch_default)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = auto_threads(cores=cores, workers=workers, local_processes=local,
                               share_cores=share_cores)
        log.info("CPU compute threads: %d (%d core(s), %d decoding worker(s)%s%s); --threads N "
                 "to choose", threads, cores, workers,
                 " sharing them" if share_cores and workers else "",
                 f", {local} processes on this machine" if local > 1 else "")
    torch.set_num_threads(threads)
    return threads
