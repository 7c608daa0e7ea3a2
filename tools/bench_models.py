"""Benchmark the Video-FocalNet forward on CPU (8x224x224 by default).

1. Our vfl-nano forward against ``plain_forward`` (``dvfl_cache.models.reference``): the whole
   network transcribed plainly from the spec in the layouts the published code uses
   (channels-first copies, (B*H*W, C, T) regrouping for the temporal Conv1d, tokens transposed
   back before each downsampling). Same module, same weights; the logits must agree within 1e-5
   or the script stops. For each thread count and batch size the two forwards alternate (ours,
   plain, ours, ...) so load from other processes hits both alike; the ratio of the medians
   ours / plain is printed (< 1: ours is faster), for wall time and for the process's CPU time
   (steadier on a shared machine), with the load average before and after.
2. Latency of the listed variants: torch.inference_mode, warm-up runs, median of timed runs.

    python tools/bench_models.py [--threads 1,2] [--batches 1,4] [--runs 7] [--models vfl-nano]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from dvfl_cache.models import count_gmacs, count_params, create_model
from dvfl_cache.models.reference import plain_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402


def _time(fn, x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def _wall_and_cpu(fn, x: torch.Tensor) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads): on a shared machine the CPU
    time is the steadier of the two, since waiting for a core is not counted."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def compare_with_plain(model: torch.nn.Module, x: torch.Tensor, *, warmup: int, runs: int
                       ) -> dict:
    """Interleaved timings of ``model(x)`` and ``plain_forward(model, x)``; medians and ratio."""
    plain = lambda clips: plain_forward(model, clips)  # noqa: E731
    with torch.inference_mode():
        diff = (model(x) - plain(x)).abs().max().item()
        if diff > 1e-5:
            raise SystemExit(f"ours and plain_forward disagree: max |logit diff| {diff:.1e}")
        for _ in range(warmup):
            _time(model, x), _time(plain, x)
        pairs = [(_wall_and_cpu(model, x), _wall_and_cpu(plain, x)) for _ in range(runs)]
    ours, base = (statistics.median(p[i][0] for p in pairs) * 1e3 for i in (0, 1))
    ours_cpu, base_cpu = (statistics.median(p[i][1] for p in pairs) * 1e3 for i in (0, 1))
    return {"ours_ms": ours, "plain_ms": base, "ratio": ours / base, "max_abs_diff": diff,
            "ours_cpu_ms": ours_cpu, "plain_cpu_ms": base_cpu, "cpu_ratio": ours_cpu / base_cpu,
            "ours_faster_runs": sum(a[0] < b[0] for a, b in pairs), "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--batches", default="1,4", help="batch sizes of the plain comparison")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--models", default="vfl-nano",
                        help="comma-separated variants for the latency table ('' for none)")
    parser.add_argument("--json", action="store_true",
                        help="also print one JSON summary line (with the run's conditions)")
    args = parser.parse_args(argv)
    cond = _conditions.start("bench_models", argv)
    torch.manual_seed(0)
    model = create_model("vfl-nano", num_frames=args.frames).eval()
    summary: dict = {"frames": args.frames, "size": args.size, "runs": args.runs,
                     "torch": torch.__version__, "vs_plain": [], "latency": []}
    print(f"torch {torch.__version__}, input (B, {args.frames}, 3, {args.size}, {args.size}), "
          f"warm-up {args.warmup}, median of {args.runs} interleaved runs")
    for threads in _ints(args.threads):
        torch.set_num_threads(threads)
        for batch in _ints(args.batches):
            x = torch.randn(batch, args.frames, 3, args.size, args.size)
            load = os.getloadavg()[0]
            row = compare_with_plain(model, x, warmup=args.warmup, runs=args.runs)
            row.update(threads=threads, batch=batch, load_before=load,
                       load_after=os.getloadavg()[0])
            summary["vs_plain"].append(row)
            print(f"vfl-nano {threads} thread(s) batch {batch}: ours {row['ours_ms']:.0f} ms, "
                  f"plain {row['plain_ms']:.0f} ms, ratio {row['ratio']:.3f}; CPU time ratio "
                  f"{row['cpu_ratio']:.3f} ({row['ours_cpu_ms']:.0f} vs {row['plain_cpu_ms']:.0f}"
                  f" ms; ours faster in "
                  f"{row['ours_faster_runs']}/{args.runs} pairs; max |diff| "
                  f"{row['max_abs_diff']:.1e}; load {load:.2f} -> {row['load_after']:.2f})")

        x = torch.randn(1, args.frames, 3, args.size, args.size)
        for name in filter(None, args.models.split(",")):
            net = model if name == "vfl-nano" else create_model(name, num_frames=args.frames).eval()
            with torch.inference_mode():
                for _ in range(args.warmup):
                    _time(net, x)
                ms = statistics.median(_time(net, x) for _ in range(args.runs)) * 1e3
            gmacs = count_gmacs(net, frames=args.frames, size=args.size)
            print(f"{name:<10} {threads} thread(s) {count_params(net) / 1e6:7.2f} M params "
                  f"{gmacs:7.1f} GMACs {ms:9.1f} ms/clip {1e3 / ms:7.2f} clips/s")
            summary["latency"].append({"model": name, "threads": threads, "ms": ms,
                                       "gmacs": gmacs, "params": count_params(net)})
    summary = _conditions.record("bench_models", summary, cond)
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
