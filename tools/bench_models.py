"""Benchmark the Video-FocalNet forward on CPU (batch 1, 8x224x224 by default).

1. Our nano forward against the same network with every modulation layer swapped for the plain
   eager transcription of the spec (``dvfl_cache.models.reference``: channels-first copies,
   (B*H*W, C, T) regrouping for the temporal Conv1d). Same weights, outputs compared. Runs are
   interleaved (ours, plain, ours, ...) so load from other processes hits both alike; the
   ratio ours / plain is printed (< 1 means ours is faster).
2. Latency of the listed variants: torch.inference_mode, warm-up runs, median of timed runs.

    .venv/bin/python tools/bench_models.py [--threads N] [--runs 5] [--models vfl-nano,vfn-base]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dvfl_cache.models import count_gmacs, count_params, create_model
from dvfl_cache.models.reference import use_reference_modulation


def _time(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default="vfl-nano,vfn-base",
                        help="comma-separated variants for the latency table")
    parser.add_argument("--json", action="store_true", help="also print one JSON summary line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, args.frames, 3, args.size, args.size)
    summary: dict = {"threads": torch.get_num_threads(), "frames": args.frames,
                     "size": args.size, "runs": args.runs}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"input {tuple(x.shape)}, warm-up {args.warmup}, median of {args.runs}")

    ours = create_model("vfl-nano", num_frames=args.frames).eval()
    plain = create_model("vfl-nano", num_frames=args.frames).eval()
    plain.load_state_dict(ours.state_dict())
    use_reference_modulation(plain)
    with torch.inference_mode():
        diff = (ours(x) - plain(x)).abs().max().item()
        for _ in range(args.warmup):
            _time(ours, x), _time(plain, x)
        pairs = [(_time(ours, x), _time(plain, x)) for _ in range(args.runs)]
    t_ours = statistics.median(p[0] for p in pairs) * 1e3
    t_plain = statistics.median(p[1] for p in pairs) * 1e3
    print(f"vfl-nano modulation: ours {t_ours:.1f} ms, plain eager {t_plain:.1f} ms, "
          f"ratio ours/plain {t_ours / t_plain:.3f} (max |logit diff| {diff:.1e})")
    summary["nano_vs_plain"] = {"ours_ms": t_ours, "plain_ms": t_plain,
                                "ratio": t_ours / t_plain, "max_abs_diff": diff}
    del plain

    summary["latency"] = {}
    for name in args.models.split(","):
        model = ours if name == "vfl-nano" else create_model(name, num_frames=args.frames).eval()
        with torch.inference_mode():
            for _ in range(args.warmup):
                _time(model, x)
            ms = statistics.median(_time(model, x) for _ in range(args.runs)) * 1e3
        gmacs = count_gmacs(model, frames=args.frames, size=args.size)
        print(f"{name:<10} {count_params(model) / 1e6:7.2f} M params {gmacs:7.1f} GMACs "
              f"{ms:9.1f} ms/clip {1e3 / ms:7.2f} clips/s")
        summary["latency"][name] = {"ms": ms, "gmacs": gmacs, "params": count_params(model)}
        del model
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
