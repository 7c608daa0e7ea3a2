"""What the long benchmarks (bench_fidelity, bench_fewer_frames) share: resumable stages and the
synthetic task they train on.

Those runs take hours of CPU, so each step is a named stage whose wall and CPU seconds and
findings are written (atomically) to ``progress.json`` in the working folder, and to ``--json``,
after every stage: a rerun on the same folder skips what is recorded there, and a run cut short
still says everything it finished. A rerun with arguments that change what is computed is
refused, since its stages would not add up to one result.

The scripts import this module by name after putting their own folder on ``sys.path`` (which
``python tools/X.py`` does by itself, but a test loading a tool by its path does not).
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dvfl_cache.atomic import write_json_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

# The settings every arm of those benchmarks trains with (on top of its own).
COMMON_FIT = dict(dataset="ucf101", optimizer="adamw", weight_decay=0.05, warmup_lr=0.0,
                  min_lr=0.0, device="cpu", seed=0, amp=False)


def cpu_seconds() -> float:
    """User + system time of this process and its reaped children (decoding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stages:
    """The results known so far (see the module docstring).

    ``free``: argument names that change nothing computed (output paths, verbosity, ...);
    ``normalise``: maps the remaining arguments to their comparable form (e.g. a list whose
    order does not matter, sorted); ``carry``: the top-level keys (with their empty value) that
    a continued run takes over from the recorded one besides ``stages`` (and ``results``);
    ``results``: keep what each stage's function returns under ``results`` (it must then be
    JSON-able); without it the return values are ignored. ``kind`` names the benchmark; the
    record keeps this call's conditions (``tools/_conditions.py``) under ``conditions`` and
    every call's, a continued run's included, under ``calls``.
    """

    def __init__(self, work: Path, out: Path | None, header: dict[str, Any], *,
                 free: Iterable[str] = (), normalise: Callable[[dict], dict] = dict,
                 carry: dict[str, Any] | None = None, results: bool = True,
                 kind: str = "benchmark", argv: list[str] | None = None):
        self.paths = [work / "progress.json", *([out] if out else [])]
        old = json.loads(self.paths[0].read_text()) if self.paths[0].is_file() else {}
        free = set(free)

        def computed(args: dict[str, Any]) -> dict[str, Any]:
            return normalise({k: v for k, v in args.items() if k not in free})

        if old and computed(old["args"]) != computed(header["args"]):
            raise SystemExit(f"{self.paths[0]} holds a run with other arguments; continue it "
                             "with those, or use another --work")
        self.keep_results = results
        carried = {"stages": {}, **({"results": {}} if results else {}), **(carry or {})}
        self.data = {"kind": kind, "source": "tool", **header,
                     **{k: old.get(k, empty) for k, empty in carried.items()}}
        self.cond = _conditions.start(kind, argv)
        self.calls = list(old.get("calls", []))

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def run(self, stage: str, fn: Callable[[], Any]) -> None:
        """Run ``fn`` as ``stage`` (wall and CPU seconds, decoding workers included) unless an
        earlier run finished it; what ``fn`` returns, unless None, is kept under ``results``
        (when the record keeps results)."""
        if self.done(stage):
            print(f"[{stage}] done earlier, skipped", file=sys.stderr, flush=True)
            return
        print(f"[{stage}] ...", file=sys.stderr, flush=True)
        wall, cpu = time.perf_counter(), cpu_seconds()
        found = fn()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        if self.keep_results and found is not None:
            self.data["results"][stage] = found
        self.data["stages"][stage] = {"wall_s": wall, "cpu_s": cpu}
        print(f"[{stage}] {wall:.0f} s wall, {cpu:.0f} s CPU", file=sys.stderr, flush=True)
        self.save()

    def save(self) -> None:
        self.data["conditions"] = _conditions.finish(self.cond)
        self.data["calls"] = [*self.calls, self.data["conditions"]]
        for path in self.paths:
            write_json_atomic(path, self.data, indent=1)


def synth_task(rec: Stages, data: Path, args: Any):
    """Stage ``synth``: the synthetic action videos (``args.classes``, ``videos_per_class``,
    ``video_size`` square, ``video_frames``) in ``data``; returns split 1's (train, test)
    indices."""
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth

    def synth() -> None:
        shutil.rmtree(data, ignore_errors=True)
        write_synth(data, SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class,
                                      width=args.video_size, height=args.video_size,
                                      frames=args.video_frames, seed=0))

    rec.run("synth", synth)
    return (build_index("ucf101", data, split=1, subset="train"),
            build_index("ucf101", data, split=1, subset="test"))
