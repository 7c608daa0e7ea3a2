"""Efficiency numbers of one model: parameters, GMACs per clip, latency, throughput, peak memory.

Latency is the median of several timed forwards after warm-up, in inference mode. Peak memory
is CUDA's max allocated on a GPU. On CPU it is the rise of the process's resident-set high-water
mark above its resident size just before one forward: glibc's ``malloc_trim`` first hands the
allocator's cached free pages back, otherwise a warmed-up forward reuses resident pages and reads
as ~0; Linux ``/proc/self/clear_refs`` resets the mark. Without /proc the growth of ``ru_maxrss``
is used, a lower bound that reads 0 when the process was bigger before. ``peak_mem_kind`` says
which was measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from dvfl_cache.models.flops import count_gmacs, count_params
from dvfl_cache.models.registry import is_foreign
from dvfl_cache.models.registry import create_model

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if found is None:
        raise OSError(f"{field} missing from {_STATUS}")
    return int(found.group(1))


def _maxrss_kib() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage // 1024 if sys.platform == "darwin" else usage  # bytes on macOS, KiB on Linux


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _cpu_peak_mib(run: Callable[[], Any]) -> tuple[float, str]:
    try:
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
        run()
        kind = "rss peak above baseline" + ("" if trim else " (untrimmed allocator, lower bound)")
        return (_status_kib("VmHWM") - before) / 1024, kind
    except OSError:
        before = _maxrss_kib()
        run()
        return (_maxrss_kib() - before) / 1024, "ru_maxrss growth (lower bound)"


def _cuda_peak_mib(run: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"


def profile_model(name_or_model: str | torch.nn.Module, *, frames: int = 8, size: int = 224,
                  num_classes: int = 101, batch_size: int = 1, device: str = "cpu",
                  overrides: Mapping[str, Any] | None = None, warmup: int = 2,
                  runs: int = 5) -> dict[str, Any]:
    """Profile a registered model by name (built with ``num_classes``, ``frames`` and
    ``overrides``) or a given model (moved to ``device``; its train/eval mode is restored).

    Returns params, gmacs (per clip), latency_ms (median, one batch), clips_per_s, peak_mem_mib
    and peak_mem_kind, plus the settings.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if isinstance(name_or_model, str) and is_foreign(name_or_model):
        from dvfl_cache.models.load import load_model

        name = name_or_model
        model = load_model(name, options=overrides, pretrained=False, num_classes=num_classes,
                           num_frames=frames, size=size).model
    elif isinstance(name_or_model, str):
        name = name_or_model
        model = create_model(name, num_classes=num_classes, num_frames=frames,
                             **dict(overrides or {}))
    else:
        if overrides:
            raise ValueError("overrides only apply when the model is given by name")
        model = name_or_model
        name = getattr(model, "arch", None) or type(model).__name__
        if getattr(model, "num_frames", frames) != frames:
            raise ValueError(f"model takes {model.num_frames} frames, asked to profile {frames}")
    dev = torch.device(device)
    was_training = model.training
    model = model.to(dev).eval()
    in_chans = getattr(model, "in_chans", 3)
    x = torch.randn(batch_size, frames, in_chans, size, size, device=dev)

    def run() -> None:
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    try:
        with torch.inference_mode():
            for _ in range(warmup):
                run()
            if dev.type == "cuda":
                peak_mib, peak_kind = _cuda_peak_mib(run, dev)
            else:
                peak_mib, peak_kind = _cpu_peak_mib(run)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    latency = statistics.median(times)
    result = dict(model=name, params=count_params(model),
                  gmacs=count_gmacs(model, frames=frames, size=size), frames=frames, size=size,
                  batch_size=batch_size, device=str(dev),
                  threads=torch.get_num_threads() if dev.type == "cpu" else None,
                  latency_ms=latency * 1e3, clips_per_s=batch_size / latency,
                  peak_mem_mib=peak_mib, peak_mem_kind=peak_kind)
    log.debug("profiled %s: %s", name, result)
    return result
