"""Benchmark the teacher-logit cache: build throughput against forward-only, and epoch reads.

Ratios are measured side by side in one run on this machine:
1. build views/s (decode in worker processes + teacher + shard writes, the real `build_cache`)
   in its steady state, against its bound. Start-up (loading the teacher, creating the store,
   starting the workers, the first batch) and the tail (the last shard writes, reopening the
   store) are timed apart; the steady rate counts the views of every batch after the first
   over the time between the first batch's end and the last one's. The bound, from rates
   measured in this run on the same clips: F, the teacher's forward-only views/s on clips
   already in memory, and R, decoding (decode + crop/resize + float, what a build worker does)
   views/s in one process, times the decoding workers W:
     - teacher and decoders on separate resources (a GPU teacher): min(F, W R);
     - sharing the same CPU cores (a CPU build): 1 / (1/F + 1/R), each view costing its
       forward and its decode on the same cores (R per process: the cores, not W, limit it).
   The goal is steady build / bound >= 0.9, the CPU bound applying here (device cpu); the
   output states the bound that applies. F is measured before and after the build and the
   mean is used (the two and their drift are reported: a machine whose speed moved during
   the run shows it there). The build runs as `dvfl-cache build` does: compute threads from
   ``set_compute_threads`` (a CPU build's teacher gets every core, its decoders share them;
   ``--threads`` to choose) and passive OpenMP waiting (``runtime.passive_openmp_waits``;
   set ``GOMP_SPINCOUNT=300000`` to measure libgomp's own spinning default instead).
2. one epoch's block of a 10,000-video x 400-class store read back (goal: well under 1 s),
   against 64-row random reads;
3. storage per view and the float16 KL error table of a real build.

With ``--decode-once 8,32,120`` it measures instead what decoding costs per stored view when
the build decodes a video once per view (``decode_per_view``, the build before issue 30)
and once for all its views (the default), on videos like real ones (H.264, a 250-frame GOP,
320 frames of 320 x 240, textured and noisy so the bit rate is a real one's), at each number
of views per video, with a toy teacher so decoding dominates. CPU seconds, not wall (a shared
machine): (a) in one process, the dataset's items view by view against ``video_items`` per
video; (b) in real builds with one decoding worker, the worker's CPU (decode and cut) per
stored view, and whether the two stores are equal bit for bit. Conditions (CPU, threads,
OpenMP wait policy, load, versions, commit) are written with the numbers (``--json``).

    python tools/bench_cache.py [--models vfl-nano,vfn-base] [--size 112] [--frames 8]
    python tools/bench_cache.py --quick       # smoke: a toy teacher, 32 px, seconds
    python tools/bench_cache.py --decode-once 8,32,120 --json benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from dvfl_cache.runtime import passive_openmp_waits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

passive_openmp_waits()  # as the dvfl entry points do, before torch loads its OpenMP runtime
import torch  # noqa: E402


def forward_only(teacher: torch.nn.Module, clips: torch.Tensor, batch: int, *,
                 min_seconds: float = 4.0, min_batches: int = 4) -> tuple[float, float]:
    """(views/s, CPU seconds per view) of the teacher on clips already in memory: two warm-up
    batches, then batches in turn (at least ``min_batches``) until ``min_seconds`` have gone
    by."""
    with torch.inference_mode():
        for i in range(0, min(2 * batch, len(clips)), batch):
            teacher(clips[i:i + batch])
        n, k, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
        while k < min_batches or time.perf_counter() - t0 < min_seconds:
            i = (k * batch) % len(clips)
            teacher.forward_head(teacher.forward_features(clips[i:i + batch]))
            n, k = n + len(clips[i:i + batch]), k + 1
        return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


def decode_rate(decode, videos: int, *, min_seconds: float = 2.0) -> tuple[float, float]:
    """(views/s, CPU seconds per view) of ``decode(view, video)`` in this process: one warm-up
    view of every video (the page cache), then new views until ``min_seconds`` have gone by."""
    for v in range(videos):
        decode(0, v)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < videos or time.perf_counter() - t0 < min_seconds:
        decode(1 + n // videos, n % videos)
        n += 1
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


class BuildClock:
    """``build_cache``'s ``on_start``/``progress`` callbacks, timed: start-up, steady, tail."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.cpu0, self.children0 = time.process_time(), _children_cpu()
        self.batches: list[tuple[float, int, float]] = []

    def on_start(self, n: int) -> None:
        self.rows = n

    def progress(self, k: int) -> None:
        self.batches.append((time.perf_counter(), k, time.process_time()))

    def steady_cpu_per_view(self) -> float:
        """CPU seconds per view of the steady state: this process (teacher, writer thread)
        from the first batch's end to the last one's, plus the decoding workers' CPU over
        the whole build (they are reaped when the loader ends; their start-up is small)."""
        main = self.batches[-1][2] - self.batches[0][2]
        views = sum(k for _, k, _ in self.batches[1:])
        workers = (_children_cpu() - self.children0) * views / max(self.rows, 1)
        return (main + workers) / max(views, 1)

    def split(self, end: float) -> dict[str, float]:
        first, last = self.batches[0][0], self.batches[-1][0]
        steady_views = sum(k for _, k, _ in self.batches[1:])
        return {"startup_s": first - self.start, "steady_s": last - first,
                "tail_s": end - last, "steady_views": steady_views,
                "steady_views_s": steady_views / max(last - first, 1e-9)}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def build_bound(forward: float, decode: float, workers: int) -> dict[str, float]:
    """The build's bound from forward-only F and one-process decoding R views/s (docstring)."""
    return {"separate": min(forward, workers * decode),
            "shared_cores": 1.0 / (1.0 / forward + 1.0 / decode)}


def bench_build(model: str, *, root: Path, work: Path, size: int, frames: int, batch: int,
                workers: int, views: int, opts: dict | None = None, threads: int = 0) -> dict:
    from dvfl_cache.cache.build import BuildConfig, build_cache, prepare
    from dvfl_cache.data import apply_view, open_video
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.runtime import set_compute_threads

    index = build_index("ucf101", root, split=1, subset="train")
    cfg = BuildConfig(out=str(work / f"{model}.zarr"), teacher=model, random_weights=True,
                      views_per_video=views, frames=frames, size=size, batch_size=batch,
                      workers=workers, views_per_shard=max(len(index), 64), overwrite=True,
                      device="cpu", teacher_opts=opts or {})
    # the threads `dvfl-cache build --threads N` would run with (0: the CPU build's policy)
    set_compute_threads(device=torch.device("cpu"), workers=workers, threads=threads,
                        share_cores=True)
    teacher, meta, sampler = prepare(cfg, index)

    def decode(r: int, v: int) -> torch.Tensor:
        with open_video(index.abspath(v)) as vid:
            view = sampler.sample(v, r, vid.info)
            return apply_view(vid.frames(view.frames), view, size)

    # Decoding rate R (one process), then the same clips the build will compute, decoded up
    # front for the forward-only rate F.
    dec, dec_cpu = decode_rate(decode, len(index))
    clips = torch.stack([decode(r, v) for r in range(views) for v in range(len(index))])
    fwd0, fwd_cpu0 = forward_only(teacher, clips, batch)
    clock = BuildClock()
    res = build_cache(cfg, index, progress=clock.progress, on_start=clock.on_start)
    end = time.perf_counter()
    phases = clock.split(end)
    fwd1, fwd_cpu1 = forward_only(teacher, clips, batch)
    del clips
    fwd, fwd_cpu = (fwd0 + fwd1) / 2, (fwd_cpu0 + fwd_cpu1) / 2
    built = phases["steady_views_s"]
    bound = build_bound(fwd, dec, workers)
    size_bytes = sum(f.stat().st_size for f in Path(cfg.out).rglob("*") if f.is_file())
    total = end - clock.start
    return {"model": model, "views": res.rows_written, "frames": frames, "size": size,
            "workers": workers, "threads": torch.get_num_threads(),
            "forward_only_views_s": round(fwd, 2),
            "forward_only_before_after_views_s": [round(fwd0, 2), round(fwd1, 2)],
            "decode_views_s": round(dec, 2),
            "bound_views_s": {k: round(v, 2) for k, v in bound.items()},
            "bound_applies": "shared_cores",  # device cpu: the teacher and decoders share cores
            "build_steady_views_s": round(built, 2),
            "build_overall_views_s": round(res.rows_written / total, 2),
            "startup_s": round(phases["startup_s"], 2), "steady_s": round(phases["steady_s"], 2),
            "tail_s": round(phases["tail_s"], 2),
            "startup_fraction": round((phases["startup_s"] + phases["tail_s"]) / total, 3),
            "steady_vs_bound_cpu": round(built / bound["shared_cores"], 3),
            "steady_vs_forward": round(built / fwd, 3),
            # load-robust form: CPU seconds per view, forward + decode against the build's
            "cpu_s_per_view": {"forward": round(fwd_cpu, 4), "decode": round(dec_cpu, 4),
                               "build_steady": round(clock.steady_cpu_per_view(), 4)},
            "cpu_efficiency": round((fwd_cpu + dec_cpu) / clock.steady_cpu_per_view(), 3),
            "load_average": os.getloadavg(),
            "store_bytes_per_view": round(size_bytes / res.rows_written, 1),
            "fp16_kl": res.fp16_kl}


def bench_reads(work: Path, *, videos: int = 10_000, classes: int = 400, views: int = 4) -> dict:
    from dvfl_cache.cache.format import CacheMeta, DatasetInfo, SamplerInfo, TeacherInfo
    from dvfl_cache.cache.store import CacheReader, CacheWriter

    meta = CacheMeta(teacher=TeacherInfo("bench", {}, None),
                     dataset=DatasetInfo("list", 1, "train", "sha256:" + "0" * 64,
                                         tuple(f"c{i}" for i in range(classes))),
                     sampler=SamplerInfo("segment", {}, 0), num_videos=videos,
                     views_per_video=views, num_frames=8, views_per_shard=4096)
    path = work / "reads.zarr"
    w = CacheWriter.create(path, meta, overwrite=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, videos)
    for s in range(meta.num_shards):
        a = w.empty_shard(s, labels=labels)
        a["logits"][:] = rng.normal(0, 3, a["logits"].shape)
        a["valid"][:] = 1
        w.write_shard(s, a)
    r = CacheReader(path)
    r.epoch_block(0)  # open
    t0 = time.perf_counter()
    block = r.epoch_block(1)
    epoch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(10):
        rows = np.sort(rng.choice(meta.num_rows, 64, replace=False))
        arr = r.array("logits")
        arr.get_orthogonal_selection((rows, slice(None)))
    random_s = (time.perf_counter() - t0) / 10
    return {"videos": videos, "classes": classes,
            "epoch_block_s": round(epoch_s, 3),
            "epoch_logits_mb": round(block["logits"].nbytes / 1e6, 1),
            "random_64_rows_ms": round(random_s * 1000, 1)}


# -- decode once per video against once per view ----------------------------------------------

def write_long_gop_videos(root: Path, *, videos: int, frames: int, width: int, height: int,
                          gop: int, seed: int = 0) -> Path:
    """`videos` H.264 files like real ones (a panned smooth texture with per-frame noise, so the
    encoder spends a real video's bits; keyframes every `gop` frames only) and a `list` index
    file; returns the list file."""
    import av

    rng = np.random.default_rng(seed)
    lines = []
    for v in range(videos):
        cells = rng.integers(0, 256, (height // 8 + 48, width // 8 + 48, 3)).astype(np.float32)
        tex = np.repeat(np.repeat(cells, 8, 0), 8, 1)
        for _ in range(3):  # box blur: smooth shapes, not block edges
            tex = (tex + np.roll(tex, 4, 0) + np.roll(tex, 4, 1) + np.roll(tex, (4, 4), (0, 1))) / 4
        path = root / f"v{v:03d}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=25, options={
                "g": str(gop), "keyint_min": str(gop), "crf": "23", "preset": "fast",
                "x264-params": "scenecut=0"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            for t in range(frames):
                y, x = int(t * 0.9) % 300, int(t * 1.7) % 300
                y, x = y % (tex.shape[0] - height), x % (tex.shape[1] - width)
                img = tex[y:y + height, x:x + width] + rng.normal(0, 4, (height, width, 3))
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8),
                                                   format="rgb24")
                for pkt in stream.encode(frame):
                    container.mux(pkt)
            for pkt in stream.encode():
                container.mux(pkt)
        lines.append(f"{path.name} {v % 2}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


def _video_facts(index) -> dict:
    """What the benchmark's videos are: codec, size, frames, keyframe spacing, bit rate."""
    import av

    from dvfl_cache.data import open_video

    out = []
    for v in range(len(index)):
        path = index.abspath(v)
        with av.open(path) as c:
            st = c.streams.video[0]
            keys = [i for i, p in enumerate(c.demux(st)) if p.size and p.is_keyframe]
            codec, dur = st.codec_context.name, float(c.duration or 0) / 1e6
        with open_video(path) as vid:
            info = vid.info
        out.append({"codec": codec, "width": info.width, "height": info.height,
                    "frames": info.num_frames, "keyframes_at": keys,
                    "kbit_s": round(os.path.getsize(path) * 8 / 1000 / max(dur, 1e-9), 1)})
    return {"count": len(out), "each": out}


def _cpu_per_view(fn) -> tuple[float, int]:
    c0 = time.process_time()
    n = fn()
    return (time.process_time() - c0) / n, n


def bench_decode_once(views_list: list[int], *, work: Path, videos: int, frames: int,
                      width: int, height: int, gop: int, size: int, clip_frames: int,
                      batch: int, builds: bool = True) -> dict:
    """Decode CPU seconds per stored view, per view and once per video (module docstring)."""
    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.dataset import ClipDataset, Cut, RowViews
    from dvfl_cache.data.readers import build_index

    root = work / "videos"
    root.mkdir(parents=True, exist_ok=True)
    listing = write_long_gop_videos(root, videos=videos, frames=frames, width=width,
                                    height=height, gop=gop)
    index = build_index("list", root, annotations=listing)
    n = len(index)
    out: dict = {"videos": _video_facts(index), "teacher": "vfl-nano embed_dim=8 depths=1,1,1,1",
                 "clip": {"frames": clip_frames, "size": size, "sampler": "segment, train"},
                 "batch": batch, "runs": []}
    for views in views_list:
        cfg = BuildConfig(out="", teacher="vfl-nano", random_weights=True,
                          teacher_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]},
                          views_per_video=views, frames=clip_frames, size=size,
                          views_per_shard=n, batch_size=batch, workers=1, device="cpu",
                          overwrite=True)
        sampler = cfg.view_sampler()
        ds = ClipDataset(index, RowViews(sampler, n, n * views),
                         (Cut("clip", size, as_uint8=True),))
        ds[0]  # the page cache and the decoder's first use, for both
        run: dict = {"views_per_video": views, "load_average_before": os.getloadavg()}

        def per_view() -> int:
            for row in range(n * views):
                assert ds[row]["error"] is None
            return n * views

        def once() -> int:
            for v in range(n):
                assert all(it["error"] is None
                           for it in ds.video_items([r * n + v for r in range(views)]))
            return n * views

        old, _ = _cpu_per_view(per_view)
        new, _ = _cpu_per_view(once)
        run["in_process_cpu_s_per_view"] = {"per_view": round(old, 5), "once": round(new, 5),
                                            "ratio": round(new / old, 4)}
        if builds:
            stores = {}
            for mode in ("per_view", "once"):
                path = work / f"{mode}_{views}.zarr"
                c = replace(cfg, out=str(path), decode_per_view=mode == "per_view")
                w0, m0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
                res = build_cache(c, index)
                wall, main_cpu = time.perf_counter() - w0, time.process_time() - m0
                workers_cpu = _children_cpu() - k0
                assert res.complete and res.rows_written == n * views, res
                run[f"build_{mode}"] = {
                    "rows": res.rows_written, "wall_s": round(wall, 2),
                    "worker_cpu_s_per_view": round(workers_cpu / res.rows_written, 5),
                    "main_cpu_s_per_view": round(main_cpu / res.rows_written, 5)}
                stores[mode] = path
            run["build_worker_cpu_ratio"] = round(
                run["build_once"]["worker_cpu_s_per_view"]
                / run["build_per_view"]["worker_cpu_s_per_view"], 4)
            run["stores_bit_identical"] = _same_store(stores["once"], stores["per_view"])
            for path in stores.values():
                shutil.rmtree(path)
        run["load_average_after"] = os.getloadavg()
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    return out


def _same_store(a: Path, b: Path) -> bool:
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names = sorted(n for n, _ in ga.arrays())
    if names != sorted(n for n, _ in gb.arrays()):
        return False
    return all(np.array_equal(np.asarray(ga[k][:]), np.asarray(gb[k][:])) for k in names) and \
        [p.read_bytes() for p in sorted((a / "failures").rglob("zarr.json"))] == \
        [p.read_bytes() for p in sorted((b / "failures").rglob("zarr.json"))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vfl-nano,vfn-base")
    ap.add_argument("--size", type=int, default=112, help="reduced on CPU (paper: 224)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--videos-per-class", type=int, default=4)
    ap.add_argument("--views", type=int, default=8,
                    help="views per video: enough that start-up is a small part of the run")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0,
                    help="teacher compute threads; 0: what `dvfl-cache build` picks on a CPU")
    ap.add_argument("--reads", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the 10,000-video epoch-block read")
    ap.add_argument("--quick", action="store_true",
                    help="smoke setting: a toy-width vfl-nano, 32 px, 4 frames, 2 views")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    ap.add_argument("--decode-once", default=None, metavar="V1,V2,...",
                    help="measure decoding per view against once per video at these views "
                         "per video (and nothing else)")
    ap.add_argument("--videos", type=int, default=4, help="videos for --decode-once")
    ap.add_argument("--video-frames", type=int, default=320, help="frames per video there")
    ap.add_argument("--no-builds", action="store_true",
                    help="--decode-once in one process only, without the two real builds")
    args = ap.parse_args(argv)
    cond = _conditions.start("bench_cache", argv)
    if args.decode_once:
        torch.set_num_threads(max(args.threads, 1))
        out = {"benchmark": "decode once per video vs once per view (issue 30)",
               "command": ["python", "tools/bench_cache.py", *(argv if argv is not None
                                                               else sys.argv[1:])],
               "load_average_start": os.getloadavg()}
        quick = args.quick
        with tempfile.TemporaryDirectory() as tmp:
            out["result"] = bench_decode_once(
                [int(v) for v in args.decode_once.split(",")], work=Path(tmp),
                videos=2 if quick else args.videos, frames=40 if quick else args.video_frames,
                width=64 if quick else 320, height=48 if quick else 240,
                gop=30 if quick else 250, size=32 if quick else 224,
                clip_frames=4 if quick else args.frames, batch=args.batch,
                builds=not args.no_builds)
        out["load_average_end"] = os.getloadavg()
        out = _conditions.record("bench_cache", out, cond)
        print(json.dumps(out, indent=1))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1) + "\n")
        return out
    opts = None
    if args.quick:
        args.models, args.size, args.frames, args.views = "vfl-nano", 32, 4, 2
        args.videos_per_class, args.reads = 2, False
        opts = {"embed_dim": 16, "depths": [1, 1, 1, 1]}
    from dvfl_cache.data.synth import SynthConfig, write_synth

    out = {"torch_threads_default": torch.get_num_threads(), "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_synth(work / "data", SynthConfig(classes=4, videos_per_class=args.videos_per_class,
                                               width=160, height=120, frames=32, seed=0))
        out["build"] = [bench_build(m, root=work / "data", work=work, size=args.size,
                                    frames=args.frames, batch=args.batch, workers=args.workers,
                                    views=args.views, opts=opts, threads=args.threads)
                        for m in args.models.split(",")]
        if args.reads:
            out["reads"] = bench_reads(work)
    out["load_average_end"] = os.getloadavg()
    out = _conditions.record("bench_cache", out, cond)
    print(json.dumps(out, indent=1))
    for b in out["build"]:
        f0, f1 = b["forward_only_before_after_views_s"]
        print(f"{b['model']}: bound (CPU: teacher and {b['workers']} decoding worker(s) share "
              f"the cores) 1 / (1/F + 1/R) = 1 / (1/{b['forward_only_views_s']} + "
              f"1/{b['decode_views_s']}) = {b['bound_views_s']['shared_cores']} views/s "
              f"(F before/after the build {f0}/{f1}); steady build "
              f"{b['build_steady_views_s']} views/s = {b['steady_vs_bound_cpu']:.2f} of it "
              f"(goal >= 0.9); {b['threads']} compute threads; CPU s/view forward + decode "
              f"{b['cpu_s_per_view']['forward']} + {b['cpu_s_per_view']['decode']} vs build "
              f"{b['cpu_s_per_view']['build_steady']}; load {b['load_average'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
