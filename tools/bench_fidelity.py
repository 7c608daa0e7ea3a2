"""DRAFT. Does a cached teacher train the same student as the teacher in the loop?

    python tools/bench_fidelity.py [--work DIR --keep] [--json results.json] [--plot PREFIX]
    python tools/bench_fidelity.py --quick        # under 3 minutes: checks that it runs, no result

Status: a draft on today's APIs. It has not been run at full size. The mixed-views work (issue
13) has landed (``--mix`` adds the mixed arms); one thing must land first: a decision on the
task (issue 14: on the demo's task students either learn the motion or stay low, so the task
may need to be made less bimodal *before* the full run).
The full run also needs a quiet machine (its CPU times are part of the result).

What is compared (fixed before any full run):

- one CE-trained teacher (the demo's: two-stage ``vfl-nano``, ``embed_dim=32``, 8 frames 4 apart,
  64 px, 20 epochs, AdamW);
- students trained with the same schedule, the same data order (``data_seed`` 0) and init
  seeds ``--seeds`` (default 0-4), in these arms:
  - ``ce``: cross-entropy only (alpha 0), views drawn fresh each epoch;
  - ``online``: the teacher runs on each epoch's fresh views (``teacher_weights``);
  - ``cached-V`` for V in ``--views`` (default 1, 2, 4, 8 and E = the number of epochs): a cache
    of V views per video, epoch e replaying view (e - 1) mod V. The cache is built with the same
    sampler and seed as the online arm's views, so ``cached-E`` sees exactly the online views and
    must match ``online`` up to float rounding: that arm is the check that the comparison is fair;
  - with ``--mix``, each arm again with mixing (mixup 0.8 / cutmix 1.0 on every row, the
    reference recipe): ``ce-mix`` and ``online-mix`` draw per row from the data seed,
    ``cached-mix-V`` replays caches built with the same mixing (``cached-mix-E`` must match
    ``online-mix`` up to float rounding, as ``cached-E`` matches ``online``);
- students: the demo's (two-stage ``vfl-nano``, ``embed_dim=16``, 4 of the teacher's 8 frames,
  32 px, 32 epochs, batch 8, AdamW), alpha ``--alpha`` 0.9, tau ``--tau`` 1 (the pilot of issue
  14). Every arm's seeds train side by side from one decoded batch (``train_students``).
- Validation runs only after the last epoch, so best.pt is the final model and no epoch is
  picked on test videos. Each best.pt is scored on the test split, 1 view: the teacher's test
  view cut to the student's frames (``evaluate_many(span=teacher frames)``).

What is reported, per arm: test top-1 per seed, mean ± sample std; for each cached arm the paired
difference to ``online`` (same seed) with a 95% t-interval over seeds; the fraction of seeds that
learn the task (top-1 at least halfway from chance to the teacher's top-1, fixed here); and the
CPU seconds of the arm (its students' training, plus the whole build of the cache it reads; the
online arm pays its teacher forwards in training). ``--plot PREFIX`` draws top-1 against V (online
as a band of mean ± std, CE as a line) and top-1 against CPU seconds.

How the full run will be called (on a quiet machine):

    python tools/bench_fidelity.py --mix --json fidelity.json --plot docs/fidelity
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TWO_STAGES = {"depths": [1, 1], "focal_levels": [2, 2], "focal_windows": [3, 3],
              "tubelet_size": 2}
# two-sided 95% Student t quantiles by degrees of freedom (1..10); 1.96 beyond
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stage:
    """Wall and CPU seconds of one stage (CPU includes reaped decoding workers)."""

    def __init__(self, name: str):
        self.name, self.wall, self.cpu = name, 0.0, 0.0

    def __enter__(self) -> Stage:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        print(f"[{self.name}] ...", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu
        print(f"[{self.name}] {self.wall:.0f} s wall, {self.cpu:.0f} s CPU", file=sys.stderr,
              flush=True)


def paired_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired by position) and its 95% t-interval (low, high)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(d)
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = _T975.get(len(d) - 1, 1.96) * statistics.stdev(d) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--plot", default=None, help="write PREFIX_vs_views.png and PREFIX_vs_cpu.png")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, 2 seeds, a few epochs: checks that the script runs")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--videos-per-class", type=int, default=100)
    p.add_argument("--video-size", type=int, default=64)
    p.add_argument("--video-frames", type=int, default=32)
    p.add_argument("--teacher-frames", type=int, default=8)
    p.add_argument("--teacher-size", type=int, default=64)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--teacher-embed", type=int, default=32)
    p.add_argument("--student-frames", type=int, default=4)
    p.add_argument("--student-size", type=int, default=32)
    p.add_argument("--student-epochs", type=int, default=32)
    p.add_argument("--student-embed", type=int, default=16)
    p.add_argument("--warmup-epochs", type=int, default=2, help="teacher and students")
    p.add_argument("--views", default="1,2,4,8,E", help="cached views per video; E = epochs")
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--mix", action="store_true",
                   help="also every arm with mixup 0.8 / cutmix 1.0 on every row")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        # warm-up from LR 0 and a cosine to 0 would leave a few-step student untrained
        args.classes, args.videos_per_class, args.video_size, args.video_frames = 2, 8, 32, 16
        args.teacher_size, args.teacher_epochs, args.teacher_embed = 32, 3, 8
        args.student_size, args.student_epochs, args.student_embed = 32, 4, 8
        args.views, args.seeds, args.warmup_epochs = "1,E", "0,1", 0
    return args


MIXING = {"mixup": 0.8, "cutmix": 1.0}  # every row, the reference recipe


def arm_settings(kinds: dict[str, dict[str, float]], views: list[int], *, alpha: float,
                 teacher: str, caches: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each arm's FitConfig settings; ``kinds`` maps an arm-name infix ("" or "mix-") to its
    mixing. A mixed cache brings its own mixing: cached arms never set mixup/cutmix."""
    arms: dict[str, dict[str, Any]] = {}
    for kind, mix in kinds.items():
        suffix = "-mix" if kind else ""
        arms.update({
            f"ce{suffix}": {"alpha": 0.0, **mix},
            f"online{suffix}": {"alpha": alpha, "teacher_weights": teacher, **mix},
            **{f"cached-{kind}{v}": {"alpha": alpha, "cache": caches[f"{kind}{v}"]}
               for v in views}})
    return arms


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth
    from dvfl_train.config import FitConfig
    from dvfl_train.evaluate import evaluate, evaluate_many, load_for_eval
    from dvfl_train.student import StudentSpec
    from dvfl_train.trainer import fit, train_students

    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = args.student_epochs
    views = sorted({epochs if v == "E" else int(v) for v in args.views.split(",")})
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    work.mkdir(parents=True, exist_ok=True)
    # flips off: a flip turns PanLeft into PanRight (docs/demo.md)
    sampler = {"temporal": "stride", "stride": 4, "flip": 0.0, "area": [0.5, 1.0]}
    stages: dict[str, Stage] = {}

    def stage(name: str) -> Stage:
        stages[name] = Stage(name)
        return stages[name]

    with stage("synth"):
        data = work / "data"
        if data.exists():
            shutil.rmtree(data)
        write_synth(data, SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class,
                                      width=args.video_size, height=args.video_size,
                                      frames=args.video_frames, seed=0))
        train_idx = build_index("ucf101", data, split=1, subset="train")
        test_idx = build_index("ucf101", data, split=1, subset="test")

    common = dict(dataset="ucf101", data_root=str(data), sampler=sampler, optimizer="adamw",
                  weight_decay=0.05, warmup_epochs=args.warmup_epochs, warmup_lr=0.0,
                  min_lr=0.0, workers=args.workers, device="cpu", seed=0, amp=False)
    with stage("teacher"):
        teacher_cfg = FitConfig(
            **common, out_dir=str(work / "teacher"), num_frames=args.teacher_frames,
            size=args.teacher_size, model="vfl-nano",
            model_opts={"embed_dim": args.teacher_embed, **TWO_STAGES}, alpha=0.0,
            epochs=args.teacher_epochs, val_every=args.teacher_epochs, batch_size=16,
            base_lr=0.032)
        fit(teacher_cfg, overwrite=True)
    teacher_ckpt = work / "teacher" / "best.pt"

    kinds = {"": {}, **({"mix-": MIXING} if args.mix else {})}
    caches: dict[str, Path] = {}
    for kind, mix in kinds.items():
        for v in views:
            with stage(f"cache-{kind}{v}"):
                caches[f"{kind}{v}"] = work / f"cache-{kind}{v}.zarr"
                # same sampler and seed as the online arm's views (data_seed 0): view r of a
                # video is the online arm's view of epoch r + 1 (and, mixed, its mix)
                build_cache(BuildConfig(out=str(caches[f"{kind}{v}"]), teacher=str(teacher_ckpt),
                                        views_per_video=v, sampler=sampler,
                                        frames=args.teacher_frames, size=args.teacher_size,
                                        seed=0, dtype="float32", batch_size=16,
                                        workers=args.workers, device="cpu", overwrite=True,
                                        mix_prob=1.0, **mix), train_idx)

    student = dict(common, num_frames=args.student_frames, size=args.student_size,
                   model="vfl-nano", model_opts={"embed_dim": args.student_embed, **TWO_STAGES},
                   epochs=epochs, val_every=epochs, batch_size=8, base_lr=0.064,
                   test_span=args.teacher_frames, tau=args.tau)
    arms = arm_settings(kinds, views, alpha=args.alpha, teacher=str(teacher_ckpt),
                        caches={k: str(p) for k, p in caches.items()})
    runs: dict[str, list[Path]] = {}
    for arm, kw in arms.items():
        with stage(f"train-{arm}"):
            shared = FitConfig(**student, **kw, out_dir=str(work / arm))
            specs = [StudentSpec(alpha=kw["alpha"], tau=args.tau, beta=0.0, seed=s,
                                 out_dir=str(work / arm / f"seed{s}"), name=f"{arm}-{s}")
                     for s in seeds]
            train_students(shared, specs, overwrite=True)
            runs[arm] = [Path(sp.out_dir) for sp in specs]

    with stage("evaluate"):
        teacher, _, info = load_for_eval(teacher_ckpt)
        geometry = dict(temporal=info["temporal"], stride=info["stride"], batch_size=16,
                        workers=args.workers)
        teacher_top1 = evaluate(teacher, test_idx, num_frames=info["num_frames"],
                                size=info["size"], **geometry).report.top1
        order = [(arm, i) for arm in arms for i in range(len(seeds))]
        models = []
        for arm, i in order:
            model, _, sinfo = load_for_eval(runs[arm][i] / "best.pt")
            if sinfo["epoch"] != epochs:
                raise SystemExit(f"{runs[arm][i]}/best.pt is from epoch {sinfo['epoch']}, "
                                 "not the last")
            models.append(model)
        results = evaluate_many(models, test_idx, num_frames=args.student_frames,
                                size=args.student_size, span=info["num_frames"], **geometry)
    top1: dict[str, list[float]] = {arm: [] for arm in arms}
    for (arm, _), r in zip(order, results):
        top1[arm].append(r.report.top1)

    chance = 1.0 / args.classes
    learned_at = chance + (teacher_top1 - chance) / 2
    rows = []
    for arm in arms:
        cpu = stages[f"train-{arm}"].cpu
        if arm.startswith("cached-"):
            cpu += stages[f"cache-{arm[len('cached-'):]}"].cpu
        mean, std = _mean_std(top1[arm])
        row = {"arm": arm, "top1": top1[arm], "mean": mean, "std": std,
               "learned": sum(t >= learned_at for t in top1[arm]) / len(seeds), "cpu_s": cpu}
        if arm.startswith("cached-"):  # against the online arm mixed alike
            online = "online-mix" if arm.startswith("cached-mix-") else "online"
            row["minus_online"] = paired_interval(top1[arm], top1[online])
        rows.append(row)

    result = {"status": "quick check, not a result" if args.quick else "draft run",
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), "
                         f"{args.workers} decode worker(s)",
              "torch": torch.__version__, "args": vars(args), "teacher_top1": teacher_top1,
              "chance": chance, "learned_at": learned_at, "rows": rows,
              "stages": {n: {"wall_s": s.wall, "cpu_s": s.cpu} for n, s in stages.items()}}
    if args.quick:
        print("QUICK CHECK: tiny sizes; the numbers below only show that the script runs")
    print(f"teacher test top-1 {100 * teacher_top1:.1f}% (chance {100 * chance:.1f}%); "
          f"a seed 'learns' at >= {100 * learned_at:.1f}%; seeds {args.seeds}")
    print("| arm | top-1 mean ± std | per seed | learns | minus online (95% CI) | CPU s |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        diff = ""
        if "minus_online" in r:
            d, lo, hi = r["minus_online"]
            diff = f"{100 * d:+.1f} ({100 * lo:+.1f}, {100 * hi:+.1f})"
        seeds_txt = ", ".join(f"{100 * t:.1f}" for t in r["top1"])
        print(f"| {r['arm']} | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} | {seeds_txt} | "
              f"{100 * r['learned']:.0f}% | {diff} | {r['cpu_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.plot:
        _plot(rows, views, args.plot)
    if args.keep:
        print(f"kept {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _plot(rows: list[dict[str, Any]], views: list[int], prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_arm = {r["arm"]: r for r in rows}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    on, ce = by_arm["online"], by_arm["ce"]
    ax.axhspan(100 * (on["mean"] - on["std"]), 100 * (on["mean"] + on["std"]), alpha=0.2,
               label="online KD (mean ± std)")
    ax.axhline(100 * ce["mean"], color="k", linestyle="--", label="CE only")
    cached = [by_arm[f"cached-{v}"] for v in views]  # the unmixed arms
    ax.errorbar(views, [100 * r["mean"] for r in cached], [100 * r["std"] for r in cached],
                marker="o", label="cached KD")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("cached views per video (V)")
    ax.set_ylabel("test top-1 (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{prefix}_vs_views.png", dpi=120)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        ax.errorbar(r["cpu_s"], 100 * r["mean"], 100 * r["std"], marker="o")
        ax.annotate(r["arm"], (r["cpu_s"], 100 * r["mean"]), fontsize=7)
    ax.set_xlabel("CPU seconds (training + cache build)")
    ax.set_ylabel("test top-1 (%)")
    fig.tight_layout()
    fig.savefig(f"{prefix}_vs_cpu.png", dpi=120)


if __name__ == "__main__":
    main()
