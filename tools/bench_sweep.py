"""Benchmark a 9-point alpha/tau sweep from the cache against the same 9 runs with online KD.

Measured side by side in one run on this machine, same teacher, student, views and schedule:
- cached: the one-time cache build (``build_cache``, V views per video) plus one sweep that
  trains the 9 students side by side from each decoded batch (``train_students``);
- online: the 9 runs one after another, each with the teacher in the loop (``fit`` with
  ``teacher_weights``: every run decodes its own clips and runs the teacher on them).
Final test evaluation is left out of both: it costs the same per run either way.

Beside it, the prediction from per-clip costs measured in the same script at the same sizes
(decode + transform D, teacher forward T, student KD step S, per clip at the training batch
size), for N runs, V cached views per video and E epochs, per clip-epoch:

    online  N (D + T + S)            cached  (D + T) V / E  +  D + N S

Goal (issue "Fast alpha/tau sweeps"): measured speed-up >= 90% of the predicted one, for a
base-size teacher and a nano student at 8 frames. Decoding runs in the training process
(``--workers 0``) so the costs add up as the formula assumes; D, T, S are measured before and
after the timed runs and averaged, which also shows how much the machine's load drifted.

    python tools/bench_sweep.py [--size 64] [--videos-per-class 4] [--json out.json]
    python tools/bench_sweep.py --quick          # smoke setting: small teacher, 32 px, 4 frames
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

ALPHAS, TAUS = (0.3, 0.5, 0.7), (5.0, 10.0, 15.0)


def per_clip_costs(index, *, teacher, size: int, batch: int, cache_cfg, student_cfg,
                   repeats: int) -> dict[str, float]:
    """Seconds per clip: D (decode + transform of one view), T (teacher forward), S (one KD
    step of one student), each the median over ``repeats`` passes of one training batch."""
    from dvfl_cache.cache.build import make_sampler
    from dvfl_cache.data import apply_view, open_video
    from dvfl_train.student import StudentSpec, build_student, train_step

    sampler = make_sampler(cache_cfg)
    videos = list(range(min(batch, len(index))))

    def decode() -> torch.Tensor:
        clips = []
        for v in videos:
            with open_video(index.abspath(v)) as vid:
                view = sampler.sample(v, 0, vid.info)
                clips.append(apply_view(vid.frames(view.frames), view, size))
        return torch.stack(clips)

    def timed(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) / len(videos)

    d = timed(decode)
    clips = decode()
    labels = torch.tensor([index.videos[v].label for v in videos])

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher.forward_head(teacher.forward_features(clips))

    t = timed(teacher_forward)
    with torch.no_grad():
        logits = teacher(clips).float()
    spec = StudentSpec(alpha=0.5, tau=10.0, beta=0.0, seed=0, out_dir="bench")
    student = build_student(spec.config(student_cfg), spec, num_classes=index.num_classes,
                            device=torch.device("cpu"))
    s = timed(lambda: train_step(student, clips, labels, teacher_logits=logits, lr=0.01))
    return {"D": d, "T": t, "S": s}


def predicted_speedup(costs: dict[str, float], *, runs: int, views: int, epochs: int) -> dict:
    d, t, s = costs["D"], costs["T"], costs["S"]
    online = runs * (d + t + s)
    cached = (d + t) * views / epochs + d + runs * s
    return {"online_per_clip_epoch_s": online, "cached_per_clip_epoch_s": cached,
            "speedup": online / cached}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="vfn-base")
    p.add_argument("--student", default="vfl-nano")
    p.add_argument("--teacher-opt", default="{}", help="JSON constructor overrides")
    p.add_argument("--student-opt", default="{}", help="JSON constructor overrides")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="reduced on CPU (paper: 224)")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--videos-per-class", type=int, default=8,
                   help="half train, half test (synthetic split 1); one test video validates")
    p.add_argument("--epochs", type=int, default=2, help="E; the cache holds V = E views")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--workers", type=int, default=0,
                   help="decoding processes (0: in the training process, costs add up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per cost measurement")
    p.add_argument("--quick", action="store_true",
                   help="smoke setting: toy-width models, 32 px, 4 frames, 2 videos per class")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.quick:
        args.size, args.frames, args.videos_per_class, args.repeats = 32, 4, 2, 1
        args.teacher_opt = json.dumps({"embed_dim": 32, "depths": [1, 1, 2, 1]})
        args.student_opt = json.dumps({"embed_dim": 16, "depths": [1, 1, 1, 1]})
    torch.set_num_threads(args.threads)

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth
    from dvfl_cache.models import count_gmacs, count_params, create_model, save_checkpoint
    from dvfl_train.config import FitConfig
    from dvfl_train.student import StudentSpec
    from dvfl_train.trainer import fit, train_students

    runs, views, epochs = len(ALPHAS) * len(TAUS), args.epochs, args.epochs
    student_opts = json.loads(args.student_opt)
    out: dict = {"teacher": args.teacher, "student": args.student, "frames": args.frames,
                 "size": args.size, "runs": runs, "views_per_video": views, "epochs": epochs,
                 "batch": args.batch, "workers": args.workers,
                 "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = write_synth(work / "data", SynthConfig(
            classes=args.classes, videos_per_class=args.videos_per_class, width=160,
            height=120, frames=48, seed=0))
        index = build_index("ucf101", root, split=1, subset="train")
        torch.manual_seed(0)
        teacher = create_model(args.teacher, num_classes=index.num_classes,
                               num_frames=args.frames, img_size=args.size,
                               **json.loads(args.teacher_opt)).eval()
        save_checkpoint(work / "teacher.pt", teacher)  # random weights, the same for both
        student = create_model(args.student, num_classes=index.num_classes,
                               num_frames=args.frames, img_size=args.size, **student_opts)
        out.update(train_videos=len(index), clip_epochs_per_run=len(index) * epochs,
                   teacher_gmacs=round(count_gmacs(teacher, frames=args.frames,
                                                   size=args.size), 2),
                   student_gmacs=round(count_gmacs(student, frames=args.frames,
                                                   size=args.size), 2),
                   student_params_m=round(count_params(student) / 1e6, 2))
        cache_cfg = BuildConfig(out=str(work / "cache.zarr"), teacher=str(work / "teacher.pt"),
                                views_per_video=views, frames=args.frames, size=args.size,
                                seed=0, batch_size=args.batch, workers=args.workers,
                                device="cpu")
        base = FitConfig(dataset="ucf101", data_root=str(root), out_dir=str(work / "runs"),
                         num_frames=args.frames, size=args.size, model=args.student,
                         model_opts=student_opts, epochs=epochs, warmup_epochs=0,
                         batch_size=args.batch, workers=args.workers, device="cpu",
                         val_subset=1, seed=0)
        cost_args = dict(teacher=teacher, size=args.size, batch=args.batch, cache_cfg=cache_cfg,
                         student_cfg=base, repeats=args.repeats)
        # Costs before, between and after the timed runs: the median resists load drift.
        samples = [per_clip_costs(index, **cost_args)]

        t0 = time.perf_counter()
        build_cache(cache_cfg, index)
        build_s = time.perf_counter() - t0
        specs = [StudentSpec(alpha=a, tau=t, beta=0.0, seed=0,
                             out_dir=str(work / "cached" / f"a{a:g}_t{t:g}"))
                 for a in ALPHAS for t in TAUS]
        t0 = time.perf_counter()
        cached = train_students(dataclasses.replace(base, cache=cache_cfg.out), specs)
        sweep_s = time.perf_counter() - t0
        samples.append(per_clip_costs(index, **cost_args))

        online_s, online_loop_s = [], 0.0
        for a in ALPHAS:
            for t in TAUS:
                cfg = dataclasses.replace(base, alpha=a, tau=t,
                                          teacher_weights=str(work / "teacher.pt"),
                                          out_dir=str(work / "online" / f"a{a:g}_t{t:g}"))
                t0 = time.perf_counter()
                summary = fit(cfg)
                online_s.append(time.perf_counter() - t0)
                online_loop_s += summary["train_time_s"]
        samples.append(per_clip_costs(index, **cost_args))

    costs = {k: statistics.median(c[k] for c in samples) for k in samples[0]}
    prediction = predicted_speedup(costs, runs=runs, views=views, epochs=epochs)
    cached_total = build_s + sweep_s
    measured = sum(online_s) / cached_total
    # Loop-only times (the trainer's epoch loops: no setup, validation or checkpoint writes)
    loop = online_loop_s / (build_s + cached[0]["train_time_s"])
    out.update({
        "per_clip_s": {k: round(v, 4) for k, v in costs.items()},
        "per_clip_s_samples": [{k: round(v, 4) for k, v in c.items()} for c in samples],
        "cache_build_s": round(build_s, 1),
        "cached_sweep_s": round(sweep_s, 1),
        "cached_total_s": round(cached_total, 1),
        "cached_loop_s": round(cached[0]["train_time_s"], 1),
        "online_total_s": round(sum(online_s), 1),
        "online_runs_s": [round(x, 1) for x in online_s],
        "online_loop_s": round(online_loop_s, 1),
        "measured_speedup": round(measured, 3),
        "measured_speedup_loops_only": round(loop, 3),
        "predicted_speedup": round(prediction["speedup"], 3),
        "fraction_of_prediction": round(measured / prediction["speedup"], 3),
        "goal_met": measured >= 0.9 * prediction["speedup"],
    })
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
