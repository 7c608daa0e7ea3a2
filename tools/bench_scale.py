"""Scale of the cache wing by simulation: a Kinetics-sized index without videos or a teacher.

The "videos" are served by a stub decoder (a fixed VideoInfo per video: frame count, size) and
the "teacher" by a stub that draws seeded logits, so only dvfl's own work is measured: the real
index (and its digest), the real planner (every row's view, by `row_plan.sample_arrays`, which
is `ViewSampler.sample` row by row bit for bit, tests/test_row_plan.py), the real shard writer
(CacheWriter.write_shard: checks, float16 cast, crc32c, one file per shard and array), the real
reader (one epoch block), `verify`, and extend's storage path (the grow step, then the partial
shard rewritten through extend's target and the new shards written). The build's
DataLoader/teacher loop is replaced by a plain loop over shards (it only feeds these rows).
The per-row planner's own rate is measured once on a few thousand rows and printed beside.

Wall time, CPU time of this process (steadier than wall time on a shared machine) and peak
resident memory (RSS above the phase's start, polled) of each phase.
The claim to check: build, verify and extend peaks stay flat as rows grow (they stream shard by
shard); only the index and the plan of the phase that holds it grow with the videos.

    nice -n 10 python tools/bench_scale.py --videos 10000,20000,40000 --out /tmp/bench_scale
    python tools/bench_scale.py --quick      # smoke test (make test runs it)

`--parquet` adds the columnar export (`dvfl-cache export STORE OUT.parquet`, shard by shard):
its time, peak memory and file size; a million rows is `--videos 33334 --views 30 --parquet`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvfl_cache.cache.extend import _ExtendTarget, _grow, _read_marker  # noqa: E402
from dvfl_cache.cache.format import CacheMeta, DatasetInfo, SamplerInfo, TeacherInfo  # noqa: E402
from dvfl_cache.cache.inspect import verify  # noqa: E402
from dvfl_cache.cache.location import target_fs  # noqa: E402
from dvfl_cache.cache.store import CacheReader, CacheWriter  # noqa: E402
from dvfl_cache.data.decode import VideoInfo  # noqa: E402
from dvfl_cache.data.index import DatasetIndex, VideoEntry  # noqa: E402
from dvfl_cache.data.row_plan import sample_arrays  # noqa: E402
from dvfl_cache.data.views import ViewSampler  # noqa: E402


def stub_info(video: int) -> VideoInfo:
    """The stub decoder: what probing video `video` would say (3-12 s at 30 fps, 340x256)."""
    return VideoInfo(num_frames=90 + (video * 7919) % 270, fps=30.0, width=340, height=256)


def plan_rows(sampler: ViewSampler, rows: range, num_videos: int) -> dict[str, np.ndarray]:
    """The view of every row (row = view * num_videos + video) of stub videos."""
    r = np.arange(rows.start, rows.stop, dtype=np.int64)
    videos, views = r % num_videos, r // num_videos
    return sample_arrays(sampler, videos, views, 90 + (videos * 7919) % 270,
                         np.full(len(r), 340), np.full(len(r), 256))


def per_row_planner_us(sampler: ViewSampler, n: int = 3000) -> tuple[float, float]:
    """us per row of `ViewSampler.sample` and of `sample_arrays` over the same n rows."""
    t0 = time.perf_counter()
    for r in range(n):
        sampler.sample(r, 0, stub_info(r))
    t1 = time.perf_counter()
    plan_rows(sampler, range(n), n)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


_LOGITS: dict[int, np.ndarray] = {}


def stub_teacher(rows: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits for `rows` (std 3, like a trained teacher's), float32: one seeded normal block,
    rolled and offset per row, so the stub costs little beside what is measured."""
    base = _LOGITS.get(num_classes)
    if base is None or len(base) < len(rows):
        base = _LOGITS[num_classes] = np.random.default_rng(0).normal(
            0, 3, size=(max(len(rows), 4096), num_classes)).astype(np.float32)
    shift = int(rows[0]) % len(base) if len(rows) else 0
    return np.roll(base, shift, axis=0)[:len(rows)] + (rows % 97)[:, None].astype(np.float32) / 97


def make_index(videos: int, classes: int) -> DatasetIndex:
    names = tuple(f"class_{c:03d}" for c in range(classes))
    entries = tuple(VideoEntry(path=f"{names[v % classes]}/v{v:07d}.mp4", label=v % classes,
                               video_id=f"v{v:07d}") for v in range(videos))
    return DatasetIndex(kind="kinetics400", split=1, subset="train", classes=names,
                        videos=entries, root="/nonexistent")


def write_shards(writer, shards, sampler: ViewSampler, labels: np.ndarray,
                 num_classes: int) -> int:
    """The build's storage path for `shards`: plan each row, the stub teacher, write_shard."""
    V = writer.meta.num_videos
    n = 0
    for s in shards:
        rows = writer.shard_rows(s)
        arrays = writer.empty_shard(s, labels=labels)
        for k, v in plan_rows(sampler, rows, V).items():
            if k not in ("video", "view"):
                arrays[k][:] = v
        arrays["logits"][:] = stub_teacher(np.arange(rows.start, rows.stop), num_classes)
        arrays["valid"][:] = 1
        writer.write_shard(s, arrays, [])
        n += len(rows)
    return n


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Phase:
    """Times a phase and its peak resident memory (polled every 20 ms by a thread: real memory,
    NumPy and zarr's C buffers included): the process's peak RSS during the phase, and that
    peak above the phase's start (a lower bound of what the phase allocates: freed pages are
    reused without growing RSS)."""

    def __init__(self, results: dict, name: str):
        self.results, self.name = results, name

    def _poll(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self):
        import gc
        import threading

        gc.collect()
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        dt, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.results[self.name] = {"s": round(dt, 2), "cpu_s": round(cpu, 2),
                                   "peak_mib": round((self.peak - self.base) / 2**20, 1),
                                   "rss_mib": round(self.peak / 2**20, 1)}


def run_size(videos: int, views: int, classes: int, extra: int, per_shard: int,
             out: Path, *, parquet: bool = False) -> dict:
    res: dict = {"videos": videos, "rows": videos * views}
    store = out / f"s{videos}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    with Phase(res, "index+plan"):
        index = make_index(videos, classes)
        digest = index.digest
        sampler = ViewSampler(num_frames=8, mode="train", seed=0)
        # the plan of the first epoch block (every video's view 0), as a build's workers draw it
        plan = plan_rows(sampler, range(videos), videos)
        del plan
    labels = np.array([v.label for v in index.videos], np.int32)
    meta = CacheMeta(
        teacher=TeacherInfo(name="stub", config={}, weights_sha256=None),
        dataset=DatasetInfo(kind=index.kind, split=1, subset="train", index_digest=digest,
                            classes=index.classes),
        sampler=SamplerInfo(name="segment", params={**sampler.to_dict(), "size": 224}, seed=0),
        num_videos=videos, views_per_video=views, num_frames=8,
        dtype="float16", feature_dim=None, views_per_shard=per_shard)
    with Phase(res, "write"):
        w = CacheWriter.create(store, meta)
        write_shards(w, range(meta.num_shards), sampler, labels, classes)
    res["store_gib"] = round(sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
                             / 2**30, 3)
    with Phase(res, "read epoch block"):
        block = CacheReader(store).epoch_block(views // 2, names=["logits", "frames", "valid"])
        assert block["valid"].all()
        del block
    with Phase(res, "verify"):
        verify(store)
    if parquet:
        from dvfl_cache.cache.share import export_parquet

        table = out / f"s{videos}.parquet"
        with Phase(res, "export parquet"):
            export_parquet(store, table, overwrite=True)
        res["parquet_mib"] = round(table.stat().st_size / 2**20, 2)
        table.unlink()
    with Phase(res, f"extend +{extra}"):
        new = meta.replace(views_per_video=views + extra)
        _grow(str(store), None, CacheReader(store).meta, new)
        fs, root = target_fs(str(store), None)
        w2 = CacheWriter(store, new)
        pending = w2.pending_shards()
        keep = {s: k for s in pending if (k := _read_marker(fs, root, s)) is not None}
        target = _ExtendTarget(w2, keep, fs, root, None)
        for s in pending:  # the partial shard gets only its new rows, as extend computes them
            rows = target.shard_rows(s)
            arrays = target.empty_shard(s, labels=labels)
            for k, v in plan_rows(sampler, rows, videos).items():
                if k not in ("video", "view"):
                    arrays[k][:] = v
            arrays["logits"][:] = stub_teacher(np.arange(rows.start, rows.stop), classes)
            arrays["valid"][:] = 1
            target.write_shard(s, arrays, [])
        assert CacheReader(store).complete
    shutil.rmtree(store, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", default="10000,20000,40000", help="comma list of index sizes")
    ap.add_argument("--views", type=int, default=30)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--extra", type=int, default=10, help="views added by extend")
    ap.add_argument("--views-per-shard", type=int, default=4096)
    ap.add_argument("--out", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--parquet", action="store_true",
                    help="also time the Parquet export (needs pyarrow)")
    args = ap.parse_args(argv)
    cond = _conditions.start("bench_scale", argv)
    if args.quick:
        args.videos = "60,120" if args.videos == ap.get_default("videos") else args.videos
        args.views, args.classes, args.extra = 3, 10, 2
        args.views_per_shard = 50
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_scale_"))
    out.mkdir(parents=True, exist_ok=True)
    slow, fast = per_row_planner_us(ViewSampler(num_frames=8, mode="train", seed=0),
                                    300 if args.quick else 3000)
    print(f"planner: ViewSampler.sample {slow:.1f} us/row, sample_arrays {fast:.2f} us/row",
          flush=True)
    results = []
    for n in (int(x) for x in args.videos.split(",")):
        r = run_size(n, args.views, args.classes, args.extra, args.views_per_shard, out,
                     parquet=args.parquet)
        results.append(r)
        print(json.dumps(r), flush=True)
    phases = [k for k in results[0] if isinstance(results[0][k], dict)]
    print(f"\nfloat16, {args.classes} classes, {args.views} views (+{args.extra} by extend), "
          f"{args.views_per_shard} rows a shard; load average {os.getloadavg()[0]:.1f}")
    sizes = " parquet MiB |" if args.parquet else ""
    print(f"| videos | rows | store GiB |{sizes} " + " | ".join(
        f"{p}: wall s (CPU s) / peak RSS MiB (+ above start)" for p in phases) + " |")
    print("|---" * (3 + bool(sizes) + len(phases)) + "|")
    for r in results:
        size = f" {r['parquet_mib']} |" if args.parquet else ""
        print(f"| {r['videos']} | {r['rows']} | {r['store_gib']} |{size} "
              + " | ".join(f"{r[p]['s']} ({r[p]['cpu_s']}) / {r[p]['rss_mib']:.0f} "
                           f"(+{r[p]['peak_mib']:.0f})" for p in phases) + " |")
    if args.json:
        record = _conditions.record("bench_scale", {"planner_us_per_row": {
            "per_row": slow, "vectorised": fast}, "sizes": results}, cond)
        Path(args.json).write_text(json.dumps(record, indent=1))
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
