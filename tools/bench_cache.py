"""Benchmark the teacher-logit cache: build throughput against forward-only, and epoch reads.

Ratios are measured side by side in one run on this machine:
1. build views/s (decode in worker processes + teacher + shard writes, the real `build_cache`)
   against the same teacher's forward-only views/s on the same clips already in memory
   (goal >= 0.9: decoding and writes overlap with compute);
2. one epoch's block of a 10,000-video x 400-class store read back (goal: well under 1 s),
   against 64-row random reads;
3. storage per view and the float16 KL error table of a real build.

    python tools/bench_cache.py [--models vfl-nano,vfn-base] [--size 112] [--frames 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def forward_only(teacher: torch.nn.Module, clips: torch.Tensor, batch: int) -> float:
    """views/s of the teacher on clips already in memory (after one warm-up batch)."""
    with torch.inference_mode():
        teacher(clips[:batch])
        t0 = time.perf_counter()
        for i in range(0, len(clips), batch):
            teacher.forward_head(teacher.forward_features(clips[i:i + batch]))
        return len(clips) / (time.perf_counter() - t0)


def bench_build(model: str, *, root: Path, work: Path, size: int, frames: int, batch: int,
                workers: int, views: int) -> dict:
    from dvfl_cache.cache.build import BuildConfig, build_cache, prepare
    from dvfl_cache.data import apply_view
    from dvfl_cache.data.readers import build_index

    index = build_index("ucf101", root, split=1, subset="train")
    cfg = BuildConfig(out=str(work / f"{model}.zarr"), teacher=model, random_weights=True,
                      views_per_video=views, frames=frames, size=size, batch_size=batch,
                      workers=workers, views_per_shard=max(len(index), 64), overwrite=True,
                      device="cpu")
    teacher, meta, sampler = prepare(cfg, index)
    # The same clips the build will compute, decoded up front.
    clips = []
    for r in range(views):
        for v in range(len(index)):
            from dvfl_cache.data import open_video

            with open_video(index.abspath(v)) as vid:
                view = sampler.sample(v, r, vid.info)
                clips.append(apply_view(vid.frames(view.frames), view, size))
    clips = torch.stack(clips)
    fwd = forward_only(teacher, clips, batch)
    t0 = time.perf_counter()
    res = build_cache(cfg, index)
    build_s = time.perf_counter() - t0
    built = res.rows_written / build_s
    # raw decode rate of the same clips in this process (context for the ratio)
    t0 = time.perf_counter()
    for v in range(len(index)):
        with open_video(index.abspath(v)) as vid:
            view = sampler.sample(v, 0, vid.info)
            apply_view(vid.frames(view.frames), view, size)
    decode = len(index) / (time.perf_counter() - t0)
    size_bytes = sum(f.stat().st_size for f in Path(cfg.out).rglob("*") if f.is_file())
    return {"model": model, "views": res.rows_written, "frames": frames, "size": size,
            "forward_only_views_s": round(fwd, 2), "build_views_s": round(built, 2),
            "ratio": round(built / fwd, 3), "decode_clips_s": round(decode, 1),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vfl-nano,vfn-base")
    ap.add_argument("--size", type=int, default=112, help="reduced on CPU (paper: 224)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--videos-per-class", type=int, default=4)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args()
    from dvfl_cache.data.synth import SynthConfig, write_synth

    out = {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_synth(work / "data", SynthConfig(classes=4, videos_per_class=args.videos_per_class,
                                               width=160, height=120, frames=32, seed=0))
        out["build"] = [bench_build(m, root=work / "data", work=work, size=args.size,
                                    frames=args.frames, batch=args.batch, workers=args.workers,
                                    views=args.views) for m in args.models.split(",")]
        out["reads"] = bench_reads(work)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
