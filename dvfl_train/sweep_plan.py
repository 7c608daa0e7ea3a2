"""The plan of an alpha/tau sweep: its grid, its groups, and the files of a sweep folder.

Kept apart from the loop (``sweep.py``) and the tables (``sweep_report.py``) so that both
import it and neither imports the other: settings and file names go down, results come back.

    <out>/sweep.json                 the plan (grid, shared settings without alpha/tau)
    <out>/runs/<name>/               one `fit` run directory per grid point, plus
        sweep_train.json             its group and that group's training wall time
        eval_<views>.json            its best.pt at each test layout
    <out>/results.csv, results.md    the tables; top1_vs_alpha/tau.png, curves.png the plots
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvfl_cache.errors import DvflError
from dvfl_cache.settings import setting

from dvfl_train.config import FitConfig

__all__ = ["BASELINE_TAU", "PER_STUDENT", "PLOT_FILES", "RUNS", "SWEEP_FILE", "TRAIN_FILE",
           "GridPoint", "SweepConfig", "SweepError", "SweepGrid", "expand_grid", "group_points",
           "parse_layout", "read_json"]

SWEEP_FILE = "sweep.json"
TRAIN_FILE = "sweep_train.json"   # per run: its group and that group's training wall time
RUNS = "runs"
_VERSION = 1
PLOT_FILES = ("top1_vs_alpha.png", "top1_vs_tau.png", "curves.png")
PER_STUDENT = frozenset({"alpha", "tau"})  # FitConfig fields each grid point sets for itself
BASELINE_TAU: float = next(f.default for f in dataclasses.fields(FitConfig) if f.name == "tau")


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


def layout_label(text: str) -> str:
    """A test-view layout's canonical label (``1x1`` -> ``1``); ``ValueError`` says why not."""
    from dvfl_train.evaluate import parse_views

    return parse_views(text).label


def parse_layout(text: str):
    from dvfl_train.evaluate import parse_views

    try:
        return parse_views(text)
    except ValueError as exc:
        raise SweepError(f"--eval-views: {exc}") from None


@dataclass(frozen=True)
class SweepGrid:
    """What a sweep adds to one fit's settings: the grid and how its students are run and
    scored. Declared once here; `dvfl-train sweep`'s options are derived from these fields."""

    alphas: tuple[float, ...] = setting(
        (0.3, 0.5, 0.7), flag="--alphas", low=0.0, high=1.0,
        help="KD weights, comma-separated (0 = the CE baseline).")
    taus: tuple[float, ...] = setting(
        (5.0, 10.0, 15.0), flag="--taus", low=0.0, low_open=True,
        help="Temperatures, comma-separated.")
    seeds: tuple[int, ...] | None = setting(
        None, flag="--seeds", low=0,
        help="Student seeds (init and drop path), comma-separated; default: --seed.")
    baseline: bool = setting(
        True, flag="--no-baseline", help="No CE-only baseline (alpha 0, one per seed).")
    parallel: int | None = setting(
        None, flag="--parallel", low=1,
        help="Students trained side by side on each decoded batch; default: all of them.")
    eval_views: tuple[str, ...] = setting(
        ("1", "4x3"), flag="--eval-views", metavar="1|NxC,...", parse=layout_label,
        help="Test-view layouts for each run's best.pt.")

    def sweep(self, base: FitConfig) -> SweepConfig:
        """The sweep of this grid over ``base`` (whose ``seed`` is the data seed, and the
        students' seed when ``seeds`` is None); a grid that cannot run is a ``SweepError``."""
        seeds = self.seeds if self.seeds is not None else (base.seed,)
        try:
            points = expand_grid(self.alphas, self.taus, seeds, baseline=self.baseline)
        except ValueError as exc:
            raise SweepError(str(exc)) from None
        return SweepConfig(base=base, points=tuple(points), parallel=self.parallel,
                           eval_views=self.eval_views)


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the shared run config (``base.out_dir`` is the sweep folder, ``base.seed`` the
    data seed of every student), the grid, group size and test-view layouts. ``base.alpha`` and
    ``base.tau`` are never read: each student's come from its grid point (``spec``)."""

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
        """The student of ``point``: its alpha, tau and seed are the point's own (a baseline's
        tau, which its loss never reads, is FitConfig's default), never the base's."""
        from dvfl_train.student import StudentSpec

        tau = BASELINE_TAU if point.tau is None else point.tau
        return StudentSpec(alpha=point.alpha, tau=tau, beta=self.base.beta, seed=point.seed,
                           out_dir=str(self.run_dir(point)), name=point.name)

    def validate(self) -> None:
        """Every student's own config must be valid (e.g. a KD alpha needs a --cache)."""
        for point in self.points:
            self.spec(point).config(self.base).validate()

    def to_dict(self) -> dict[str, Any]:
        """The record in sweep.json: the grid, and the shared settings (``base`` without the
        per-student alpha and tau)."""
        shared = {k: v for k, v in self.base.to_dict().items() if k not in PER_STUDENT}
        return {"version": _VERSION, "points": [p.to_dict() for p in self.points],
                "parallel": self.parallel, "eval_views": list(self.eval_views),
                "base": shared}


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: cannot read ({exc})") from None
