"""See it all, see very little: a 16-frame teacher distilled into 2-, 4- and 8-frame students.

    python tools/bench_fewer_frames.py [--work DIR --keep] [--json results.json]

On the synthetic dataset (``dvfl_cache.data.synth``), in one run:

1. train a teacher with cross-entropy at ``--teacher-frames``;
2. cache it over the training videos with features (``dvfl-cache build --features``), one view
   per student epoch, so every student epoch replays a new view;
3. for each student frame count k, train six students side by side from one decoded pipeline
   (``train_students``): CE only (alpha 0, beta 0), KD (alpha, tau) and KD + representation
   matching (alpha, tau, beta), two init seeds each; all replay the same cached views, k of the
   teacher's frames over the same span (first and last kept, ``subsample_view``), same crop;
4. evaluate the teacher and every best.pt on the test subset (1 view), count GMACs per clip and
   time inference (clips/s at batch 8 on CPU, models interleaved so machine load hits all alike).

Defaults, fixed before the run that docs/benchmarks.md reports:

- data: synth ``classes=6`` (PanLeft/Right/Up/Down, HueForward/Backward), 100 videos per class,
  64x64, 32 frames; split 1.
- views: ``temporal=stride``, stride 2 (16 teacher frames span frames 0-30 of the 32), flips off
  (a flip turns PanLeft into PanRight), random-resized-crop area 0.5-1.
- teacher: vfl-nano, two stages (``depths=[1,1]``, ``focal_levels=[2,2]``,
  ``focal_windows=[3,3]``), ``embed_dim=32``, ``tubelet_size=2``; 16 frames at 64 px; CE; AdamW,
  weight decay 0.05, base LR 0.032 per 512 (1e-3 at batch 16), 2 warm-up epochs from 0, cosine
  to 0, gradient clipping at 5; 20 epochs, batch 16.
- cache: 30 views per training video (= student epochs), ``--features``, float32, 64 px.
- students: vfl-nano two stages as above with ``embed_dim=16``, ``tubelet_size=2``, at 32 px,
  k = 2, 4, 8 frames of the cached 16 (k = 2 with tubelet 2 is a single temporal token; the
  model accepts it); same optimiser and schedule, 30 epochs; CE (alpha 0, beta 0), KD (alpha
  0.5, tau 2), KD+rep (alpha 0.5, tau 2, beta 1.0); init seeds 0 and 1, data seed 0.

Test views. The teacher is scored on the library's 1-view test view (``evaluate``: 16 frames 2
apart from frame 0, centred square of 224/256 of the short side). A k-frame student is scored on
that same view subsampled to k frames by ``subsample_view``, the way it saw every training view
(k = 4: frames 0, 10, 20, 30): ``evaluate_many`` with ``TestView(span=16)``, one decode for
all students of a k. The library's default test view for a k-frame model with this sampler is k frames 2 apart
around the middle (k = 4: frames 12-18), a sixth of the span its training views had; the
trainer's end-of-training validation uses it (no ``test_span`` here), and its numbers are kept
in the JSON (``top1_default_view``) to show the difference, not as the result.

Validation runs only after the last epoch (``val_every = epochs``), so best.pt is the final
model and no epoch is picked on the test videos. Settings are fixed up front; the run is
reported as it comes out, with wall and CPU seconds per stage (the CPU is shared, so wall time
depends on what else runs).

The claim under test: the 4-frame student with both terms recovers most of the gap between the
4-frame CE student and the teacher, at a quarter of the teacher's frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dvfl_cache.tables import mean_std

VARIANTS = ("ce", "kd", "kd+rep")
# Two stages with tubelets: at 32-64 px four stages end on 1x1-2x2 tokens, and without tubelets a
# freshly initialised Video-FocalNet is blind to frame order (its temporal modulator starts near
# zero), so neither learns the synthetic task from scratch in this budget (docs/demo.md).
TWO_STAGES = '"depths": [1, 1], "focal_levels": [2, 2], "focal_windows": [3, 3], "tubelet_size": 2'


def _cpu_seconds() -> float:
    """User + system time of this process and its reaped children (decoding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Stage:
    """Wall and CPU seconds of one stage of the benchmark."""

    name: str
    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Stage:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        print(f"[{self.name}] ...", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu
        print(f"[{self.name}] {self.wall:.0f} s wall, {self.cpu:.0f} s CPU", file=sys.stderr,
              flush=True)


def _throughput(models: dict[str, tuple[torch.nn.Module, int, int]], *, batch: int,
                rounds: int) -> dict[str, float]:
    """Clips/s of each model's forward at ``batch``, median over interleaved rounds."""
    inputs = {name: torch.randn(batch, frames, 3, size, size)
              for name, (_, frames, size) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, (model, _, _) in models.items():  # warm-up
            model.eval()
            model(inputs[name])
            model(inputs[name])
        for _ in range(rounds):
            for name, (model, _, _) in models.items():
                start = time.perf_counter()
                model(inputs[name])
                times[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument("--json", default=None, help="also write the results here")
    # data and views
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--videos-per-class", type=int, default=100)
    p.add_argument("--video-size", type=int, default=64, help="rendered side, pixels")
    p.add_argument("--video-frames", type=int, default=32)
    p.add_argument("--temporal", default="stride", choices=("stride", "segment"))
    p.add_argument("--stride", type=int, default=2, help="teacher frames this far apart")
    p.add_argument("--area", default="0.5,1.0", help="random-resized-crop area range")
    # optimisation, shared by teacher and students
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    # teacher
    p.add_argument("--teacher", default="vfl-nano")
    p.add_argument("--teacher-opt", default='{"embed_dim": 32, ' + TWO_STAGES + "}",
                   help="JSON overrides")
    p.add_argument("--teacher-frames", type=int, default=16)
    p.add_argument("--teacher-size", type=int, default=64, help="teacher input side, pixels")
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--teacher-lr", type=float, default=0.032,
                   help="base LR for a batch of 512 (scaled linearly)")
    # students
    p.add_argument("--student", default="vfl-nano")
    p.add_argument("--student-opt", default='{"embed_dim": 16, ' + TWO_STAGES + "}",
                   help="JSON overrides")
    p.add_argument("--student-frames", default="2,4,8")
    p.add_argument("--size", type=int, default=32, help="student input side, pixels")
    p.add_argument("--student-epochs", type=int, default=30)
    p.add_argument("--student-lr", type=float, default=0.032)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--tau", type=float, default=2.0)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--seeds", default="0,1")
    # runtime
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu",
                   help="training and caching device; evaluation and throughput run on the CPU")
    p.add_argument("--rounds", type=int, default=20, help="timed forwards per model")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth
    from dvfl_cache.models import count_gmacs
    from dvfl_train.config import FitConfig
    from dvfl_train.evaluate import evaluate, evaluate_many, load_for_eval
    from dvfl_train.student import StudentSpec
    from dvfl_train.trainer import fit, train_students

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_fewer_"))
    work.mkdir(parents=True, exist_ok=True)
    frames_list = [int(k) for k in args.student_frames.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    area = [float(a) for a in args.area.split(",")]
    train_sampler = {"temporal": args.temporal, "stride": args.stride, "flip": 0.0, "area": area}
    stages: list[Stage] = []
    started = time.perf_counter()
    cpu_started = _cpu_seconds()

    with Stage("synth") as st:
        data = work / "data"
        if data.exists():
            shutil.rmtree(data)
        synth = SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class,
                            width=args.video_size, height=args.video_size,
                            frames=args.video_frames, seed=0)
        write_synth(data, synth)
        train_idx = build_index("ucf101", data, split=1, subset="train")
        test_idx = build_index("ucf101", data, split=1, subset="test")
    stages.append(st)

    common = dict(dataset="ucf101", data_root=str(data), batch_size=args.batch_size,
                  sampler=train_sampler, optimizer=args.optimizer,
                  weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                  warmup_lr=0.0, min_lr=0.0, workers=args.workers, device=args.device, seed=0)
    with Stage("teacher") as st:
        teacher_cfg = FitConfig(
            **common, out_dir=str(work / "teacher"), num_frames=args.teacher_frames,
            size=args.teacher_size, model=args.teacher,
            model_opts=json.loads(args.teacher_opt), alpha=0.0, beta=0.0,
            epochs=args.teacher_epochs, val_every=args.teacher_epochs,
            base_lr=args.teacher_lr)
        teacher_summary = fit(teacher_cfg, overwrite=True)
    stages.append(st)
    teacher_ckpt = work / "teacher" / "best.pt"

    with Stage("cache") as st:
        cache = work / "teacher.zarr"
        build_cache(BuildConfig(out=str(cache), teacher=str(teacher_ckpt),
                                views_per_video=args.student_epochs, sampler=train_sampler,
                                frames=args.teacher_frames, size=args.teacher_size, seed=0,
                                dtype="float32", features=True, batch_size=args.batch_size,
                                workers=args.workers, device=args.device, overwrite=True),
                    train_idx)
    stages.append(st)

    weights = {"ce": (0.0, 0.0), "kd": (args.alpha, 0.0), "kd+rep": (args.alpha, args.beta)}
    runs: dict[tuple[int, str, int], Path] = {}
    default_view: dict[tuple[int, str, int], float] = {}
    for k in frames_list:
        with Stage(f"students {k} frames") as st:
            shared = FitConfig(**common, out_dir=str(work / f"s{k}"), num_frames=k,
                               size=args.size, model=args.student,
                               model_opts=json.loads(args.student_opt), cache=str(cache),
                               alpha=args.alpha, tau=args.tau, beta=0.0,
                               epochs=args.student_epochs, val_every=args.student_epochs,
                               base_lr=args.student_lr)
            keys, specs = [], []
            for variant in VARIANTS:
                alpha, beta = weights[variant]
                for seed in seeds:
                    out = work / f"s{k}" / f"{variant}_seed{seed}"
                    runs[(k, variant, seed)] = out
                    keys.append((k, variant, seed))
                    specs.append(StudentSpec(alpha=alpha, tau=args.tau, beta=beta, seed=seed,
                                             out_dir=str(out), name=f"{k}f-{variant}-{seed}"))
            summaries = train_students(shared, specs, overwrite=True)
            for key, summary in zip(keys, summaries):  # the trainer's own end-of-run validation
                default_view[key] = summary["final"]["val_top1"]
        stages.append(st)

    with Stage("evaluate") as st:
        top1: dict[tuple[int, str, int], float] = {}
        models: dict[str, tuple[torch.nn.Module, int, int]] = {}
        teacher, _, info = load_for_eval(teacher_ckpt)
        tview = info["view"]
        views = dict(batch_size=args.batch_size, workers=args.workers)
        teacher_top1 = evaluate(teacher, test_idx, tview, **views).report.top1
        models["teacher"] = (teacher, tview.num_frames, tview.size)
        gmacs = {"teacher": count_gmacs(teacher, frames=tview.num_frames, size=tview.size)}
        for k in frames_list:
            keys = [(k, variant, seed) for variant in VARIANTS for seed in seeds]
            students = []
            for key in keys:
                model, _, sinfo = load_for_eval(runs[key] / "best.pt")
                if sinfo["epoch"] != args.student_epochs:
                    raise SystemExit(f"{runs[key]}/best.pt is from epoch {sinfo['epoch']}, "
                                     "not the last")
                students.append(model)
            # the teacher's test view cut to k frames, decoded once for every student
            cut = dataclasses.replace(tview, num_frames=k, size=args.size,
                                      span=tview.num_frames)
            results = evaluate_many(students, test_idx, cut, **views)
            for key, result in zip(keys, results):
                top1[key] = result.report.top1
            models[f"{k}f"] = (students[0], k, args.size)  # one architecture for all of them
            gmacs[f"{k}f"] = count_gmacs(students[0], frames=k, size=args.size)
    stages.append(st)

    with Stage("throughput") as st:
        clips_per_s = _throughput(models, batch=8, rounds=args.rounds)
    stages.append(st)

    rows: list[dict[str, Any]] = [{
        "frames": args.teacher_frames, "loss": "teacher (CE)", "top1": [teacher_top1],
        "top1_default_view": [teacher_top1], "gmacs": gmacs["teacher"],
        "clips_per_s": clips_per_s["teacher"]}]
    for k in frames_list:
        for variant in VARIANTS:
            rows.append({"frames": k, "loss": variant,
                         "top1": [top1[(k, variant, s)] for s in seeds],
                         "top1_default_view": [default_view[(k, variant, s)] for s in seeds],
                         "gmacs": gmacs[f"{k}f"], "clips_per_s": clips_per_s[f"{k}f"]})
    recovered = {}
    for k in frames_list:
        ce = statistics.fmean(top1[(k, "ce", s)] for s in seeds)
        for variant in ("kd", "kd+rep"):
            v = statistics.fmean(top1[(k, variant, s)] for s in seeds)
            gap = teacher_top1 - ce
            recovered[f"{k}f {variant}"] = (v - ce) / gap if gap > 0 else None

    result = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch thread(s), {args.workers} decode worker(s)",
        "python": platform.python_version(), "torch": torch.__version__,
        "args": vars(args), "train_videos": len(train_idx), "test_videos": len(test_idx),
        "chance": 1.0 / args.classes,
        "teacher_final_train_top1": teacher_summary["final"]["train_top1"], "rows": rows,
        "gap_recovered": recovered,
        "stages": {s.name: {"wall_s": s.wall, "cpu_s": s.cpu} for s in stages},
        "total_wall_s": time.perf_counter() - started,
        "total_cpu_s": _cpu_seconds() - cpu_started,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"{len(train_idx)} train / {len(test_idx)} test videos, {args.classes} classes "
          f"(chance {100 / args.classes:.1f}%); top-1 on the test subset, 1 view (students: the "
          f"teacher's view subsampled); mean ± std over seeds {args.seeds}")
    print(f"teacher: train top-1 {100 * result['teacher_final_train_top1']:.1f}% in its last "
          "epoch (training views, train mode)")
    print("| frames | loss | top-1 (%) | per seed | default-view top-1 (%) | GMACs/clip | "
          "clips/s (batch 8, CPU) |")
    print("|---:|---|---:|---|---:|---:|---:|")
    for row in rows:
        mean, std = mean_std(row["top1"])
        per_seed = ", ".join(f"{100 * t:.1f}" for t in row["top1"])
        pm = f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
        dmean, dstd = mean_std(row["top1_default_view"])
        dpm = f"{100 * dmean:.1f}" + ("" if dstd is None else f" ± {100 * dstd:.1f}")
        print(f"| {row['frames']} | {row['loss']} | {pm} | {per_seed} | {dpm} | "
              f"{row['gmacs']:.4f} | {row['clips_per_s']:.0f} |")
    print("gap to the teacher recovered over CE at the same frames: " + ", ".join(
        f"{name} {'n/a' if r is None else f'{100 * r:.0f}%'}" for name, r in recovered.items()))
    print("stages: " + ", ".join(f"{s.name} {s.wall:.0f} s wall / {s.cpu:.0f} s CPU"
                                 for s in stages))
    print(f"total {result['total_wall_s']:.0f} s wall, {result['total_cpu_s']:.0f} s CPU")
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    elif args.keep:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
