"""Training-loader throughput beside raw decode throughput, on UCF101-like videos.

Generates synthetic 320x240 MPEG-4 AVI videos (UCF101's size and codec family) with the synth
generator, then measures in one run:
  raw decode   open + demux + seek + decode + RGB of the 8 sampled frames, one process
  + transform  the same plus crop/resize to 224/normalise (what one loader worker does)
  loader w=N   the trainer's own loader (``make_loader``: ClipDataset of sampled views,
               collate_clips, prefetch 4) with N workers shipping float clips, steady state
  loader u8    the same shipping uint8 pixels (the cut ``dvfl-train fit`` uses), turned into
               float here with ``as_input`` as the trainer does
and the RGB converter, PyAV's default (threaded) against ours (threads=1).
Goal: the loader reaches >= 80% of the raw decode rate per worker. Rates are given per wall
second and per CPU second of the processes doing the work (the latter is what to compare on a
machine shared with other jobs).

    python tools/bench_data.py [--videos 16 --frames 96 --clips 160 --workers 0,1,2]
    python tools/bench_data.py --quick      # smoke: 4 small videos, 64 px, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from dvfl_cache.data.dataset import ClipDataset, Cut, SampledViews
from dvfl_cache.data.decode import open_video
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.readers import build_index
from dvfl_cache.data.synth import SynthConfig, write_synth
from dvfl_cache.data.transforms import apply_view
from dvfl_cache.data.views import ViewSampler
from dvfl_train.train_data import as_input, make_loader


def make_dataset(root: Path, *, videos: int, frames: int, fmt: str) -> DatasetIndex:
    # at least two videos per class below 10 videos, so split 1 has train and test videos
    classes = min(10, videos) if videos >= 10 else max(1, videos // 2)
    cfg = SynthConfig(classes=classes, videos_per_class=-(-videos // classes), width=320,
                      height=240, frames=frames, format=fmt, seed=0)
    if not (root / "UCF-101").exists():
        write_synth(root, cfg, workers=min(2, os.cpu_count() or 1))
    train = build_index("ucf101", root, split=1, subset="train")
    test = build_index("ucf101", root, split=1, subset="test")
    return DatasetIndex(kind="ucf101", split=1, subset="all", classes=train.classes,
                        videos=train.videos + test.videos, root=train.root)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_rate(index: DatasetIndex, sampler: ViewSampler, clips: int, *,
             size: int | None) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second) decoding (and, with `size`,
    transforming) in this process."""
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < clips:
        for v in range(len(index)):
            with open_video(index.abspath(v)) as vid:
                view = sampler.sample(v, n, vid.info)
                frames = vid.frames(view.frames)
            if size is not None:
                apply_view(frames, view, size)
            n += 1
            if n == clips:
                break
    return clips / (time.perf_counter() - t0), clips / (time.process_time() - c0)


def loader_rate(index: DatasetIndex, sampler: ViewSampler, clips: int, *, workers: int,
                size: int, batch: int, as_uint8: bool = False) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second of the processes doing the work) of the
    training loader after its first batch (worker start-up excluded). The CPU rate counts
    the workers' CPU time (with 0 workers, this process's), so it stays meaningful on a
    machine shared with other jobs. `as_uint8`: workers ship uint8 pixels and this process
    converts them to float (as a GPU would), outside the workers' CPU time."""
    passes = -(-(clips + batch) // len(index))
    items = tuple((v, r) for r in range(passes) for v in range(len(index)))
    ds = ClipDataset(index, SampledViews(sampler, items), [Cut("clip", size, as_uint8=as_uint8)])
    batches = [list(range(i, min(i + batch, len(ds)))) for i in range(0, len(ds), batch)]
    loader = make_loader(ds, batches, workers=workers, pin_memory=False)
    it = iter(loader)
    first = next(it)
    assert not first["failures"], first["failures"]
    pids = [w.pid for w in getattr(it, "_workers", [])]

    def cpu() -> float:
        if not pids:
            return time.process_time()
        return sum(_cpu_seconds(p) or 0.0 for p in pids)

    n, t0, c0 = 0, time.perf_counter(), cpu()
    for b in it:
        as_input(b["clip"], torch.device("cpu"))
        n += len(b["label"])
        if n >= clips:
            break
    wall, used = time.perf_counter() - t0, cpu() - c0
    del it
    return n / wall, (n / used if used > 0 else float("nan"))


def converter_ms(path: str) -> tuple[float, float]:
    """ms per frame of PyAV's default RGB conversion and of ours (threads=1)."""
    import av

    with av.open(path) as c:
        frames = [f for _, f in zip(range(48), c.decode(video=0))]
    out = []
    for kw in ({}, {"threads": 1}):
        t0 = time.perf_counter()
        for _ in range(3):
            for f in frames:
                f.to_ndarray(format="rgb24", **kw)
        out.append((time.perf_counter() - t0) / (3 * len(frames)) * 1e3)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=96, help="frames per generated video")
    ap.add_argument("--clips", type=int, default=160, help="clips timed per measurement")
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--format", default="avi", choices=["avi", "mp4", "mixed"])
    ap.add_argument("--data", default=None, help="reuse/generate the videos here")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke setting: 4 videos of 32 frames, 16 clips at 64 px, workers 0,1")
    args = ap.parse_args(argv)
    if args.quick:
        args.videos, args.frames, args.clips, args.size, args.batch = 4, 24, 16, 64, 4
        args.workers = "0,1"
    torch.set_num_threads(1)  # like a DataLoader worker; keeps the comparison per core

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp)
        t0 = time.perf_counter()
        index = make_dataset(root, videos=args.videos, frames=args.frames, fmt=args.format)
        print(f"{len(index)} videos 320x240x{args.frames} ({args.format}) ready in "
              f"{time.perf_counter() - t0:.1f} s; {args.num_frames} frames/clip, "
              f"output {args.size}, {os.cpu_count()} CPUs")
        sampler = ViewSampler(num_frames=args.num_frames, seed=0)
        raw_rate(index, sampler, min(16, args.clips), size=None)  # warm the page cache
        res = {"raw_decode": raw_rate(index, sampler, args.clips, size=None),
               "decode_transform": raw_rate(index, sampler, args.clips, size=args.size)}
        for w in [int(x) for x in args.workers.split(",")]:
            res[f"loader_w{w}"] = loader_rate(index, sampler, args.clips, workers=w,
                                              size=args.size, batch=args.batch)
        for w in [int(x) for x in args.workers.split(",")]:
            res[f"loader_u8_w{w}"] = loader_rate(index, sampler, args.clips, workers=w,
                                                 size=args.size, batch=args.batch,
                                                 as_uint8=True)
        default_ms, single_ms = converter_ms(index.abspath(0))

    raw_wall, raw_cpu = res["raw_decode"]
    print(f"{'measurement':<18}{'clips/s':>9}{'/worker vs raw':>16}{'clips/CPU-s':>13}"
          f"{'vs raw':>8}")
    for name, (wall, per_cpu) in res.items():
        workers = int(name.rsplit("_w", 1)[1]) if name.startswith("loader") else 1
        print(f"{name:<18}{wall:>9.1f}{wall / max(workers, 1) / raw_wall:>16.0%}"
              f"{per_cpu:>13.1f}{per_cpu / raw_cpu:>8.0%}")
    print(f"rgb24 conversion: PyAV default {default_ms:.3f} ms/frame, threads=1 "
          f"{single_ms:.3f} ms/frame ({default_ms / single_ms:.1f}x)")
    out = {**{k: {"clips_per_s": w, "clips_per_cpu_s": c} for k, (w, c) in res.items()},
           "rgb_default_ms": default_ms, "rgb_single_ms": single_ms, "cpus": os.cpu_count(),
           "load_average": os.getloadavg()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
