"""Training-loader throughput beside raw decode throughput, on UCF101-like videos.

Generates synthetic 320x240 MPEG-4 AVI videos (UCF101's size and codec family) with the synth
generator, then measures, on the same clips (the same (video, view) list for every
configuration):
  raw decode   open + demux + seek + decode + RGB of the 8 sampled frames, one process
  + transform  the same plus crop/resize to 224/normalise (what one loader worker does)
  loader w=N   the trainer's own loader (``make_loader``: ClipDataset of sampled views,
               collate_clips, prefetch 4) with N workers shipping float clips, steady state
  loader u8    the same shipping uint8 pixels (the cut ``dvfl-train fit`` uses), turned into
               float here with ``as_input`` as the trainer does
and the RGB converter, PyAV's default (threaded) against ours (threads=1).

One measurement is a few seconds and the machine's speed drifts, so the configurations run in
``--rounds`` rounds, each configuration once per round (the order rotated from round to
round), and every ratio is taken within a round (configuration / raw decode of the same
round) before the median and the range over rounds are reported. Goal: the trainer's loader
(uint8, 1 worker) reaches >= 80% of the raw decode rate per worker, per wall second on a quiet
machine. Rates are also given per CPU second of the processes doing the work (the decoding
workers; with 0 workers this process), which is what to compare on a machine shared with
other jobs, and the main process's own CPU per clip. The load average is printed and stored.

    python tools/bench_data.py [--videos 16 --frames 96 --clips 160 --rounds 5 --workers 0,1]
    python tools/bench_data.py --quick      # smoke: 4 small videos, 64 px, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import sys
import time
from pathlib import Path

from dvfl_cache.runtime import passive_openmp_waits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

passive_openmp_waits()  # as the dvfl entry points do, before torch loads its OpenMP runtime
import torch  # noqa: E402
from dvfl_cache.data.dataset import ClipDataset, Cut, SampledViews
from dvfl_cache.data.decode import open_video
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.readers import build_index
from dvfl_cache.data.synth import SynthConfig, write_synth
from dvfl_cache.data.transforms import apply_view
from dvfl_cache.data.views import ViewSampler
from dvfl_train.train_data import as_input, make_loader

GOAL = 0.80  # the trainer's loader per worker against raw decode
TRAINER = "loader_u8_w1"  # what `dvfl-train fit` runs (uint8 clips, here with 1 worker)


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


def clip_items(videos: int, n: int) -> tuple[tuple[int, int], ...]:
    """The first ``n`` (video, view) pairs of passes over the videos: view r of every video
    in pass r. Every configuration decodes the same list, so they are compared on the same
    clips (a view's frames, and so its seeks, are fixed by (seed, video, view))."""
    passes = -(-n // videos)
    return tuple((v, r) for r in range(passes) for v in range(videos))[:n]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _record(n: int, wall: float, cpu: float, main_cpu: float) -> dict[str, float]:
    """One measurement: clips per wall second, clips per CPU second of the processes doing
    the work, and CPU ms per clip of those (``cpu_ms``) and of this process (``main_ms``)."""
    return {"clips": n, "clips_per_s": n / wall,
            "clips_per_cpu_s": n / cpu if cpu > 0 else float("nan"),
            "cpu_ms": cpu / n * 1e3, "main_ms": main_cpu / n * 1e3}


def raw_rate(index: DatasetIndex, sampler: ViewSampler, items, *,
             size: int | None) -> dict[str, float]:
    """Decoding (and, with ``size``, transforming to float) ``items`` in this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    for v, r in items:
        with open_video(index.abspath(v)) as vid:
            view = sampler.sample(v, r, vid.info)
            frames = vid.frames(view.frames)
        if size is not None:
            apply_view(frames, view, size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return _record(len(items), wall, cpu, cpu)


def loader_rate(index: DatasetIndex, sampler: ViewSampler, items, *, workers: int, size: int,
                batch: int, as_uint8: bool = False) -> dict[str, float]:
    """The training loader over ``items`` after one untimed warm-up batch (worker start-up
    excluded). ``cpu_ms`` counts the workers' CPU time (with 0 workers, this process's), so
    it stays meaningful on a machine shared with other jobs; ``main_ms`` is this process's.
    ``as_uint8``: workers ship uint8 pixels and this process converts them to float (as a
    GPU would), outside the workers' CPU time."""
    warm = clip_items(len(index), batch)
    ds = ClipDataset(index, SampledViews(sampler, warm + tuple(items)),
                     [Cut("clip", size, as_uint8=as_uint8)])
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

    n, t0, c0, m0 = 0, time.perf_counter(), cpu(), time.process_time()
    for _ in batches[1:]:  # not to the iterator's end: that stops the workers, CPU unread
        b = next(it)
        as_input(b["clip"], torch.device("cpu"))
        n += len(b["label"])
    wall, used, main = time.perf_counter() - t0, cpu() - c0, time.process_time() - m0
    del it
    return _record(n, wall, used, main)


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


def workers_of(name: str) -> int:
    return int(name.rsplit("_w", 1)[1]) if name.startswith("loader") else 1


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per configuration over the rounds: median, min and max of the rates, and of the ratios
    to raw decode taken within each round (per worker for the wall rate)."""
    out = {}
    for name in rounds[0]:
        rs = [r[name] for r in rounds]
        wall = [m["clips_per_s"] for m in rs]
        cpu = [m["clips_per_cpu_s"] for m in rs]
        vs = [r[name]["clips_per_s"] / max(workers_of(name), 1) / r["raw_decode"]["clips_per_s"]
              for r in rounds]
        vs_cpu = [r[name]["clips_per_cpu_s"] / r["raw_decode"]["clips_per_cpu_s"]
                  for r in rounds]
        out[name] = {
            "clips_per_s": statistics.median(wall), "clips_per_s_range": [min(wall), max(wall)],
            "clips_per_cpu_s": statistics.median(cpu),
            "clips_per_cpu_s_range": [min(cpu), max(cpu)],
            "per_worker_vs_raw": statistics.median(vs), "per_worker_vs_raw_range": [min(vs),
                                                                                   max(vs)],
            "cpu_vs_raw": statistics.median(vs_cpu), "cpu_vs_raw_range": [min(vs_cpu),
                                                                         max(vs_cpu)],
            "cpu_ms_per_clip": statistics.median(m["cpu_ms"] for m in rs),
            "main_ms_per_clip": statistics.median(m["main_ms"] for m in rs)}
    return out


def print_table(summary: dict[str, dict[str, float]]) -> None:
    print(f"{'measurement':<18}{'clips/s':>8}{'[min-max]':>13}{'/worker vs raw':>15}"
          f"{'[min-max]':>11}{'clips/CPU-s':>12}{'vs raw':>7}{'[min-max]':>11}"
          f"{'CPU ms/clip':>12}{'main ms':>8}")
    for name, s in summary.items():
        lo, hi = s["clips_per_s_range"]
        vlo, vhi = s["per_worker_vs_raw_range"]
        clo, chi = s["cpu_vs_raw_range"]
        print(f"{name:<18}{s['clips_per_s']:>8.1f}{f'[{lo:.1f}-{hi:.1f}]':>13}"
              f"{s['per_worker_vs_raw']:>15.0%}{f'[{vlo:.0%}-{vhi:.0%}]':>11}"
              f"{s['clips_per_cpu_s']:>12.1f}{s['cpu_vs_raw']:>7.0%}"
              f"{f'[{clo:.0%}-{chi:.0%}]':>11}{s['cpu_ms_per_clip']:>12.2f}"
              f"{s['main_ms_per_clip']:>8.2f}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=96, help="frames per generated video")
    ap.add_argument("--clips", type=int, default=160, help="clips timed per measurement")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds; each configuration is measured once per round")
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", default="0,1")
    ap.add_argument("--format", default="avi", choices=["avi", "mp4", "mixed"])
    ap.add_argument("--data", default=None, help="reuse/generate the videos here")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke setting: 4 videos of 24 frames, 16 clips at 64 px, 2 rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.videos, args.frames, args.clips, args.size, args.batch = 4, 24, 16, 64, 4
        args.workers, args.rounds = "0,1", 2
    if args.rounds < 1 or args.clips < 1:
        ap.error("--rounds and --clips must be >= 1")
    torch.set_num_threads(1)  # like a DataLoader worker; keeps the comparison per core
    cond = _conditions.start("bench_data", argv)
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp)
        t0 = time.perf_counter()
        index = make_dataset(root, videos=args.videos, frames=args.frames, fmt=args.format)
        print(f"{len(index)} videos 320x240x{args.frames} ({args.format}) ready in "
              f"{time.perf_counter() - t0:.1f} s; {args.num_frames} frames/clip, output "
              f"{args.size}, {args.clips} clips x {args.rounds} rounds, {os.cpu_count()} CPUs, "
              f"load average {' '.join(f'{x:.2f}' for x in load_start)}")
        sampler = ViewSampler(num_frames=args.num_frames, seed=0)
        items = clip_items(len(index), args.clips)
        raw_rate(index, sampler, clip_items(len(index), len(index)), size=None)  # page cache
        configs = {"raw_decode": lambda: raw_rate(index, sampler, items, size=None),
                   "decode_transform": lambda: raw_rate(index, sampler, items, size=args.size)}
        for u8 in (False, True):
            for w in [int(x) for x in args.workers.split(",")]:
                configs[f"loader{'_u8' if u8 else ''}_w{w}"] = (
                    lambda w=w, u8=u8: loader_rate(index, sampler, items, workers=w,
                                                   size=args.size, batch=args.batch,
                                                   as_uint8=u8))
        names = list(configs)
        rounds, loads = [], []
        for k in range(args.rounds):
            order = names[k % len(names):] + names[:k % len(names)]
            rounds.append({name: configs[name]() for name in order})
            loads.append(os.getloadavg()[0])
            print(f"round {k + 1}/{args.rounds}: " + ", ".join(
                f"{n} {rounds[-1][n]['clips_per_s']:.1f}" for n in names)
                + f" clips/s; load {loads[-1]:.2f}", flush=True)
        default_ms, single_ms = converter_ms(index.abspath(0))

    load_end = os.getloadavg()
    summary = summarise([{n: r[n] for n in names} for r in rounds])
    print_table(summary)
    print(f"rgb24 conversion: PyAV default {default_ms:.3f} ms/frame, threads=1 "
          f"{single_ms:.3f} ms/frame ({default_ms / single_ms:.1f}x)")
    if TRAINER in summary:
        s = summary[TRAINER]
        lo, hi = s["per_worker_vs_raw_range"]
        print(f"goal: {TRAINER} >= {GOAL:.0%} of raw decode per worker: median "
              f"{s['per_worker_vs_raw']:.0%} (rounds {lo:.0%}-{hi:.0%}; per CPU second "
              f"{s['cpu_vs_raw']:.0%}); load average {load_start[0]:.2f} at the start, "
              f"{load_end[0]:.2f} at the end")
    out = {**summary, "rounds": rounds, "round_load_1min": loads,
           "rgb_default_ms": default_ms, "rgb_single_ms": single_ms, "cpus": os.cpu_count(),
           "clips": args.clips, "n_rounds": args.rounds,
           "load_average": {"start": load_start, "end": load_end}}
    out = _conditions.record("bench_data", out, cond)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
