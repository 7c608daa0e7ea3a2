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
base-size teacher and a nano student at 8 frames. Second goal (issue 19): the sweep's epoch loop
costs at most D + N S per clip-epoch / 0.9. The fixed costs (setup: loading the teacher and
building the students; validation; checkpoint and record writes; the summaries) are timed apart
from the loops on both sides, from the trainer's progress events. Beside S (one student stepping
again and again on one batch) the script measures S_turns, the per-student cost when the N
students take turns on that batch as the sweep does: S_turns - S is what the students' weights
falling out of the CPU caches costs, and the loop's excess over D + N S_turns is the loop's own
overhead. Every time is also taken in CPU seconds of this process (all the work runs in it),
which a machine shared with other jobs inflates less than wall time. Decoding runs in the training process
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
import sys
import time
from pathlib import Path

from dvfl_cache.runtime import passive_openmp_waits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

# As the dvfl entry points and the other benchmarks do, before torch loads its OpenMP runtime
# (set OMP_WAIT_POLICY or GOMP_SPINCOUNT to measure another policy; the JSON records it).
passive_openmp_waits()
import torch  # noqa: E402

ALPHAS, TAUS = (0.3, 0.5, 0.7), (5.0, 10.0, 15.0)


def per_clip_costs(index, *, teacher, size: int, batch: int, cache_cfg, student_cfg,
                   repeats: int, runs: int) -> dict[str, float]:
    """Seconds per clip: D (decode + transform of one view), T (teacher forward), S (one KD
    step of one student), S_turns (one KD step of each of ``runs`` students in turn, per
    student), each the median over ``repeats`` passes of one training batch; the same in CPU
    seconds as ``*_cpu``."""
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

    def timed(fn) -> tuple[float, float]:
        """(wall, CPU) seconds per clip: medians over ``repeats`` passes after a warm-up."""
        fn()  # warm-up
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return statistics.median(wall) / len(videos), statistics.median(cpu) / len(videos)

    d = timed(decode)
    clips = decode()
    labels = torch.tensor([index.videos[v].label for v in videos])

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher.forward_head(teacher.forward_features(clips))

    t = timed(teacher_forward)
    with torch.no_grad():
        logits = teacher(clips).float()
    def student(seed: int):
        spec = StudentSpec(alpha=0.5, tau=10.0, beta=0.0, seed=seed, out_dir=f"bench{seed}")
        return build_student(spec.config(student_cfg), spec, num_classes=index.num_classes,
                             device=torch.device("cpu"))

    one = student(0)
    s = timed(lambda: train_step(one, clips, labels, teacher_logits=logits, lr=0.01))
    del one
    turns = [student(k) for k in range(runs)]

    def in_turn() -> None:
        for st in turns:
            train_step(st, clips, labels, teacher_logits=logits, lr=0.01)

    s_turns = timed(in_turn)
    return {"D": d[0], "T": t[0], "S": s[0], "S_turns": s_turns[0] / runs,
            "D_cpu": d[1], "T_cpu": t[1], "S_cpu": s[1], "S_turns_cpu": s_turns[1] / runs}


def predicted_speedup(costs: dict[str, float], *, runs: int, views: int, epochs: int,
                      suffix: str = "") -> dict:
    d, t, s = costs["D" + suffix], costs["T" + suffix], costs["S" + suffix]
    online = runs * (d + t + s)
    cached = (d + t) * views / epochs + d + runs * s
    return {"online_per_clip_epoch_s": online, "cached_per_clip_epoch_s": cached,
            "speedup": online / cached}


class Phases:
    """Splits a ``train_students``/``fit`` call into loop and fixed costs from its progress
    events, in wall and CPU seconds: ``setup`` (call to the first epoch's start), ``loop``
    (each epoch's start to its last step), ``validation`` (the records' ``val_time_s``),
    ``writes`` (the rest of each epoch's end: records, last.pt, best.pt) and ``finish``
    (the last epoch's end to the return: summaries)."""

    def __init__(self) -> None:
        self.start = self._now()
        self.events: list[tuple[str, tuple[float, float], float]] = []

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def __call__(self, event) -> None:
        val = 0.0
        if event.kind == "epoch_end" and event.records:
            val = max(r.get("val_time_s", 0.0) for r in event.records.values())
        self.events.append((event.kind, self._now(), val))

    def split(self) -> dict[str, float]:
        """Wall seconds per phase, and CPU seconds (``*_cpu``); the records give validation
        in wall time only, so in CPU seconds validation and writes are one ``epoch_ends``."""
        end = self._now()
        wall = dict.fromkeys(("setup", "loop", "validation", "writes", "finish"), 0.0)
        cpu = dict.fromkeys(("setup", "loop", "epoch_ends", "finish"), 0.0)
        first = next(t for k, t, _ in self.events if k == "epoch_start")
        wall["setup"], cpu["setup"] = first[0] - self.start[0], first[1] - self.start[1]
        epoch_at = last_step = first
        for kind, t, val in self.events:
            if kind == "epoch_start":
                epoch_at = last_step = t
            elif kind == "step":
                last_step = t
            elif kind == "epoch_end":
                wall["loop"] += last_step[0] - epoch_at[0]
                cpu["loop"] += last_step[1] - epoch_at[1]
                tail = t[0] - last_step[0]
                wall["validation"] += min(val, tail)
                wall["writes"] += tail - min(val, tail)
                cpu["epoch_ends"] += t[1] - last_step[1]
        last = self.events[-1][1]
        wall["finish"], cpu["finish"] = end[0] - last[0], end[1] - last[1]
        wall["total"], cpu["total"] = end[0] - self.start[0], end[1] - self.start[1]
        return {**wall, **{f"{k}_cpu": v for k, v in cpu.items()}}

def main(argv: list[str] | None = None) -> dict:
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
    args = p.parse_args(argv)
    cond = _conditions.start("bench_sweep", argv)
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
                         student_cfg=base, repeats=args.repeats, runs=runs)
        # Costs before, between and after the timed runs: the median resists load drift.
        samples = [per_clip_costs(index, **cost_args)]

        t0, c0 = time.perf_counter(), time.process_time()
        build_cache(cache_cfg, index)
        build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        specs = [StudentSpec(alpha=a, tau=t, beta=0.0, seed=0,
                             out_dir=str(work / "cached" / f"a{a:g}_t{t:g}"))
                 for a in ALPHAS for t in TAUS]
        sweep = Phases()
        train_students(dataclasses.replace(base, cache=cache_cfg.out), specs, progress=sweep)
        sweep_phases = sweep.split()
        samples.append(per_clip_costs(index, **cost_args))

        online = []
        for a in ALPHAS:
            for t in TAUS:
                cfg = dataclasses.replace(base, alpha=a, tau=t,
                                          teacher_weights=str(work / "teacher.pt"),
                                          out_dir=str(work / "online" / f"a{a:g}_t{t:g}"))
                run = Phases()
                fit(cfg, progress=run)
                online.append(run.split())
        samples.append(per_clip_costs(index, **cost_args))

    costs = {k: statistics.median(c[k] for c in samples) for k in samples[0]}
    prediction = predicted_speedup(costs, runs=runs, views=views, epochs=epochs)
    prediction_cpu = predicted_speedup(costs, runs=runs, views=views, epochs=epochs,
                                       suffix="_cpu")
    online_sum = {k: sum(r[k] for r in online) for k in online[0]}
    cached_total = build_s + sweep_phases["total"]
    measured = online_sum["total"] / cached_total
    measured_cpu = online_sum["total_cpu"] / (build_cpu + sweep_phases["total_cpu"])
    # Loops only: the trainer's epoch loops (no setup, validation, writes) and the build
    loop = online_sum["loop"] / (build_s + sweep_phases["loop"])
    clip_epochs = len(index) * epochs
    loop_bound = costs["D"] + runs * costs["S"]
    loop_turns = costs["D"] + runs * costs["S_turns"]
    loop_per_clip = sweep_phases["loop"] / clip_epochs
    loop_per_clip_cpu = sweep_phases["loop_cpu"] / clip_epochs
    r3 = lambda d: {k: round(v, 3) for k, v in d.items()}  # noqa: E731
    out.update({
        "per_clip_s": {k: round(v, 4) for k, v in costs.items()},
        "per_clip_s_samples": [{k: round(v, 4) for k, v in c.items()} for c in samples],
        "cache_build_s": round(build_s, 1),
        "cache_build_cpu_s": round(build_cpu, 1),
        "cached_sweep_phases_s": r3(sweep_phases),
        "cached_total_s": round(cached_total, 1),
        "online_phases_s": r3(online_sum),
        "online_runs_s": [round(r["total"], 1) for r in online],
        "online_total_s": round(online_sum["total"], 1),
        "measured_speedup": round(measured, 3),
        "measured_speedup_cpu": round(measured_cpu, 3),
        "measured_speedup_loops_only": round(loop, 3),
        "predicted_speedup": round(prediction["speedup"], 3),
        "predicted_speedup_cpu": round(prediction_cpu["speedup"], 3),
        "fraction_of_prediction": round(measured / prediction["speedup"], 3),
        "fraction_of_prediction_cpu": round(measured_cpu / prediction_cpu["speedup"], 3),
        "fraction_of_prediction_loops_only": round(loop / prediction["speedup"], 3),
        "goal_met": measured >= 0.9 * prediction["speedup"],
        "sweep_loop_per_clip_epoch_s": round(loop_per_clip, 4),
        "sweep_loop_bound_D_plus_NS_s": round(loop_bound, 4),
        "sweep_loop_D_plus_N_S_turns_s": round(loop_turns, 4),
        "sweep_loop_fraction_of_bound": round(loop_bound / loop_per_clip, 3),
        "sweep_loop_fraction_of_bound_cpu": round(
            (costs["D_cpu"] + runs * costs["S_cpu"]) / loop_per_clip_cpu, 3),
        "students_in_turn_vs_alone": round(costs["S_turns"] / costs["S"], 3),
        "students_in_turn_vs_alone_cpu": round(costs["S_turns_cpu"] / costs["S_cpu"], 3),
    })
    out = _conditions.record("bench_sweep", out, cond)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
