"""Does a cached teacher train the same student as the teacher in the loop?

    python tools/bench_fidelity.py --work DIR [--json results.json] [--plot PREFIX] [--mix]
    python tools/bench_fidelity.py --quick        # under 3 minutes: checks that it runs, no result

What is compared (written before any full run; issue 14, section 2):

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
  - with ``--mix``, each KD arm again with every batch mixed (mixup 0.8 / cutmix 1.0 at even
    odds, ``mix_prob`` 1, the reference recipe's): ``online-mix`` mixes online (``--mixup 0.8
    --cutmix 1.0 --mix-prob 1`` on the student run, the teacher sees the mixed clip), and
    ``cached-V-mix`` replays a cache built with the same mixing (the student takes the mixing
    from the cache, nothing is mixed student-side). These arms need the student-side mixed
    replay; the script tries it on a tiny run first and skips them with a message when the
    installed dvfl cannot train from a mixed cache;
- students: the demo's (two-stage ``vfl-nano``, ``embed_dim=16``, 4 of the teacher's 8 frames,
  32 px, 32 epochs, batch 8, AdamW), alpha ``--alpha`` 0.9, tau ``--tau`` 1 (the pilot of issue
  14). Every arm's seeds train side by side from one decoded batch (``train_students``).
- Validation runs only after the last epoch, so best.pt is the final model and no epoch is
  picked on test videos. Each best.pt is scored on the test split, 1 view: the teacher's test
  view cut to the student's frames (``TestView(span=teacher frames)``).

What is reported, per arm: test top-1 per seed, mean ± sample std; for each cached arm the paired
difference to ``online`` (same seed; a mixed cached arm to ``online-mix``) with a 95% t-interval
over seeds; the fraction of seeds that learn the task (top-1 at least halfway from chance to the
teacher's top-1, fixed here); and the CPU seconds of the arm (its students' training, plus the
whole build of the cache it reads; the online arm pays its teacher forwards in training).
``--plot PREFIX`` draws top-1 against V (online as a band of mean ± std, CE as a line) and top-1
against CPU seconds.

Making the task less bimodal (issue 14: on the demo's task students either learn the motion or
stay low, whatever the loss). Short CE-only pilots, 5 seeds side by side, the bench's data
(6 classes x 100 videos), 1-view test top-1, 1 torch thread on the shared 2-core box:

| pilot (changed from the bench's defaults) | CE top-1 per seed 0-4 | mean ± std | CPU s |
|---|---|---|---|
| none (32 epochs, warm-up 2, width 16, LR .064) | 36.9, 23.8, 30.4, 47.0, 25.0 | 32.6 ± 9.6 | 266 |
| warm-up 8 epochs (schedule) | 49.4, 27.4, 60.1, 39.3, 37.5 | 42.7 ± 12.5 | 261 |
| ``embed_dim`` 24 (capacity) | 57.1, 39.3, 16.7, 42.3, 33.3 | 37.7 ± 14.7 | 283 |
| LR 0.128/512 (schedule) | 22.0, 22.6, 23.8, 57.7, 25.0 | 30.2 ± 15.5 | 237 |

(2026-11-29, load average about 5 from other jobs; ``/tmp`` scripts calling ``train_students``
and ``evaluate_many`` exactly as below, validation only after the last epoch.) With best.pt taken
at the last epoch, the defaults are not bimodal for CE: every seed learns something and none
reaches the teacher (the issue's pilot, 43.5-88.7, chose epochs on the test split). A doubled LR
is plainly bimodal (four seeds near chance 16.7, one at 57.7); a wider student puts one seed at
chance; a longer warm-up raises the mean but also the spread. **Choice: the defaults stay**
(smallest spread, no seed at chance, labels alone clearly not enough, which is where KD can
show). Data size was not piloted (more videos cost proportionally more CPU). Whether the KD arms
are bimodal is not known before the full run; the fraction of seeds that learn is reported for
that reason.

Estimated cost of the full run without ``--mix`` (from the pilots and docs/demo.md's step
times): synth 30, teacher 180, caches of 1 + 2 + 4 + 8 + 32 = 47 views per video 225 (the demo's
8 views took 38), seven arms of 5 students at about 265 each 1855, the online arm's teacher
forwards about 150: about 2450 CPU-s, **41 CPU-minutes**; ``--mix`` roughly doubles the KD
arms. (Measured afterwards: 99 CPU-minutes for the whole run with ``--mix``; the table as it
came out is in docs/benchmarks.md.)

How it runs. Every stage writes into ``--work`` and is skipped when its output is complete
(data, teacher, each cache, each arm), and ``--json`` is rewritten after every stage with what
is known so far (stages' CPU and wall seconds, each finished arm's per-seed top-1): a killed run
loses at most the stage it was in, and ``--work`` the same folder continues it.

How the full run was called (one ``--work`` folder, continued with ``--mix`` once the
student-side mixed replay had landed):

    nice -n 10 python tools/bench_fidelity.py --work bench_fidelity --json fidelity.json \
        --plot docs/fidelity [--mix]

The second run (2026-12-07), the same comparison with a strong teacher (99.4%), trained as the
fewer-frames benchmark trains its own:

    nice -n 10 python tools/bench_fidelity.py --work W --json fidelity_strong.json \
        --plot docs/fidelity_strong --teacher-batch 8 --teacher-lr 0.064 --teacher-epochs 24 [--mix]

and the third, the same with the students trained twice as long (``--student-epochs 64``, plots
``docs/fidelity_long``). The tables as they came out are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from dvfl_cache.tables import paired_interval

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: _stages, however loaded
from _stages import COMMON_FIT, Stages, synth_task  # noqa: E402

TWO_STAGES = {"depths": [1, 1], "focal_levels": [2, 2], "focal_windows": [3, 3],
              "tubelet_size": 2}
# the reference recipe's mixing (every batch mixed, mixup 0.8 / cutmix 1.0 at even odds)
MIX = {"mixup": 0.8, "cutmix": 1.0, "mix_prob": 1.0}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mixed_replay_support(work: Path) -> str | None:
    """None when the installed dvfl trains a student from a mixed cache and mixes online with a
    teacher in the loop; otherwise why not. Found by trying both on a tiny run (four videos per
    class, a random toy teacher, one epoch), not by reading a version."""
    shutil.rmtree(work, ignore_errors=True)
    try:
        return _try_mixed(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _try_mixed(work: Path) -> str | None:
    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth
    from dvfl_cache.errors import DvflError
    from dvfl_cache.models import create_model, save_checkpoint
    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    data = work / "data"
    write_synth(data, SynthConfig(classes=2, videos_per_class=4, width=32, height=32, frames=8,
                                  seed=0))
    index = build_index("ucf101", data, split=1, subset="train")
    toy = {"embed_dim": 8, "depths": [1, 1, 1, 1]}
    save_checkpoint(work / "teacher.pt", create_model("vfl-nano", num_classes=2, num_frames=4,
                                                      img_size=32, **toy))
    common = dict(dataset="ucf101", data_root=str(data), model="vfl-nano", model_opts=toy,
                  num_frames=2, size=32, epochs=1, warmup_epochs=0, batch_size=2, workers=0,
                  device="cpu", amp=False, alpha=0.5, tau=1.0)
    try:
        build_cache(BuildConfig(out=str(work / "mixed.zarr"), teacher=str(work / "teacher.pt"),
                                frames=4, size=32, workers=0, device="cpu", overwrite=True,
                                mixup=MIX["mixup"], cutmix=MIX["cutmix"],
                                mix_prob=MIX["mix_prob"]), index)
        fit(FitConfig(**common, cache=str(work / "mixed.zarr"), out_dir=str(work / "cached")),
            overwrite=True)
    except (DvflError, TypeError, ValueError) as exc:
        return f"training from a mixed cache failed: {exc}"
    try:
        fit(FitConfig(**common, **MIX, teacher_weights=str(work / "teacher.pt"),
                      out_dir=str(work / "online")), overwrite=True)
    except (DvflError, TypeError, ValueError) as exc:
        return f"mixing online with a teacher in the loop failed: {exc}"
    return None


def teacher_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The teacher's own training settings (CE only, validated once at the end)."""
    return dict(num_frames=args.teacher_frames, size=args.teacher_size, model="vfl-nano",
                model_opts={"embed_dim": args.teacher_embed, **TWO_STAGES}, alpha=0.0,
                epochs=args.teacher_epochs, warmup_epochs=args.warmup_epochs,
                val_every=args.teacher_epochs, batch_size=args.teacher_batch,
                base_lr=args.teacher_lr)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=None,
                   help="working folder; a rerun on it continues (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    p.add_argument("--json", default=None, help="also write the results here (after each stage)")
    p.add_argument("--plot", default=None, help="write PREFIX_vs_views.png and PREFIX_vs_cpu.png")
    p.add_argument("--replot", default=None, metavar="RESULT.json",
                   help="run nothing: draw --plot from a finished run's --json or from its result "
                        "file in benchmarks/results/")
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
    p.add_argument("--teacher-batch", type=int, default=16)
    p.add_argument("--teacher-lr", type=float, default=0.032, help="per 512 (AdamW 1e-3 at 16)")
    p.add_argument("--student-frames", type=int, default=4)
    p.add_argument("--student-size", type=int, default=32)
    p.add_argument("--student-epochs", type=int, default=32)
    p.add_argument("--student-embed", type=int, default=16)
    p.add_argument("--warmup-epochs", type=int, default=2, help="teacher")
    p.add_argument("--student-warmup", type=int, default=2, help="students")
    p.add_argument("--student-lr", type=float, default=0.064, help="per 512 (AdamW 1e-3 at 8)")
    p.add_argument("--views", default="1,2,4,8,E", help="cached views per video; E = epochs")
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--mix", action="store_true",
                   help="also the mixed KD arms (skipped, with the reason, when this dvfl cannot "
                        "train from a mixed cache)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        # warm-up from LR 0 and a cosine to 0 would leave a few-step student untrained
        args.classes, args.videos_per_class, args.video_size, args.video_frames = 2, 8, 32, 16
        args.teacher_size, args.teacher_epochs, args.teacher_embed = 32, 3, 8
        args.student_size, args.student_epochs, args.student_embed = 32, 4, 8
        args.views, args.seeds, args.warmup_epochs, args.student_warmup = "1,E", "0,1", 0, 0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    if args.replot:
        if not args.plot:
            raise SystemExit("--replot needs --plot PREFIX")
        data = json.loads(Path(args.replot).read_text())
        rows, views = rows_from_record(data)
        _plot(rows, views, args.plot)
        return data
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.views import TestView
    from dvfl_train.config import FitConfig
    from dvfl_train.evaluate import evaluate, evaluate_many, load_for_eval
    from dvfl_train.student import StudentSpec
    from dvfl_train.trainer import fit, train_students

    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = args.student_epochs
    views = sorted({epochs if v == "E" else int(v) for v in args.views.split(",")})
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    work.mkdir(parents=True, exist_ok=True)
    mix_skipped = None
    if args.mix:
        mix_skipped = mixed_replay_support(work / "probe")
        if mix_skipped:
            print(f"mixed arms skipped: this dvfl cannot train them ({mix_skipped})",
                  file=sys.stderr, flush=True)
    # --mix only adds arms: a plain run continues with --mix and keeps every arm it finished
    rec = Stages(work, Path(args.json) if args.json else None, {
        "status": "quick check, not a result" if args.quick else "full run",
        "machine": f"{platform.machine()}, {args.threads} torch thread(s), "
                   f"{args.workers} decode worker(s)",
        "torch": torch.__version__, "args": vars(args), "mixed_arms_skipped": mix_skipped},
        free=("json", "plot", "keep", "verbose", "work", "mix"),
        carry={"arms": {}, "teacher_top1": None}, results=False, kind="bench_fidelity",
        argv=argv)
    mixed = args.mix and mix_skipped is None
    # flips off: a flip turns PanLeft into PanRight (docs/demo.md)
    sampler = {"temporal": "stride", "stride": 4, "flip": 0.0, "area": [0.5, 1.0]}
    data = work / "data"
    train_idx, test_idx = synth_task(rec, data, args)
    common = dict(COMMON_FIT, data_root=str(data), sampler=sampler, workers=args.workers)
    teacher_ckpt = work / "teacher" / "best.pt"
    rec.run("teacher", lambda: fit(FitConfig(**common, **teacher_settings(args),
                                             out_dir=str(work / "teacher")), overwrite=True))
    geometry = dict(batch_size=16, workers=args.workers)

    def teacher_eval() -> None:
        teacher, _, info = load_for_eval(teacher_ckpt)
        rec.data["teacher_top1"] = evaluate(teacher, test_idx, info["view"],
                                            **geometry).report.top1

    rec.run("teacher-eval", teacher_eval)

    def cache(v: int, mix: bool) -> Path:
        path = work / f"cache{v}{'-mix' if mix else ''}.zarr"
        # same sampler and seed as the online arm's views (data_seed 0): view r of a video
        # is the online arm's view of epoch r + 1
        rec.run(f"cache-{v}{'-mix' if mix else ''}", lambda: build_cache(BuildConfig(
            out=str(path), teacher=str(teacher_ckpt), views_per_video=v, sampler=sampler,
            frames=args.teacher_frames, size=args.teacher_size, seed=0, dtype="float32",
            batch_size=16, workers=args.workers, device="cpu", overwrite=True,
            **({"mixup": MIX["mixup"], "cutmix": MIX["cutmix"], "mix_prob": MIX["mix_prob"]}
               if mix else {})), train_idx))
        return path

    student = dict(common, num_frames=args.student_frames, size=args.student_size,
                   model="vfl-nano", model_opts={"embed_dim": args.student_embed, **TWO_STAGES},
                   epochs=epochs, warmup_epochs=args.student_warmup, val_every=epochs,
                   batch_size=8, base_lr=args.student_lr, test_span=args.teacher_frames,
                   tau=args.tau)
    online = {"alpha": args.alpha, "teacher_weights": str(teacher_ckpt)}
    arms: dict[str, dict[str, Any]] = {"ce": {"alpha": 0.0}, "online": online}
    arms.update({f"cached-{v}": {"alpha": args.alpha, "cache": str(cache(v, False))}
                 for v in views})
    if mixed:  # the student takes its mixing from the cache; online mixes it itself
        arms["online-mix"] = {**online, **MIX}
        arms.update({f"cached-{v}-mix": {"alpha": args.alpha, "cache": str(cache(v, True))}
                     for v in views})
    test_view = TestView(num_frames=args.student_frames, size=args.student_size,
                         temporal="stride", stride=4, span=args.teacher_frames)

    # trained with the fairness check (V = E) and the extremes first, so that a run cut short
    # still answers the most; reported in the order above
    order = [views[-1], views[0], *reversed(views[1:-1])] if views else []
    first = [f"cached-{v}{m}" for m in ("", "-mix") for v in order]
    trained = sorted(arms, key=lambda a: (a.endswith("-mix"), first.index(a) if a in first else -1))
    for arm in trained:
        kw = arms[arm]
        specs = [StudentSpec(alpha=kw["alpha"], tau=args.tau, beta=0.0, seed=s,
                             out_dir=str(work / arm / f"seed{s}"), name=f"{arm}-{s}")
                 for s in seeds]
        started = all((Path(sp.out_dir) / "last.pt").is_file() for sp in specs)
        rec.run(f"train-{arm}", lambda kw=kw, specs=specs, started=started: train_students(
            FitConfig(**student, **kw, out_dir=str(work / arm)), specs, resume=started,
            overwrite=not started))

        def score(arm=arm, specs=specs) -> None:
            models = []
            for sp in specs:
                model, _, info = load_for_eval(Path(sp.out_dir) / "best.pt")
                if info["epoch"] != epochs:
                    raise SystemExit(f"{sp.out_dir}/best.pt is from epoch {info['epoch']}, not "
                                     "the last")
                models.append(model)
            rec.data["arms"][arm] = [r.report.top1 for r in evaluate_many(
                models, test_idx, test_view, **geometry)]

        rec.run(f"eval-{arm}", score)

    rows = summarise(rec.data, arms, classes=args.classes, seeds=len(seeds))
    rec.data["rows"] = rows
    rec.save()
    if args.quick:
        print("QUICK CHECK: tiny sizes; the numbers below only show that the script runs")
    teacher_top1 = rec.data["teacher_top1"]
    print(f"teacher test top-1 {100 * teacher_top1:.1f}% (chance {100 / args.classes:.1f}%); "
          f"a seed 'learns' at >= {100 * rec.data['learned_at']:.1f}%; seeds {args.seeds}")
    if mix_skipped:
        print(f"mixed arms skipped: {mix_skipped}")
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
    if args.plot:
        _plot(rows, views, args.plot)
    if args.keep:
        print(f"kept {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return rec.data


def summarise(data: dict[str, Any], arms: dict[str, Any], *, classes: int,
              seeds: int) -> list[dict[str, Any]]:
    """One row per arm from the record: top-1 per seed, mean ± std, fraction of seeds that
    learn, CPU seconds (a cached arm's includes its cache's build), and for a cached arm the
    paired difference to its online arm (``online`` or ``online-mix``)."""
    chance = 1.0 / classes
    data["chance"] = chance
    data["learned_at"] = learned_at = chance + (data["teacher_top1"] - chance) / 2
    rows = []
    for arm in arms:
        top1 = data["arms"][arm]
        cpu = data["stages"][f"train-{arm}"]["cpu_s"]
        if arm.startswith("cached-"):
            cpu += data["stages"][arm.replace("cached-", "cache-")]["cpu_s"]
        mean, std = _mean_std(top1)
        row = {"arm": arm, "top1": top1, "mean": mean, "std": std,
               "learned": sum(t >= learned_at for t in top1) / seeds, "cpu_s": cpu}
        if arm.startswith("cached-"):
            ref = "online-mix" if arm.endswith("-mix") else "online"
            row["minus_online"] = paired_interval(top1, data["arms"][ref])
        rows.append(row)
    return rows


def rows_from_record(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """The plot's rows and views from a finished run: its own ``--json`` record (arms and
    stages), or its result file in benchmarks/results/ (a published table: per-seed top-1 in
    percent, CPU seconds as "train + cache")."""
    if "arms" in data and "stages" in data:
        arms = list(data["arms"])
        seeds = len(next(iter(data["arms"].values())))
        rows = summarise(data, dict.fromkeys(arms), classes=data["args"]["classes"], seeds=seeds)
    else:
        rows = []
        for r in data["rows"]:
            top1 = [float(t) / 100 for t in str(r["top_1_per_seed"]).split(",")]
            arm = re.sub(r"^cached-E(-mix)? \((\d+)\)$", r"cached-\2\1", r["arm"])
            mean, std = _mean_std(top1)
            rows.append({"arm": arm, "top1": top1, "mean": mean, "std": std,
                         "cpu_s": sum(float(x) for x in str(r["cpu_s_train_cache"]).split("+"))})
    views = sorted({int(m[1]) for r in rows if (m := re.match(r"cached-(\d+)", r["arm"]))})
    return rows, views


# One colour per kind of arm, so plain and mixed never share one (the panels sit side by side).
KIND_COLOURS = {"": ("C0", "C1"), "-mix": ("C2", "C3")}  # (online band, cached points)


def clipped_band(mean: float, std: float) -> tuple[float, float]:
    """mean ± std in percent, cut to the possible 0-100: a top-1 above 100% is no outcome."""
    return max(0.0, 100 * (mean - std)), min(100.0, 100 * (mean + std))


def _plot(rows: list[dict[str, Any]], views: list[int], prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_arm = {r["arm"]: r for r in rows}
    kinds = [(suffix, label) for suffix, label in (("", "plain"), ("-mix", "every batch mixed"))
             if f"online{suffix}" in by_arm]
    # one panel per kind, side by side: overlapping online bands could not be told apart
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.5), sharey=True,
                             squeeze=False)
    ce = by_arm["ce"]
    for ax, (suffix, label) in zip(axes[0], kinds):
        on = by_arm[f"online{suffix}"]
        band, dots = KIND_COLOURS[suffix]
        ax.axhspan(*clipped_band(on["mean"], on["std"]), alpha=0.2, color=band,
                   label=f"online KD{', mixed' if suffix else ''} (mean ± std)")
        ax.axhline(100 * on["mean"], color=band, linewidth=1)
        done = [v for v in views if f"cached-{v}{suffix}" in by_arm]  # a run cut short
        cached = [by_arm[f"cached-{v}{suffix}"] for v in done]
        means = [100 * r["mean"] for r in cached]
        lows, highs = zip(*(clipped_band(r["mean"], r["std"]) for r in cached)) if cached else ((), ())
        ax.errorbar(done, means, [[m - lo for m, lo in zip(means, lows)],
                                  [hi - m for m, hi in zip(means, highs)]],
                    marker="o", color=dots, capsize=3,
                    label=f"cached KD{', mixed' if suffix else ''} (mean ± std)")
        ax.axhline(100 * ce["mean"], color="k", linestyle="--", label="CE only")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cached views per video (V)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("test top-1 (%)")
    axes[0][0].set_ylim(top=102)
    fig.tight_layout()
    fig.savefig(f"{prefix}_vs_views.png", dpi=120)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        lo, hi = clipped_band(r["mean"], r["std"])
        ax.errorbar(r["cpu_s"], 100 * r["mean"], [[100 * r["mean"] - lo], [hi - 100 * r["mean"]]],
                    marker="o")
        ax.annotate(r["arm"], (r["cpu_s"], 100 * r["mean"]), fontsize=7)
    ax.set_xlabel("CPU seconds (training + cache build)")
    ax.set_ylabel("test top-1 (%)")
    fig.tight_layout()
    fig.savefig(f"{prefix}_vs_cpu.png", dpi=120)


if __name__ == "__main__":
    main()
