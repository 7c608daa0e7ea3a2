"""`make demo`: the whole dvfl pipeline on the synthetic action dataset, on a CPU, start to end.

    python tools/demo.py [--out demo] [--seeds 0,1,2,3,4] [--tiny] [--dry-run]

Each step runs the command a user would type (printed first, with the venv's entry points) and
is skipped when its output is already complete, so `make demo` after a kill continues where it
stopped:

  1. dvfl-cache synth   OUT/data/         synthetic temporal actions in UCF101 layout
  2. dvfl-train fit     OUT/teacher/      the teacher, trained with cross-entropy alone
  3. dvfl-train eval    OUT/teacher/eval_1.json   its test accuracy (1 centre view)
  4. dvfl-cache build   OUT/cache.zarr/   the teacher's logits on V training views per video
  5. dvfl-train sweep   OUT/sweep/        CE-only baseline + alpha x tau students, every seed
  6. dvfl-train fit     OUT/online/epochs_K/  one distilled student with the teacher in the
                                          loop, for a few epochs (twice: K = 1 and 3), to
                                          measure what the sweep would cost without the cache
  7. dvfl-train explain OUT/explain/CLASS/ modulator maps of the first test video of each class:
                                          the teacher beside the CE student and the best
                                          distilled student (of the same seed)

then prints the teacher's test accuracy, the sweep's mean ± std table, a conclusion computed
from the seeds' distribution (``conclusion``: mean ± std per setting, the fraction of seeds that
learn the task, each KD setting's paired difference to CE with a 95% interval, and a verdict
that follows from those intervals), the time the cache saved (``time_saved``: the sweep's and
the build's CPU seconds against the distilled students run with the teacher in the loop, a
projection from step 6's measured cost per epoch) and where the report and plots are; the same
numbers go to OUT/summary.json. Why the sizes are what they are, and the numbers they gave, is
in docs/demo.md; the report is the sweep's own results.md, printed as written (never edited
here).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402


@dataclass(frozen=True)
class Preset:
    """Sizes of one demo; `DEFAULT` is what `make demo` runs, `TINY` the smoke test's."""

    # synthetic data (dvfl-cache synth)
    classes: int
    videos_per_class: int
    video_size: int
    video_frames: int
    # teacher (dvfl-train fit, alpha 0)
    teacher_model: str
    teacher_opts: tuple[str, ...]
    teacher_frames: int
    teacher_size: int
    teacher_epochs: int
    teacher_warmup: int
    teacher_lr: float
    # cache (dvfl-cache build)
    views_per_video: int
    # students (dvfl-train sweep)
    student_model: str
    student_opts: tuple[str, ...]
    student_frames: int
    student_size: int
    student_epochs: int
    student_warmup: int
    student_lr: float
    alphas: tuple[float, ...]
    taus: tuple[float, ...]
    # shared
    batch_size: int
    temporal: str = "stride"
    stride: int = 4                   # teacher frames this far apart (the cached views)
    eval_views: tuple[str, ...] = ("1", "4x3")
    workers: int = 1
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    area: tuple[float, float] = (0.5, 1.0)  # random-resized crops keep at least half the frame
    val_every: int = 5
    student_batch: int = 0            # 0: batch_size; students take more, smaller steps
    teacher_eval_views: tuple[str, ...] = ("1", "4x3")
    sampler_opts: tuple[str, ...] = field(default=("flip=0",))
    teacher_batch: int = 0            # 0: batch_size
    # epochs of the two short online-KD runs; their difference is one student's cost per epoch
    # with the teacher in the loop, what is left of the shorter one its fixed cost
    online_epochs: tuple[int, int] = (1, 3)


# Two-stage networks with tubelets: at 32-64 px the four-stage nano ends on 1x1-2x2 tokens, and
# without tubelets a freshly initialised Video-FocalNet is blind to frame order (its temporal
# modulator starts near zero), so neither learned the task in the budget (docs/demo.md).
_TWO_STAGES = ("depths=[1,1]", "focal_levels=[2,2]", "focal_windows=[3,3]", "tubelet_size=2")
# LRs are quoted for a batch of 512 (dvfl-train scales them): 0.064 is AdamW's 1e-3 at batch 8.
# The setting of tools/bench_fidelity.py's strong-teacher, 64-epoch run (docs/benchmarks.md,
# "Cached against online KD"), where every cached arm beat CE with every seed learning:
DEFAULT = Preset(
    classes=6, videos_per_class=100, video_size=64, video_frames=32,
    teacher_model="vfl-nano", teacher_opts=("embed_dim=32", *_TWO_STAGES),
    # a strong teacher (99.4% there): batch 8 gives twice the optimizer steps of batch 16 at
    # about the same CPU, and the motion is learned early enough in 24 epochs
    teacher_frames=8, teacher_size=64, teacher_epochs=24, teacher_warmup=2, teacher_lr=0.064,
    teacher_batch=8,
    # two cached views per training video, each replayed 32 times (V = 2 did as well as any V
    # there, and costs a quarter of the 8 views of the earlier setting)
    views_per_video=2,
    student_model="vfl-nano", student_opts=("embed_dim=16", *_TWO_STAGES), student_frames=4,
    # 64 epochs: at 32 the students had not converged (some distilled seeds stayed low)
    student_size=32, student_epochs=64, student_warmup=2, student_lr=0.064, student_batch=8,
    # the teacher's logits are soft at tau 1 already (mean top softmax 0.45 in our first
    # run), so the paper's taus of 5-15 would flatten its targets to nearly uniform. CE plus
    # one KD setting, 5 seeds each: the conclusion must hold over seeds; arms were cut, not
    # seeds, to pay for the longer schedule
    alphas=(0.9,), taus=(1.0,), batch_size=16, teacher_eval_views=("1",),
    # students validate once, at the end: best.pt is the last epoch, no test video picks a
    # checkpoint
    val_every=64, eval_views=("1",))

TINY = Preset(
    classes=2, videos_per_class=4, video_size=32, video_frames=8,
    teacher_model="vfl-nano", teacher_opts=("embed_dim=8", "depths=[1,1,1,1]"),
    teacher_frames=4, teacher_size=32, teacher_epochs=1, teacher_warmup=0, teacher_lr=0.5,
    views_per_video=1,
    student_model="vfl-nano", student_opts=("embed_dim=8", "depths=[1,1,1,1]"),
    student_frames=2, student_size=32, student_epochs=1, student_warmup=0, student_lr=0.5,
    alphas=(0.5,), taus=(2.0,), batch_size=4, stride=2,
    eval_views=("1", "2x3"), teacher_eval_views=("1", "2x3"), workers=0, val_every=1,
    online_epochs=(1, 2))


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Step:
    """One command of the demo and how to tell that its output is complete. A step that is not
    ``ready`` stands for commands that can only be planned once earlier steps have run (shown by
    --dry-run, never run)."""

    name: str
    argv: tuple[str, ...]
    done: bool
    output: Path
    ready: bool = True


class Demo:
    def __init__(self, out: Path, preset: Preset, seeds: tuple[int, ...]):
        self.out, self.p, self.seeds = out, preset, seeds
        self.data = out / "data"
        self.teacher = out / "teacher"
        self.cache = out / "cache.zarr"
        self.sweep = out / "sweep"
        self.explain = out / "explain"
        self.online = out / "online"
        self.timings_file = out / "timings.json"
        self.summary_file = out / "summary.json"

    def online_dir(self, epochs: int) -> Path:
        return self.online / f"epochs_{epochs}"

    @property
    def distilled_students(self) -> int:
        return len(self.p.alphas) * len(self.p.taus) * len(self.seeds)

    # -- the commands -------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        p = self.p
        area = f"{_fmt(p.area[0])},{_fmt(p.area[1])}"
        view_opts = [a for s in (*p.sampler_opts, f"area=[{area}]") for a in ("--sampler-opt", s)]
        teacher_views = view_opts + ["--sampler-opt", f"temporal={p.temporal}", "--sampler-opt",
                                     f"stride={p.stride}"]
        # Students replay the cached views cut to fewer frames over the same span, and are
        # validated and tested on the teacher's test views cut the same way.
        student_views = teacher_views + ["--test-span", str(p.teacher_frames)]
        data = ["--dataset", "ucf101", "--root", str(self.data)]
        common = ["--workers", str(p.workers), "--device", "cpu"]
        optim = ["--optimizer", p.optimizer, "--weight-decay", _fmt(p.weight_decay)]
        val = ["--val-every", str(p.val_every)]
        synth = ["dvfl-cache", "synth", "--out", str(self.data), "--classes", str(p.classes),
                 "--videos-per-class", str(p.videos_per_class), "--size", str(p.video_size),
                 "--frames", str(p.video_frames), "--workers", "2"]
        teacher = (["dvfl-train", "fit", *data, "--model", p.teacher_model]
                   + [a for o in p.teacher_opts for a in ("--model-opt", o)]
                   + ["--frames", str(p.teacher_frames), "--size", str(p.teacher_size),
                      *teacher_views,
                      "--alpha", "0", "--epochs", str(p.teacher_epochs),
                      "--warmup-epochs", str(p.teacher_warmup), "--lr", _fmt(p.teacher_lr),
                      *optim, *val, "--batch-size", str(p.teacher_batch or p.batch_size),
                      *common, "--out", str(self.teacher)])
        if self.teacher.exists():
            teacher.append("--resume")
        evaluate = (["dvfl-train", "eval", "--checkpoint", str(self.teacher / "best.pt"), *data]
                    + [a for v in p.teacher_eval_views for a in ("--views", v)]
                    + ["--batch-size", str(p.batch_size), *common])
        build = ["dvfl-cache", "build", *data, "--teacher", str(self.teacher / "best.pt"),
                 "--views-per-video", str(p.views_per_video), "--sampler", p.temporal,
                 "--stride", str(p.stride), "--frames", str(p.teacher_frames),
                 "--size", str(p.teacher_size), "--flip", "0", "--area", area,
                 "--batch-size", str(p.batch_size), *common, "--out", str(self.cache)]
        if self.cache.exists():
            build.append("--resume")
        # what a student is, the same in the sweep and in the online runs
        student = (["--model", p.student_model]
                   + [a for o in p.student_opts for a in ("--model-opt", o)]
                   + ["--frames", str(p.student_frames), "--size", str(p.student_size),
                      *student_views, "--lr", _fmt(p.student_lr), *optim,
                      "--batch-size", str(p.student_batch or p.batch_size), *common])
        sweep = (["dvfl-train", "sweep", *data, "--cache", str(self.cache),
                  "--alphas", ",".join(map(_fmt, p.alphas)), "--taus",
                  ",".join(map(_fmt, p.taus)), "--seeds", ",".join(map(str, self.seeds)),
                  *student, "--epochs", str(p.student_epochs),
                  "--warmup-epochs", str(p.student_warmup), *val,
                  "--eval-views", ",".join(p.eval_views), "--out", str(self.sweep)])
        if self.sweep.exists():
            sweep.append("--resume")
        # The first distilled setting with the teacher in the loop (its checkpoint names its
        # architecture, frames and size), run twice for a few epochs: only its cost is used.
        online = []
        for k in p.online_epochs:
            argv = ["dvfl-train", "fit", *data, "--teacher-weights",
                    str(self.teacher / "best.pt"), "--alpha", _fmt(p.alphas[0]),
                    "--tau", _fmt(p.taus[0]), *student, "--epochs", str(k),
                    "--warmup-epochs", "0", "--val-every", str(k),
                    "--out", str(self.online_dir(k))]
            if self.online_dir(k).exists():
                argv.append("--resume")
            online.append(Step(f"online KD, {k} epoch(s)", tuple(argv),
                               (self.online_dir(k) / "summary.json").is_file(),
                               self.online_dir(k)))
        evals = [self.teacher / f"eval_{v}.json" for v in p.teacher_eval_views]
        return [
            Step("synthetic dataset", tuple(synth), (self.data / "synth.json").is_file(),
                 self.data),
            Step("teacher (cross-entropy)", tuple(teacher),
                 (self.teacher / "summary.json").is_file(), self.teacher),
            Step("teacher evaluation", tuple(evaluate), all(e.is_file() for e in evals),
                 self.teacher),
            Step("teacher cache", tuple(build), _cache_complete(self.cache), self.cache),
            Step("alpha/tau sweep", tuple(sweep), (self.sweep / "results.md").is_file(),
                 self.sweep),
            *online,
            *self.explain_steps(),
        ]

    def explain_steps(self) -> list[Step]:
        """One `dvfl-train explain` per class, on the class's first test video: the teacher, the
        CE student and the best distilled student (1-view test top-1) of the same seed.

        Which videos and which student are known once the data and the sweep exist; until then
        one placeholder step shows the command. --overwrite: a step runs only while its
        explain.json (written last) is missing, so what it replaces is a killed run's leftovers.
        """
        results = self.sweep / "results.csv"
        teacher = ["--checkpoint", str(self.teacher / "best.pt")]
        if not ((self.data / "synth.json").is_file() and results.is_file()):
            runs = self.sweep / "runs"
            argv = ("dvfl-train", "explain", "<first test video of each class>", *teacher,
                    "--checkpoint", str(runs / "ce_s<seed>" / "best.pt"), "--checkpoint",
                    str(runs / "<best distilled run>" / "best.pt"), "--out",
                    str(self.explain / "<class>"), "--overwrite")
            return [Step("modulator maps (planned after the sweep)", argv, False, self.explain,
                         ready=False)]
        from dvfl_cache.data.readers import build_index

        ce, best = _ce_and_best(results)
        index = build_index("ucf101", self.data, split=1, subset="test")
        first: dict[int, str] = {}
        for i, video in enumerate(index.videos):
            first.setdefault(video.label, index.abspath(i))
        steps = []
        for label, path in sorted(first.items()):
            out = self.explain / index.classes[label]
            argv = ("dvfl-train", "explain", path, *teacher,
                    "--checkpoint", str(self.sweep / "runs" / ce / "best.pt"),
                    "--checkpoint", str(self.sweep / "runs" / best / "best.pt"),
                    "--out", str(out), "--overwrite")
            steps.append(Step(f"modulator maps: {index.classes[label]}", argv,
                              (out / "explain.json").is_file(), out))
        return steps


def _ce_and_best(results_csv: Path) -> tuple[str, str]:
    """Run names of the best distilled student by 1-view test top-1 (the first on a tie) and of
    the CE student of its seed, from the sweep's results.csv."""
    with open(results_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    kd = [r for r in rows if float(r["alpha"]) > 0]
    if not kd or "top1_1view" not in rows[0]:
        raise SystemExit(f"{results_csv}: no distilled run with a 1-view top-1 to explain")
    best = max(kd, key=lambda r: float(r["top1_1view"]))  # max keeps the first of equals
    ce = next((r for r in rows if float(r["alpha"]) == 0 and r["seed"] == best["seed"]), None)
    if ce is None:
        raise SystemExit(f"{results_csv}: no CE run of seed {best['seed']} to compare with")
    return ce["name"], best["name"]


def _cache_complete(path: Path) -> bool:
    if not path.exists():
        return False
    from dvfl_cache.cache.store import CacheReader

    try:
        return bool(CacheReader(str(path)).complete)
    except Exception:  # an unreadable half-written store is not complete; build --resume says why
        return False


# -- running --------------------------------------------------------------------------------------

def _entry_point(name: str) -> str:
    """The console script installed beside this interpreter (the venv's), so the printed command
    is the one a user types after activating the venv."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise SystemExit(f"{path}: not found; install dvfl into this Python first "
                         f"(`make venv`, or `{sys.executable} -m pip install -e .`)")
    return str(path)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(step: Step, *, dry_run: bool) -> dict[str, float] | None:
    """Run one step (print it first); returns its wall and CPU seconds, None when skipped."""
    shown = shlex.join(step.argv)
    if not step.ready and not dry_run:
        raise SystemExit(f"demo step '{step.name}' cannot be planned yet: the steps before it "
                         "did not finish")
    if step.done:
        print(f"\n== {step.name}: done earlier ({step.output}), skipped", flush=True)
        return None
    print(f"\n== {step.name}\n$ {shown}", flush=True)
    if dry_run:
        return None
    argv = [_entry_point(step.argv[0]), *step.argv[1:]]
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    result = subprocess.run(argv, cwd=os.getcwd())
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    if result.returncode != 0:
        raise SystemExit(f"demo step '{step.name}' failed (exit {result.returncode}): {shown}\n"
                         "fix the cause and run the demo again; finished steps are kept")
    print(f"-- {step.name}: {wall:.0f} s wall, {cpu:.0f} CPU-s (user+sys)", flush=True)
    return {"wall_s": wall, "cpu_s": cpu}


# -- the summary --------------------------------------------------------------------------------

def _section(markdown: str, heading: str) -> str:
    """The body of the `## heading` section of a markdown document ('' when absent)."""
    lines, keep, out = markdown.splitlines(), False, []
    for line in lines:
        if line.startswith("## "):
            keep = line[3:].strip() == heading
            continue
        if keep:
            out.append(line)
    return "\n".join(out).strip()


def summary(demo: Demo, timings: dict[str, dict[str, float]]) -> str:
    """What the demo found, from the files the steps wrote."""
    lines = ["", "=" * 78, "dvfl demo: results", "=" * 78]
    for views in demo.p.teacher_eval_views:
        path = demo.teacher / f"eval_{views}.json"
        if path.is_file():
            r = json.loads(path.read_text(encoding="utf-8"))
            lines.append(f"teacher ({demo.p.teacher_model}, {demo.p.teacher_frames} frames, "
                         f"{demo.p.teacher_size} px), test {views} view(s): top-1 "
                         f"{100 * r['top1']:.2f}%, top-5 {100 * r['top5']:.2f}%  [{path}]")
    report = demo.sweep / "results.md"
    if report.is_file():
        table = _section(report.read_text(encoding="utf-8"), "Mean ± std over seeds")
        lines += ["", f"students ({demo.p.student_model} {' '.join(demo.p.student_opts)}, "
                  f"{demo.p.student_frames} frames, {demo.p.student_size} px), "
                  f"seeds {','.join(map(str, demo.seeds))}: mean ± std over seeds (from "
                  f"{report})", "", table or "(no aggregate table in results.md)"]
        plots = sorted(demo.sweep.glob("*.png"))
        lines += ["", f"report: {report}", f"table:  {demo.sweep / 'results.csv'}"]
        lines += [f"plot:   {p}" for p in plots] or ["plots:  none (matplotlib missing)"]
    results, teacher = demo.sweep / "results.csv", demo.teacher / "eval_1.json"
    if results.is_file() and teacher.is_file():
        top1 = json.loads(teacher.read_text(encoding="utf-8"))["top1"]
        lines += ["", *conclusion(_read_rows(results), teacher_top1=top1,
                                  classes=demo.p.classes)]
    lines += ["", *time_lines(time_saved(demo, load_timings(demo)))]
    maps = sorted(demo.explain.glob("*/modulators.png"))
    if maps:
        lines += ["", f"modulator maps (teacher | CE student | best distilled student), "
                  f"{len(maps)} test videos:"] + [f"  {p.parent}/{{modulators,top5}}.png, "
                                                   "modulators.mp4" for p in maps]
    if timings:
        wall = sum(t["wall_s"] for t in timings.values())
        cpu = sum(t["cpu_s"] for t in timings.values())
        lines += ["", f"this session: {wall:.0f} s wall, {cpu:.0f} CPU-s over "
                  f"{len(timings)} step(s) (" + ", ".join(
                      f"{k} {v['cpu_s']:.0f}" for k, v in timings.items()) + " CPU-s)"]
    every = load_timings(demo)
    if every:
        lines.append(f"all sessions: {sum(t['wall_s'] for t in every.values()):.0f} s wall, "
                     f"{sum(t['cpu_s'] for t in every.values()):.0f} CPU-s over {len(every)} "
                     f"step(s)  [{demo.summary_file}]")
    return "\n".join(lines)


# -- what the cache saved ------------------------------------------------------------------------

def load_timings(demo: Demo) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of every step that finished, in this session or an earlier one
    (a resumed demo still reports the steps it skipped)."""
    if not demo.timings_file.is_file():
        return {}
    return json.loads(demo.timings_file.read_text(encoding="utf-8"))


def save_timing(demo: Demo, step: str, timing: dict[str, float]) -> None:
    from dvfl_cache.atomic import write_json_atomic

    write_json_atomic(demo.timings_file, {**load_timings(demo), step: timing}, indent=1)


def time_saved(demo: Demo, timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The cache's cost (its build and the sweep from it) against the same distilled students
    trained with the teacher in the loop. The online figure is a projection, labelled so: one
    online student ran for k1 and k2 epochs; (CPU(k2) - CPU(k1)) / (k2 - k1) is its cost per
    epoch, CPU(k1) - k1 x that its fixed cost, and fixed + E x per-epoch cost, times the number
    of distilled students, is what the grid would cost online. The sweep's CPU also pays for the
    CE students, which need no teacher either way: the comparison leans against the cache."""
    p = demo.p
    k1, k2 = p.online_epochs
    build, sweep = timings.get("teacher cache"), timings.get("alpha/tau sweep")
    short = timings.get(f"online KD, {k1} epoch(s)")
    long_ = timings.get(f"online KD, {k2} epoch(s)")
    out: dict[str, Any] = {
        "build_cpu_s": build["cpu_s"] if build else None,
        "sweep_cpu_s": sweep["cpu_s"] if sweep else None,
        "sweep_students": len(demo.seeds) * (1 + len(p.alphas) * len(p.taus)),
        "distilled_students": demo.distilled_students, "student_epochs": p.student_epochs,
        "online_cpu_s_projected": None, "online_projection": None}
    if short and long_:
        per_epoch = (long_["cpu_s"] - short["cpu_s"]) / (k2 - k1)
        fixed = short["cpu_s"] - k1 * per_epoch
        proj = {"measured_epochs": [k1, k2], "measured_cpu_s": [short["cpu_s"], long_["cpu_s"]],
                "per_epoch_cpu_s": per_epoch, "fixed_cpu_s": fixed}
        if per_epoch > 0:
            proj["per_student_cpu_s"] = fixed + p.student_epochs * per_epoch
            out["online_cpu_s_projected"] = demo.distilled_students * proj["per_student_cpu_s"]
        else:  # timing noise of a tiny run: no projection rather than a wrong one
            proj["note"] = (f"the {k2}-epoch run cost no more CPU than the {k1}-epoch one: "
                            "no projection")
        out["online_projection"] = proj
    if None not in (out["build_cpu_s"], out["sweep_cpu_s"], out["online_cpu_s_projected"]):
        cache = out["build_cpu_s"] + out["sweep_cpu_s"]
        out["cache_cpu_s"] = cache
        out["online_over_cache"] = out["online_cpu_s_projected"] / cache
    return out


def time_lines(t: dict[str, Any]) -> list[str]:
    if t["sweep_cpu_s"] is None or t["build_cpu_s"] is None:
        return ["time saved: not known (the cache build or the sweep has no recorded timing)"]
    lines = [f"time: cache build {t['build_cpu_s']:.0f} CPU-s (the teacher runs once); sweep "
             f"from the cache {t['sweep_cpu_s']:.0f} CPU-s ({t['sweep_students']} students, "
             "CE included)"]
    proj = t["online_projection"]
    if t["online_cpu_s_projected"] is None:
        lines.append("  with the teacher in the loop: not projected"
                     + (f" ({proj['note']})" if proj and "note" in proj else
                        " (the online runs have not finished)"))
        return lines
    k1, k2 = proj["measured_epochs"]
    lines += [f"  the {t['distilled_students']} distilled students with the teacher in the loop: "
              f"{t['online_cpu_s_projected']:.0f} CPU-s, a PROJECTION from one online student "
              f"measured for {k1} and {k2} epochs ({proj['per_epoch_cpu_s']:.1f} CPU-s an epoch "
              f"+ {proj['fixed_cpu_s']:.1f} fixed) to {t['student_epochs']} epochs each",
              f"  online / (build + sweep) = {t['online_over_cache']:.2f}x"]
    return lines


def summary_record(demo: Demo, *, wall_s: float, conditions: dict[str, Any]) -> dict[str, Any]:
    """summary.json: the conclusion's numbers and the time the cache saved, from the files the
    steps wrote and every recorded step timing."""
    timings = load_timings(demo)
    record: dict[str, Any] = {"preset": "tiny" if demo.p == TINY else "default",
                              "seeds": list(demo.seeds), "teacher_top1": None,
                              "kd_minus_ce": None, "seeds_learning": None, "verdict": None,
                              "settings": []}
    results, teacher = demo.sweep / "results.csv", demo.teacher / "eval_1.json"
    if results.is_file() and teacher.is_file():
        top1 = json.loads(teacher.read_text(encoding="utf-8"))["top1"]
        found = analyse(_read_rows(results), teacher_top1=top1, classes=demo.p.classes)
        record.update(teacher_top1=top1, verdict=found["verdict"], settings=found["settings"],
                      learned_at=found["learned_at"])
        ce = next((s for s in found["settings"] if s["alpha"] == 0), None)
        kd = next((s for s in found["settings"] if s["minus_ce"] is not None), None)
        if kd is not None:
            record["kd_minus_ce"] = {**kd["minus_ce"], "setting": kd["name"]}
            record["seeds_learning"] = {"distilled": kd["learn"], "ce": ce["learn"],
                                        "seeds": kd["seeds"]}
    record.update(time_saved(demo, timings))
    record.update(
        teacher_cpu_s=timings.get("teacher (cross-entropy)", {}).get("cpu_s"),
        wall_s=sum(t["wall_s"] for t in timings.values()),
        cpu_s=sum(t["cpu_s"] for t in timings.values()),
        this_run_wall_s=wall_s, steps=timings, conditions=conditions)
    return {"kind": "demo", "source": "tool", "title": "make demo", **record,
            **_report_table(record)}


def _report_table(record: dict[str, Any]) -> dict[str, Any]:
    """The table and the summary line tools/report.py draws when summary.json is published
    in benchmarks/results/ (the numbers are the record's own)."""
    rows = [{"setting": s["name"], "top1": f"{s['mean']:.1f} ± {s['std']:.1f}",
             "learn": f"{s['learn']}/{s['seeds']}",
             "minus_ce": "-" if s["minus_ce"] is None else
             f"{s['minus_ce']['mean']:+.1f} ({s['minus_ce']['lo']:+.1f}, "
             f"{s['minus_ce']['hi']:+.1f})"} for s in record["settings"]]
    d, learn = record["kd_minus_ce"], record["seeds_learning"]
    result = "no paired KD setting" if d is None else (
        f"KD - CE {d['mean']:+.1f} points ({d['lo']:+.1f}, {d['hi']:+.1f}); "
        f"{learn['distilled']}/{learn['seeds']} distilled seeds learn; "
        f"{record['wall_s']:.0f} s wall for the pipeline")
    return {"columns": [["setting", "setting"], ["top1", "1-view test top-1 (%)"],
                        ["learn", "seeds that learn"],
                        ["minus_ce", "minus CE, paired 95% interval"]],
            "rows": rows,
            "headline": [{"order": 12, "what": "`make demo`",
                          "goal": "KD - CE paired 95% interval above 0 over 5 seeds",
                          "result": result}]}


def _read_rows(results_csv: Path) -> list[dict[str, str]]:
    with open(results_csv, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def analyse(rows: list[dict[str, str]], *, teacher_top1: float,
            classes: int) -> dict[str, Any]:
    """The demo's findings from the sweep's per-run 1-view test top-1 (results.csv rows), in
    points of top-1: per setting, the seeds' top-1, mean ± std and how many seeds learn the task
    (top-1 at least halfway from chance to the teacher); per KD setting, the paired difference
    to CE over the seeds both have, with a 95% t-interval. The verdict follows from the
    intervals only: a setting "helped" when its whole interval is above 0, "hurt" when below,
    else "unclear"."""
    chance = 1.0 / classes
    learned_at = chance + (teacher_top1 - chance) / 2
    by_setting: dict[tuple[float, str], dict[int, float]] = {}
    for r in rows:
        if r.get("top1_1view") in (None, ""):
            continue
        key = (float(r["alpha"]), r["tau"] if float(r["alpha"]) > 0 else "")
        by_setting.setdefault(key, {})[int(r["seed"])] = 100 * float(r["top1_1view"])
    ce = by_setting.get((0.0, ""), {})
    settings = []
    for (alpha, tau), runs in sorted(by_setting.items()):
        mean, std = _mean_std(list(runs.values()))
        found = {"name": "CE" if alpha == 0 else f"alpha {alpha:g}, tau {float(tau):g}",
                 "alpha": alpha, "tau": float(tau) if tau else None,
                 "top1": {str(k): v for k, v in sorted(runs.items())}, "mean": mean, "std": std,
                 "seeds": len(runs), "learn": sum(t >= 100 * learned_at for t in runs.values()),
                 "minus_ce": None, "verdict": None}
        paired = sorted(set(runs) & set(ce)) if alpha > 0 else []
        if len(paired) >= 2:
            from dvfl_cache.tables import paired_interval

            dm, low, high = paired_interval([runs[s] for s in paired], [ce[s] for s in paired])
            found["minus_ce"] = {"mean": dm, "lo": low, "hi": high, "paired_seeds": len(paired)}
            found["verdict"] = "helped" if low > 0 else "hurt" if high < 0 else "unclear"
        settings.append(found)
    judged = [s for s in settings if s["verdict"] is not None]
    helped = [s["name"] for s in judged if s["verdict"] == "helped"]
    verdict = (None if not judged else
               f"distillation from the cache helped ({'; '.join(helped)}): its paired 95% "
               "interval over seeds is above 0" if helped else
               "no KD setting's paired 95% interval over seeds is above 0: on these seeds, "
               "distillation did not clearly help")
    return {"chance": 100 * chance, "learned_at": 100 * learned_at,
            "teacher_top1": 100 * teacher_top1, "settings": settings, "verdict": verdict}


def conclusion(rows: list[dict[str, str]], *, teacher_top1: float, classes: int) -> list[str]:
    """The demo's conclusion as printed (``analyse`` says how it is computed)."""
    found = analyse(rows, teacher_top1=teacher_top1, classes=classes)
    lines = [f"conclusion (1-view test top-1 over seeds; a seed learns the task at >= "
             f"{found['learned_at']:.1f}%, halfway from chance {found['chance']:.1f}% to the "
             f"teacher {found['teacher_top1']:.1f}%):"]
    for s in found["settings"]:
        line = (f"  {s['name']}: {s['mean']:.1f} ± {s['std']:.1f} over {s['seeds']} seeds, "
                f"{s['learn']}/{s['seeds']} learn")
        if s["minus_ce"] is not None:
            d = s["minus_ce"]
            line += (f"; minus CE (same seed) {d['mean']:+.1f} points, 95% interval "
                     f"({d['lo']:+.1f}, {d['hi']:+.1f}): {s['verdict']}")
        lines.append(line)
    lines.append("  no KD setting has at least 2 seeds paired with CE: no verdict"
                 if found["verdict"] is None else f"  verdict: {found['verdict']}")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("demo"), help="demo folder (default: demo)")
    ap.add_argument("--seeds", default="0,1,2,3,4",
                    help="student seeds, comma-separated (default: 0,1,2,3,4; the conclusion "
                         "needs several)")
    ap.add_argument("--tiny", action="store_true",
                    help="a few tiny videos and one epoch: checks every step in seconds")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the commands of the steps still to run, run nothing")
    args = ap.parse_args(argv)
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not seeds or min(seeds) < 0:
        ap.error(f"--seeds: need at least one seed >= 0, got {args.seeds!r}")
    demo = Demo(args.out, TINY if args.tiny else DEFAULT, seeds)
    if not args.dry_run:
        from dvfl_cache.runtime import passive_openmp_waits

        # what every dvfl entry point asks for itself; set here too, so that the recorded
        # conditions show the policy the steps ran with
        passive_openmp_waits()
    cond = None if args.dry_run else _conditions.start("demo", argv)
    started = time.perf_counter()
    timings: dict[str, dict[str, float]] = {}
    i = 0
    # Planned again before each step: whether it is done, and the explain steps themselves,
    # depend on the steps before.
    while i < len(steps := demo.steps()):
        t = run_step(steps[i], dry_run=args.dry_run)
        if t is not None:
            timings[steps[i].name] = t
            save_timing(demo, steps[i].name, t)
        i += 1
    if not args.dry_run:
        from dvfl_cache.atomic import write_json_atomic

        record = summary_record(demo, wall_s=time.perf_counter() - started,
                                conditions=_conditions.finish(cond))
        write_json_atomic(demo.summary_file, record, indent=1)
        print(summary(demo, timings), flush=True)


if __name__ == "__main__":
    main()
