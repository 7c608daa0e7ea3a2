"""Sweep results: results.csv / results.md (per run, and mean +- std over seeds) and the plots.

Everything is rebuilt from the files in each run's folder (summary.json, eval_*.json,
sweep_train.json, metrics.jsonl), so a resumed sweep reports runs of earlier sessions exactly
like new ones. Plots need the optional `plot` extra (matplotlib); without it they are skipped
with a warning, never an error.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvfl_cache.tables import mean_std as _mean_std
from dvfl_cache.tables import md_table as _md_table
from dvfl_cache.tables import pct as _pct
from dvfl_train.config import FitConfig
from dvfl_train.runfiles import SUMMARY, read_metrics
from dvfl_train.sweep_plan import TRAIN_FILE, SweepConfig, SweepError, parse_layout, read_json

__all__ = ["AggregateRow", "RunResult", "aggregate", "collect_results", "plot_curves",
           "plot_grid", "results_markdown", "teacher_accuracy", "write_results"]

log = logging.getLogger(__name__)


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
    layouts = [parse_layout(v).label for v in cfg.eval_views]
    rows = []
    for p in cfg.points:
        run = cfg.run_dir(p)
        summary = read_json(run / SUMMARY)
        if not summary:
            raise SweepError(f"{run / SUMMARY}: missing; resume the sweep to finish it")
        acc, eval_s = {}, 0.0
        for label in layouts:
            record = read_json(run / f"eval_{label}.json")
            if not record:
                raise SweepError(f"{run}/eval_{label}.json: missing; resume the sweep to "
                                 "evaluate it")
            acc[label] = (float(record["top1"]), float(record["top5"]))
            eval_s += float(record.get("eval_time_s", 0.0))
        curve = [(rec["epoch"], float(rec["val_top1"]))
                 for rec in read_metrics(run, kind="epoch") if "val_top1" in rec]
        rows.append(RunResult(name=p.name, alpha=p.alpha, tau=p.tau, seed=p.seed,
                              epochs=int(summary.get("epochs", 0)),
                              best_val_top1=summary.get("best_val_top1"),
                              best_epoch=summary.get("best_epoch"),
                              train_wall_s=read_json(run / TRAIN_FILE).get("train_wall_s"),
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
    """The teacher's top-1/top-5 on its own cached training views (None without a cache, and
    for an ensemble of caches: one member's accuracy is not the ensemble's target's)."""
    if len(base.cache) != 1:
        return None
    from dvfl_cache.cache.inspect import teacher_accuracy as cached_accuracy
    from dvfl_cache.cache.store import CacheReader

    reader = CacheReader(base.cache[0], storage_options=base.storage_options or None)
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


def results_markdown(cfg: SweepConfig, rows: Sequence[RunResult],
                     teacher: dict[str, Any] | None, plots: Sequence[str] = ()) -> str:
    """results.md: the aggregate over seeds, the per-run table, and what the numbers mean."""
    b = cfg.base
    layouts = [parse_layout(v).label for v in cfg.eval_views]
    names = {lay: parse_layout(lay).describe() for lay in layouts}
    kd = sorted({r.alpha for r in rows if not r.baseline})
    taus = sorted({r.tau for r in rows if r.tau is not None})
    seeds = sorted({r.seed for r in rows})
    teacher_src = (f"cache {b.cache[0]}" if len(b.cache) == 1 else
                   f"the {b.teacher_mix} ensemble of caches {', '.join(b.cache)}" if b.cache else
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
              "*eval* is the run's share of the test passes, which decode each video once for all "
              "students; *wall* adds the two. results.csv holds the same rows with "
              "accuracies as fractions."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_results(cfg: SweepConfig, rows: Sequence[RunResult],
                  teacher: dict[str, Any] | None = None) -> list[Path]:
    """results.csv, results.md and (with matplotlib) the plots; returns the paths written."""
    out = cfg.out_dir
    layouts = [parse_layout(v).label for v in cfg.eval_views]
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
            ax.set_title(f"test top-1, {parse_layout(views).describe()}")
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
