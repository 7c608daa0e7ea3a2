"""Benchmark a student's training throughput from a mixed and an unmixed cache, side by side.

The two caches are built with the same settings on the same synthetic videos, one of them with
``--mixup 0.8 --cutmix 1.0`` (every row mixed, the reference recipe). The student then trains
from each for the same epochs, interleaved (plain, mixed, plain, mixed, ...) so that load on a
shared machine hits both alike. A mixed row decodes its partner's clip too and mixes the pixels:
that is the cost measured. Reported: each epoch record's clips/s (training only, validation
excluded) and the build's wall time and store size.

    python tools/bench_mix.py [--rounds 2] [--epochs 2] [--size 64] [--frames 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

TINY = {"embed_dim": 16, "depths": [1, 1, 1, 1]}


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the results (with the run's conditions) here")
    args = ap.parse_args(argv)
    cond = _conditions.start("bench_mix", argv)
    torch.set_num_threads(args.threads)

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth
    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    work = Path(tempfile.mkdtemp(prefix="dvfl_bench_mix_"))
    root = work / "synth"
    write_synth(root, SynthConfig())
    index = build_index("ucf101", root, split=1, subset="train")
    caches, builds = {}, {}
    for name, mix in (("plain", {}), ("mixed", {"mixup": 0.8, "cutmix": 1.0})):
        out = work / f"{name}.zarr"
        t0 = time.perf_counter()
        build_cache(BuildConfig(out=str(out), teacher="vfl-nano", random_weights=True,
                                teacher_opts=TINY, views_per_video=args.epochs,
                                frames=args.frames, size=args.size, batch_size=16,
                                workers=args.workers, device="cpu", dtype="float16",
                                sampler={"jitter": [0.4, 0.4, 0.4, 0.1], "gray_p": 0.2},
                                **mix), index)
        builds[name] = (time.perf_counter() - t0, store_bytes(out))
        caches[name] = out
    rates: dict[str, list[float]] = {"plain": [], "mixed": []}
    for r in range(args.rounds):
        for name in ("plain", "mixed"):
            run = work / f"{name}_{r}"
            fit(FitConfig(dataset="ucf101", data_root=str(root), out_dir=str(run),
                          num_frames=args.frames, size=args.size, model_opts=TINY,
                          cache=str(caches[name]), alpha=0.5, epochs=args.epochs,
                          warmup_epochs=0, batch_size=args.batch, workers=args.workers,
                          device="cpu", val_subset=4, val_every=args.epochs))
            for line in (run / "metrics.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if rec["type"] == "epoch":
                    rates[name].append(rec["clips_per_s"])
    print(f"{len(index)} training videos, {args.frames} frames at {args.size} px, batch "
          f"{args.batch}, {args.workers} decoding worker(s), {args.threads} thread(s)")
    print("| cache | build s | store bytes | student clips/s per epoch | median |")
    print("|---|---:|---:|---|---:|")
    for name in ("plain", "mixed"):
        seconds, size = builds[name]
        print(f"| {name} | {seconds:.1f} | {size:,} | "
              f"{', '.join(f'{x:.2f}' for x in rates[name])} | "
              f"{statistics.median(rates[name]):.2f} |")
    ratio = statistics.median(rates["mixed"]) / statistics.median(rates["plain"])
    print(f"mixed / plain clips/s: {ratio:.2f}")
    out = _conditions.record("bench_mix", {
        "settings": vars(args) | {"json": None}, "training_videos": len(index),
        "rows": [{"cache": name, "build_s": round(builds[name][0], 2),
                  "store_bytes": builds[name][1], "clips_per_s": rates[name],
                  "median_clips_per_s": statistics.median(rates[name])}
                 for name in ("plain", "mixed")],
        "mixed_over_plain": ratio}, cond)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
