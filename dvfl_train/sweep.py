"""Alpha/tau sweeps: one student per grid point, trained side by side from one decoded batch.

    grid (alphas x taus x seeds, + a CE baseline per seed) -> groups of --parallel students ->
    train_students per group -> evaluate each best.pt (1 view, 4x3) -> results.csv/.md + plots

Why this shape:
- Decoding dominates the cost of a small student, so every student of a group steps on each
  decoded batch (``train_students``). All groups share one data seed (``base.seed``), so how the
  grid is cut into groups changes nothing in the weights: each student is bit-identical to the
  same student trained alone from its ``config.json``; ``--seeds`` vary the students' init and
  drop-path streams only.
- Resume works per student: one whose ``summary.json`` exists with an unchanged config is done
  and is not even built; the others resume from their own ``last.pt``. An evaluation is done
  when its ``eval_<views>.json`` exists; a student that trains again loses its old ones first,
  so an evaluation never describes an older checkpoint.
- Every per-run number lives in the run's own directory (summary.json, eval_*.json,
  sweep_train.json); the tables and plots are rebuilt from those files, so a resumed sweep
  reports the students of earlier sessions exactly like the new ones.
- Wall time: a group's students train together, so a run's training wall time is its group's
  (shared, not its own), plus the run's own evaluation time; results.md says so.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvfl_cache.errors import DvflError

from dvfl_train.config import RESUMABLE_CHANGES, ConfigError, FitConfig, load_config

__all__ = ["AggregateRow", "GridPoint", "RunResult", "SweepConfig", "SweepError", "SweepEvent",
           "aggregate", "collect_results", "expand_grid", "group_points", "plot_curves",
           "plot_grid", "results_markdown", "run_sweep", "teacher_accuracy", "write_results"]

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
TRAIN_FILE = "sweep_train.json"   # per run: its group and that group's training wall time
RUNS = "runs"
_VERSION = 1
PLOT_FILES = ("top1_vs_alpha.png", "top1_vs_tau.png", "curves.png")


class SweepError(DvflError):
    """A sweep directory or grid that cannot be run as asked."""


# -- the grid -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridPoint:
    """One student of the sweep. ``tau`` is None for the CE baseline (alpha 0), where it plays
    no part in the loss."""

    alpha: float
    tau: float | None
    seed: int

    @property
    def baseline(self) -> bool:
        return self.alpha == 0.0

    @property
    def name(self) -> str:
        if self.baseline:
            return f"ce_s{self.seed}"
        return f"a{self.alpha:g}_t{self.tau:g}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "tau": self.tau, "seed": self.seed}


def expand_grid(alphas: Iterable[float], taus: Iterable[float], seeds: Iterable[int], *,
                baseline: bool = True) -> list[GridPoint]:
    """Baselines first (one per seed), then alpha x tau x seed in the order given.

    An alpha of 0 in ``alphas`` is the baseline itself (tau does nothing then), so it adds one
    run per seed however many taus there are, even with ``baseline=False``.
    """
    alphas, taus, seeds = (list(dict.fromkeys(x)) for x in (alphas, taus, seeds))
    kd = [a for a in alphas if a > 0.0]
    bad = ([f"alpha {a} outside [0, 1]" for a in alphas if not 0.0 <= a <= 1.0]
           + [f"tau {t} must be > 0" for t in taus if not t > 0.0]
           + [f"seed {s} must be >= 0" for s in seeds if s < 0]
           + ["a sweep needs at least one seed"] * (not seeds)
           + ["KD alphas need at least one tau"] * bool(kd and not taus))
    if bad:
        raise ValueError("; ".join(bad))
    points = []
    if baseline or 0.0 in alphas:
        points += [GridPoint(0.0, None, s) for s in seeds]
    points += [GridPoint(float(a), float(t), s) for a in kd for t in taus for s in seeds]
    if not points:
        raise ValueError("the grid is empty: give KD alphas (> 0) or keep the baseline")
    return points


def group_points(points: Sequence[GridPoint], parallel: int | None) -> list[list[GridPoint]]:
    """Consecutive groups of at most ``parallel`` students (None: one group of all)."""
    if parallel is not None and parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    size = len(points) if parallel is None else parallel
    return [list(points[i:i + size]) for i in range(0, len(points), max(size, 1))]


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the shared run config (``base.out_dir`` is the sweep folder, ``base.seed`` the
    data seed of every student), the grid, group size and test-view layouts."""

    base: FitConfig
    points: tuple[GridPoint, ...]
    parallel: int | None = None
    eval_views: tuple[str, ...] = ("1", "4x3")

    @property
    def out_dir(self) -> Path:
        return Path(self.base.out_dir)

    def run_dir(self, point: GridPoint) -> Path:
        return self.out_dir / RUNS / point.name

    def spec(self, point: GridPoint):
        from dvfl_train.trainer import StudentSpec

        return StudentSpec(alpha=point.alpha, tau=self.base.tau if point.tau is None else point.tau,
                           beta=self.base.beta, seed=point.seed, out_dir=str(self.run_dir(point)),
                           name=point.name)

    def to_dict(self) -> dict[str, Any]:
        return {"version": _VERSION, "points": [p.to_dict() for p in self.points],
                "parallel": self.parallel, "eval_views": list(self.eval_views),
                "base": self.base.to_dict()}


@dataclass(frozen=True)
class SweepEvent:
    """Progress: ``group_start`` (names), ``train`` (the trainer's event), ``group_end``,
    ``eval`` (name, views, the result's summary sentence), ``skip`` (name, what: "train" or
    "eval <views>", done in an earlier session)."""

    kind: str
    group: int = 0
    groups: int = 0
    names: tuple[str, ...] = ()
    train: Any = None
    name: str = ""
    views: str = ""
    message: str = ""


Progress = Callable[[SweepEvent], None]


# -- running ------------------------------------------------------------------------------------

def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _comparable(cfg: dict[str, Any], *, ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES | ignore}


def _prepare_dir(cfg: SweepConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber, check a resumed sweep computes the same thing, record the grid."""
    path = cfg.out_dir / SWEEP_FILE
    if resume and overwrite:
        raise SweepError(f"{cfg.out_dir}: choose one of --resume and --overwrite")
    used = cfg.out_dir.is_dir() and any(cfg.out_dir.iterdir())
    if used and not (resume or overwrite):
        raise SweepError(f"{cfg.out_dir}: sweep folder is not empty; pass --resume to continue "
                         "that sweep or --overwrite to start over")
    if used and not path.exists() and not (cfg.out_dir / RUNS).is_dir():
        raise SweepError(f"{cfg.out_dir}: not a dvfl sweep folder (no {SWEEP_FILE}); refusing to "
                         f"{'resume' if resume else 'overwrite'} it, choose an empty or new folder")
    if resume and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))["base"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SweepError(f"{path}: cannot read the sweep record ({exc})") from None
        new = cfg.base.to_dict()
        # alpha and tau of the base are placeholders (each student has its own): a resumed
        # sweep may add grid points, but not change what the existing ones compute.
        per_student = frozenset({"alpha", "tau"})
        old, new = _comparable(old, ignore=per_student), _comparable(new, ignore=per_student)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise SweepError(f"{path}: cannot resume with different shared options ({diffs}); "
                             "use a new --out or --overwrite")
    if overwrite:
        for point in cfg.points:
            run = cfg.run_dir(point)
            if (run / "config.json").exists():  # only our own files, only in run folders
                for f in [run / TRAIN_FILE, *run.glob("eval_*.json")]:
                    f.unlink(missing_ok=True)
        for name in ("results.csv", "results.md", *PLOT_FILES):
            (cfg.out_dir / name).unlink(missing_ok=True)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(path, cfg.to_dict())


def _trained(cfg: SweepConfig, point: GridPoint) -> bool:
    """Finished in an earlier session: a summary, all epochs, and the same config."""
    run = cfg.run_dir(point)
    try:
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        stored = load_config(run / "config.json")
    except (OSError, ValueError, ConfigError):
        return False
    wanted = cfg.spec(point).config(cfg.base)
    return (summary.get("epochs") == cfg.base.epochs and (run / "best.pt").exists()
            and _comparable(stored.to_dict()) == _comparable(wanted.to_dict()))


def run_sweep(cfg: SweepConfig, *, resume: bool = False, overwrite: bool = False,
              log_every: int = 10, progress: Progress | None = None) -> list[RunResult]:
    """Train, evaluate and report every student of ``cfg``; returns one row per run.

    With ``resume`` finished students and finished evaluations are skipped and the others
    continue from their last finished epoch. Under torchrun every rank trains, rank 0 alone
    evaluates and writes the reports (others return an empty list).
    """
    from dvfl_train.trainer import train_students

    emit = progress or (lambda event: None)
    if not cfg.points:
        raise SweepError(f"{cfg.out_dir}: the sweep has no grid points")
    if not cfg.eval_views:
        raise SweepError(f"{cfg.out_dir}: the sweep needs at least one --eval-views layout")
    for layout in cfg.eval_views:
        _layout(layout)  # fail before hours of training, not after
    main = _is_main()
    if main:
        _prepare_dir(cfg, resume=resume, overwrite=overwrite)
    todo = [p for p in cfg.points if not (resume and _trained(cfg, p))]
    for p in cfg.points:
        if p not in todo:
            emit(SweepEvent("skip", name=p.name, message="train"))
    groups = group_points(todo, cfg.parallel) if todo else []
    for g, group in enumerate(groups, 1):
        names = tuple(p.name for p in group)
        log.info("group %d/%d: training %s", g, len(groups), ", ".join(names))
        emit(SweepEvent("group_start", group=g, groups=len(groups), names=names))
        if main:
            for p in group:  # evaluations of an older checkpoint must not survive retraining
                for f in cfg.run_dir(p).glob("eval_*.json"):
                    f.unlink()
        previous = {}
        if main and resume:  # earlier sessions' wall time counts for students resuming from them
            previous = {p: _read_json(cfg.run_dir(p) / TRAIN_FILE) for p in group
                        if (cfg.run_dir(p) / "last.pt").exists()}
        started = time.perf_counter()

        def record_wall(points: Iterable[GridPoint], names=names, previous=previous,
                        started=started) -> None:
            """The group's wall time so far, per student: a crash loses one epoch at most."""
            wall = time.perf_counter() - started
            for p in points:
                _write_json(cfg.run_dir(p) / TRAIN_FILE, {
                    "group": list(names),
                    "train_wall_s": previous.get(p, {}).get("train_wall_s", 0.0) + wall})

        def on_train(event, g=g, names=names, group=group) -> None:
            if main and event.kind == "epoch_end":
                record_wall([p for p in group if p.name in event.records])
            emit(SweepEvent("train", group=g, groups=len(groups), names=names, train=event))

        train_students(dataclasses.replace(cfg.base, out_dir=str(cfg.out_dir / RUNS)),
                       [cfg.spec(p) for p in group], resume=resume, overwrite=overwrite,
                       log_every=log_every, progress=on_train)
        if main:
            record_wall(group)
        emit(SweepEvent("group_end", group=g, groups=len(groups), names=names))
    if not main:
        return []
    _evaluate_all(cfg, emit)
    results = collect_results(cfg)
    write_results(cfg, results, teacher=teacher_accuracy(cfg.base))
    return results


def _layout(text: str):
    from dvfl_train.evaluate import parse_views

    try:
        return parse_views(text)
    except ValueError as exc:
        raise SweepError(f"--eval-views: {exc}") from None


def _device(name: str):
    import torch

    if name == "auto":
        name = ("cuda" if torch.cuda.is_available()
                else "mps" if torch.backends.mps.is_available() else "cpu")
    return torch.device(name)


def _evaluate_all(cfg: SweepConfig, emit: Progress) -> None:
    """Each run's best.pt at every layout not yet evaluated, on the full test subset."""
    from dvfl_train.evaluate import check_classes, evaluate, load_for_eval, write_eval_json
    from dvfl_train.train_data import val_index

    layouts = [_layout(v) for v in cfg.eval_views]
    index = None
    device = _device(cfg.base.device)
    for p in cfg.points:
        run = cfg.run_dir(p)
        missing = [lay for lay in layouts if not (run / f"eval_{lay.label}.json").exists()]
        for lay in layouts:
            if lay not in missing:
                emit(SweepEvent("skip", name=p.name, views=lay.label, message=f"eval {lay.label}"))
        if not missing:
            continue
        if index is None:  # the split's test list (or --val-index), whole: not --val-subset
            index = val_index(dataclasses.replace(cfg.base, val_subset=None))
        best = run / "best.pt"
        if not best.exists():
            raise SweepError(f"{best}: no best checkpoint to evaluate (did training finish?)")
        model, classes, info = load_for_eval(best)
        check_classes(best, model, classes, index)
        model.to(device)
        for lay in missing:
            started = time.perf_counter()
            result = evaluate(model, index, clips=lay.clips, crops=lay.crops,
                              num_frames=info["num_frames"], size=info["size"],
                              temporal=info["temporal"], stride=info["stride"],
                              batch_size=cfg.base.batch_size, workers=cfg.base.workers,
                              device=device, amp=cfg.base.amp)
            seconds = time.perf_counter() - started
            write_eval_json(result, run / f"eval_{lay.label}.json", classes=index.classes,
                            checkpoint=str(best), epoch=info.get("epoch"), arch=info.get("arch"),
                            dataset={"kind": index.kind, "split": index.split,
                                     "subset": index.subset, "root": index.root,
                                     "digest": index.digest},
                            eval_time_s=seconds)
            log.debug("%s %s: %s", p.name, lay.label, result.summary())
            emit(SweepEvent("eval", name=p.name, views=lay.label, message=result.summary()))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: cannot read ({exc})") from None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """One row of results.csv. Accuracies are fractions; ``acc[views] = (top1, top5)``."""

    name: str
    alpha: float
    tau: float | None
    seed: int
    epochs: int
    best_val_top1: float | None
    best_epoch: int | None
    train_wall_s: float | None     # the group's training wall time (shared by its students)
    eval_s: float                  # this run's own evaluation time, all layouts
    acc: dict[str, tuple[float, float]] = field(default_factory=dict)
    curve: tuple[tuple[int, float], ...] = ()   # (epoch, val top-1) from metrics.jsonl

    @property
    def baseline(self) -> bool:
        return self.alpha == 0.0

    @property
    def wall_s(self) -> float | None:
        return None if self.train_wall_s is None else self.train_wall_s + self.eval_s


def _column(views: str) -> str:
    return "1view" if views == "1" else views


def collect_results(cfg: SweepConfig) -> list[RunResult]:
    """One row per grid point, read back from the run folders."""
    layouts = [_layout(v).label for v in cfg.eval_views]
    rows = []
    for p in cfg.points:
        run = cfg.run_dir(p)
        summary = _read_json(run / "summary.json")
        if not summary:
            raise SweepError(f"{run / 'summary.json'}: missing; resume the sweep to finish it")
        acc, eval_s = {}, 0.0
        for label in layouts:
            record = _read_json(run / f"eval_{label}.json")
            if not record:
                raise SweepError(f"{run}/eval_{label}.json: missing; resume the sweep to "
                                 "evaluate it")
            acc[label] = (float(record["top1"]), float(record["top5"]))
            eval_s += float(record.get("eval_time_s", 0.0))
        curve = []
        metrics = run / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn last line of a killed run
                if rec.get("type") == "epoch" and "val_top1" in rec:
                    curve.append((int(rec["epoch"]), float(rec["val_top1"])))
        rows.append(RunResult(name=p.name, alpha=p.alpha, tau=p.tau, seed=p.seed,
                              epochs=int(summary.get("epochs", 0)),
                              best_val_top1=summary.get("best_val_top1"),
                              best_epoch=summary.get("best_epoch"),
                              train_wall_s=_read_json(run / TRAIN_FILE).get("train_wall_s"),
                              eval_s=eval_s, acc=acc, curve=tuple(curve)))
    return rows


@dataclass(frozen=True)
class AggregateRow:
    """Mean and sample std (n - 1; None for one seed) over seeds of one (alpha, tau)."""

    alpha: float
    tau: float | None
    seeds: tuple[int, ...]
    mean: dict[str, tuple[float, float]]
    std: dict[str, tuple[float | None, float | None]]


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def aggregate(rows: Sequence[RunResult]) -> list[AggregateRow]:
    """Rows grouped by (alpha, tau), in first-seen order (the baseline first)."""
    keys = list(dict.fromkeys((r.alpha, r.tau) for r in rows))
    out = []
    for alpha, tau in keys:
        mine = [r for r in rows if (r.alpha, r.tau) == (alpha, tau)]
        mean, std = {}, {}
        for views in mine[0].acc:
            m1, s1 = _mean_std([r.acc[views][0] for r in mine])
            m5, s5 = _mean_std([r.acc[views][1] for r in mine])
            mean[views], std[views] = (m1, m5), (s1, s5)
        out.append(AggregateRow(alpha=alpha, tau=tau, seeds=tuple(r.seed for r in mine),
                                mean=mean, std=std))
    return out


def teacher_accuracy(base: FitConfig) -> dict[str, Any] | None:
    """The teacher's top-1/top-5 on its own cached training views (None without a cache)."""
    if base.cache is None:
        return None
    from dvfl_cache.cache.inspect import teacher_accuracy as cached_accuracy
    from dvfl_cache.cache.store import CacheReader

    reader = CacheReader(base.cache)
    acc = cached_accuracy(reader)
    if acc["teacher_top1"] is None:
        return None
    return {"name": reader.meta.teacher.name, "top1": acc["teacher_top1"],
            "top5": acc["teacher_top5"], "views": acc["valid_rows"],
            "views_per_video": reader.meta.views_per_video, "videos": reader.meta.num_videos}


def _csv(rows: Sequence[RunResult], layouts: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    acc_cols = [f"{k}_{_column(v)}" for v in layouts for k in ("top1", "top5")]
    writer.writerow(["name", "alpha", "tau", "seed", *acc_cols, "best_val_top1", "best_epoch",
                     "epochs", "train_wall_s", "eval_s", "wall_s"])
    fmt = lambda x: "" if x is None else repr(x) if isinstance(x, float) else str(x)  # noqa: E731
    for r in rows:
        accs = [r.acc[v][k] for v in layouts for k in (0, 1)]
        writer.writerow([fmt(x) for x in (r.name, r.alpha, r.tau, r.seed, *accs, r.best_val_top1,
                                          r.best_epoch, r.epochs, r.train_wall_s, r.eval_s,
                                          r.wall_s)])
    return buf.getvalue()


def _pct(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.2f}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def results_markdown(cfg: SweepConfig, rows: Sequence[RunResult],
                     teacher: dict[str, Any] | None, plots: Sequence[str] = ()) -> str:
    """results.md: the aggregate over seeds, the per-run table, and what the numbers mean."""
    b = cfg.base
    layouts = [_layout(v).label for v in cfg.eval_views]
    names = {lay: _layout(lay).describe() for lay in layouts}
    kd = sorted({r.alpha for r in rows if not r.baseline})
    taus = sorted({r.tau for r in rows if r.tau is not None})
    seeds = sorted({r.seed for r in rows})
    teacher_src = (f"cache {b.cache}" if b.cache else
                   f"online teacher {b.teacher_weights}" if b.teacher_weights else "none")
    lines = [
        f"# Sweep results: {b.model} on {b.dataset} (split {b.split})", "",
        f"{len(rows)} runs: alpha {', '.join(f'{a:g}' for a in kd) or '–'} x tau "
        f"{', '.join(f'{t:g}' for t in taus) or '–'} x seeds {', '.join(map(str, seeds))}"
        f"{' + a CE baseline (alpha 0) per seed' if any(r.baseline for r in rows) else ''}. "
        f"{b.epochs} epochs, {b.num_frames} frames x {b.size} px, batch {b.batch_size}, "
        f"data seed {b.seed} (shared by every run), teacher logits from {teacher_src}.", "",
        "Accuracies in % on the test subset (or --val-index), each run's best.pt (the epoch of "
        "best validation top-1), at " + " and ".join(names[v] for v in layouts) + ".", "",
        "## Mean ± std over seeds", "",
    ]
    header = ["alpha", "tau", "seeds"] + [f"{k} {names[v]}" for v in layouts
                                          for k in ("top-1", "top-5")]
    table = []
    for a in aggregate(rows):
        label = "0 (CE)" if a.alpha == 0.0 else f"{a.alpha:g}"
        table.append([label, "–" if a.tau is None else f"{a.tau:g}", str(len(a.seeds))]
                     + [_pct(a.mean[v][k], a.std[v][k]) for v in layouts for k in (0, 1)])
    if teacher is not None:
        table.append([f"teacher {teacher['name']} †", "–", "–", _pct(teacher["top1"]),
                      _pct(teacher["top5"])] + ["–"] * (2 * len(layouts) - 2))
    lines += _md_table(header, table)
    lines += ["", "std: sample standard deviation over seeds (n - 1); none with one seed."]
    if teacher is not None:
        lines += [f"† The teacher's accuracy on its own cached training views ({teacher['views']}"
                  f" views: {teacher['views_per_video']} augmented train views of each of "
                  f"{teacher['videos']} training videos), as `dvfl-cache info` reports it; not "
                  "the test subset, so it is not directly comparable with the students' columns."]
    lines += ["", "## Runs", ""]
    header = ["run", "alpha", "tau", "seed"] + [f"{k} {_column(v)}" for v in layouts
                                                for k in ("top-1", "top-5")] + [
        "best val top-1 (epoch)", "train wall (s)", "eval (s)", "wall (s)"]
    table = []
    for r in rows:
        best = ("–" if r.best_val_top1 is None
                else f"{_pct(r.best_val_top1)} ({r.best_epoch})")
        secs = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
        table.append([r.name, f"{r.alpha:g}", "–" if r.tau is None else f"{r.tau:g}", str(r.seed)]
                     + [_pct(r.acc[v][k]) for v in layouts for k in (0, 1)]
                     + [best, secs(r.train_wall_s), secs(r.eval_s), secs(r.wall_s)])
    lines += _md_table(header, table)
    lines += ["", "Wall time: the students of a group train side by side from one decoded batch, "
              "so a run's *train wall* is its whole group's training wall time (shared, not its "
              f"own; groups of {cfg.parallel or 'all'} students, summed over resumed sessions); "
              "*wall* adds the run's own evaluation time. results.csv holds the same rows with "
              "accuracies as fractions."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_results(cfg: SweepConfig, rows: Sequence[RunResult],
                  teacher: dict[str, Any] | None = None) -> list[Path]:
    """results.csv, results.md and (with matplotlib) the plots; returns the paths written."""
    out = cfg.out_dir
    layouts = [_layout(v).label for v in cfg.eval_views]
    plots = []
    if _pyplot_figure() is not None:  # without matplotlib: one warning, no plots
        plots = plot_grid(rows, out, layouts=layouts) + plot_curves(rows, out / "curves.png")
    paths = [out / "results.csv", out / "results.md"]
    paths[0].write_text(_csv(rows, layouts), encoding="utf-8")
    paths[1].write_text(results_markdown(cfg, rows, teacher, plots), encoding="utf-8")
    return paths + plots


# -- plots --------------------------------------------------------------------------------------

def _pyplot_figure():
    """A matplotlib Figure on the Agg canvas (no global backend), or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning('matplotlib is not installed: skipping the plots (pip install "dvfl[plot]")')
        return None

    def make(**kw):
        fig = Figure(**kw)
        FigureCanvasAgg(fig)
        return fig
    return make


def plot_grid(rows: Sequence[RunResult], out_dir: str | os.PathLike, *,
              layouts: Sequence[str]) -> list[Path]:
    """Top-1 against alpha (a line per tau) and against tau (a line per alpha), one panel per
    test-view layout, mean ± std over seeds, the CE baseline dashed: as the paper's figures 7
    and 8. Returns the PNGs written (none without matplotlib or without KD runs)."""
    agg = [a for a in aggregate(rows) if a.tau is not None]
    if not agg:
        return []
    make = _pyplot_figure()
    if make is None:
        return []
    base = next((a for a in aggregate(rows) if a.tau is None), None)
    out_dir = Path(out_dir)
    written = []
    for x_name, line_name, fname in (("alpha", "tau", "top1_vs_alpha.png"),
                                     ("tau", "alpha", "top1_vs_tau.png")):
        fig = make(figsize=(4.5 * len(layouts), 3.6), layout="constrained")
        axes = fig.subplots(1, len(layouts), squeeze=False)[0]
        for ax, views in zip(axes, layouts):
            for line in sorted({getattr(a, line_name) for a in agg}):
                pts = sorted((getattr(a, x_name), a) for a in agg if getattr(a, line_name) == line)
                xs = [x for x, _ in pts]
                ys = [100 * a.mean[views][0] for _, a in pts]
                err = [100 * (a.std[views][0] or 0.0) for _, a in pts]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3,
                            label=f"{'τ' if line_name == 'tau' else 'α'} = {line:g}")
            if base is not None:
                ax.axhline(100 * base.mean[views][0], color="gray", linestyle="--",
                           label="CE baseline (α = 0)")
            ax.set_xlabel("α (KD weight)" if x_name == "alpha" else "τ (temperature)")
            ax.set_ylabel("top-1 (%)")
            ax.set_title(f"test top-1, {_layout(views).describe()}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        path = out_dir / fname
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def plot_curves(rows: Sequence[RunResult], path: str | os.PathLike) -> list[Path]:
    """Validation top-1 per epoch of every run (from metrics.jsonl); [] without matplotlib."""
    if not any(r.curve for r in rows):
        return []
    make = _pyplot_figure()
    if make is None:
        return []
    fig = make(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        if r.curve:
            ax.plot([e for e, _ in r.curve], [100 * v for _, v in r.curve], marker=".",
                    linestyle="--" if r.baseline else "-", label=r.name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title("validation top-1 (1 view) per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=max(1, len(rows) // 12))
    path = Path(path)
    fig.savefig(path, dpi=120)
    return [path]
