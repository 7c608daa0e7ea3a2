"""Alpha/tau sweeps: one student per grid point, trained side by side from one decoded batch.

    grid (alphas x taus x seeds, + a CE baseline per seed) -> groups of --parallel students ->
    train_students per group -> evaluate every best.pt, one decoding pass per test layout shared
    by the students -> results.csv/.md + plots

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
- A student whose loss becomes NaN or infinite stops there (no checkpoint from it); the other
  students of its group and the later groups train on, since each is its own experiment and
  their compute would otherwise be lost. The sweep then ends with an error naming every such
  student and makes no evaluation or report (the grid would have holes): change the settings
  (a lower --lr, other grid points) and run again, or --resume, which skips the finished ones.
- Wall time: a group's students train together, so a run's training wall time is its group's
  (shared, not its own), plus its share of the evaluation passes; results.md says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dvfl_cache.atomic import write_json_atomic
from dvfl_cache.runtime import resolve_device

from dvfl_train.config import ConfigError, FitConfig, load_config, resume_differences
from dvfl_train.runfiles import BEST, CONFIG, LAST, SUMMARY, checkpoint_file
from dvfl_train.sweep_plan import (PLOT_FILES, RUNS, SWEEP_FILE, TRAIN_FILE, GridPoint,
                                   SweepConfig, SweepError, expand_grid, group_points,
                                   parse_layout, read_json)

if TYPE_CHECKING:
    from dvfl_train.sweep_report import RunResult

__all__ = ["GridPoint", "SweepConfig", "SweepError", "SweepEvent", "expand_grid",
           "group_points", "parse_layout", "read_json", "run_sweep"]

log = logging.getLogger(__name__)

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
            # as this dvfl records it: an older version's fields filled, one cache a list
            old = FitConfig.from_dict(old, source=f"{path} (base)").to_dict()
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            raise SweepError(f"{path}: cannot read the sweep record ({exc})") from None
        new = cfg.base.to_dict()
        # alpha and tau of the base are placeholders (each student has its own): a resumed
        # sweep may add grid points, but not change what the existing ones compute.
        per_student = frozenset({"alpha", "tau"})
        changed = resume_differences(old, new, ignore=per_student)
        if changed:
            # Never suggest --overwrite here: it would throw the sweep's progress away.
            raise SweepError(f"{path}: cannot resume with different shared options "
                             f"({', '.join(changed)}); give the same options to resume this "
                             "sweep, or a new --out for a new one")
    if overwrite:
        for point in cfg.points:
            run = cfg.run_dir(point)
            if (run / CONFIG).exists():  # only our own files, only in run folders
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
        summary = json.loads((run / SUMMARY).read_text(encoding="utf-8"))
        stored = load_config(run / CONFIG)
    except (OSError, ValueError, ConfigError):
        return False
    wanted = cfg.spec(point).config(cfg.base)
    have = stored.to_dict()
    if wanted.views_subset is None:  # "all the cache's views": the run pinned how many it had
        have["views_subset"] = None
    return (summary.get("epochs") == cfg.base.epochs and checkpoint_file(run, BEST).exists()
            and not resume_differences(have, wanted.to_dict()))


def run_sweep(cfg: SweepConfig, *, resume: bool = False, overwrite: bool = False,
              log_every: int = 10, progress: Progress | None = None) -> list[RunResult]:
    """Train, evaluate and report every student of ``cfg``; returns one row per run.

    With ``resume`` finished students and finished evaluations are skipped and the others
    continue from their last finished epoch. Under torchrun every rank trains, rank 0 alone
    evaluates and writes the reports (others return an empty list).
    """
    from dvfl_train.trainer import diverged_line, train_students

    emit = progress or (lambda event: None)
    if not cfg.points:
        raise SweepError(f"{cfg.out_dir}: the sweep has no grid points")
    if not cfg.eval_views:
        raise SweepError(f"{cfg.out_dir}: the sweep needs at least one --eval-views layout")
    for layout in cfg.eval_views:
        parse_layout(layout)  # fail before hours of training, not after
    resolve_device(cfg.base.device)  # and before a missing device leaves a half-made folder
    from dvfl_train.teachers import check_mixing

    check_mixing(cfg.base)  # --mixup/--cutmix with a --cache: one line, no folder
    main = _is_main()
    if main:
        _prepare_dir(cfg, resume=resume, overwrite=overwrite)
    todo = [p for p in cfg.points if not (resume and _trained(cfg, p))]
    for p in cfg.points:
        if p not in todo:
            emit(SweepEvent("skip", name=p.name, message="train"))
    groups = group_points(todo, cfg.parallel) if todo else []
    diverged: list[dict[str, Any]] = []
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
            previous = {p: read_json(cfg.run_dir(p) / TRAIN_FILE) for p in group
                        if checkpoint_file(cfg.run_dir(p), LAST).exists()}
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

        summaries = train_students(
            dataclasses.replace(cfg.base, out_dir=str(cfg.out_dir / RUNS)),
            [cfg.spec(p) for p in group], resume=resume, overwrite=overwrite,
            log_every=log_every, progress=on_train)
        diverged += [s for s in summaries if s.get("diverged")]
        if main:
            record_wall(group)
        emit(SweepEvent("group_end", group=g, groups=len(groups), names=names))
    if diverged:  # the others trained to the end; the grid's report would miss these points
        raise SweepError(f"{len(diverged)} student(s) diverged: "
                         + "; ".join(diverged_line(s) for s in diverged)
                         + "; the other students are trained (--resume skips them); "
                           "no evaluation or report was made")
    if not main:
        return []
    _evaluate_all(cfg, emit)
    from dvfl_train.sweep_report import collect_results, teacher_accuracy, write_results

    results = collect_results(cfg)
    write_results(cfg, results, teacher=teacher_accuracy(cfg.base))
    return results


def _evaluate_all(cfg: SweepConfig, emit: Progress) -> None:
    """Each run's best.pt at every layout not yet evaluated, on the full test subset.

    The students of a sweep share their clip geometry, so each layout is one decoding pass
    scored by all students that miss it (in groups of ``--parallel``): a run's ``eval_time_s``
    is its share of that pass, and ``eval_shared_by`` says by how many students.
    """
    from dvfl_cache.failbudget import check_failed
    from dvfl_train.evaluate import check_classes, evaluate_many, load_for_eval, write_eval_json
    from dvfl_train.train_data import val_index

    index, failed = None, []
    device = resolve_device(cfg.base.device)
    for lay in (parse_layout(v) for v in cfg.eval_views):
        todo = []
        for p in cfg.points:
            if (cfg.run_dir(p) / f"eval_{lay.label}.json").exists():
                emit(SweepEvent("skip", name=p.name, views=lay.label, message=f"eval {lay.label}"))
            else:
                todo.append(p)
        for group in group_points(todo, cfg.parallel) if todo else []:
            if index is None:  # the split's test list (or --val-index), whole: not --val-subset
                index = val_index(dataclasses.replace(cfg.base, val_subset=None))
            models, infos = [], []
            for p in group:
                best = checkpoint_file(cfg.run_dir(p), BEST)
                if not best.exists():
                    raise SweepError(f"{best}: no best checkpoint to evaluate (did training "
                                     "finish?)")
                model, classes, info = load_for_eval(best)
                check_classes(best, model, classes, index)
                models.append(model.to(device))
                infos.append(info)
            view = infos[0]["view"]
            for p, info in zip(group, infos):
                if info["view"] != view:
                    raise SweepError(f"{checkpoint_file(cfg.run_dir(p))}: trained on other clips "
                                     f"than {group[0].name}; not a run of this sweep")
            started = time.perf_counter()
            results = evaluate_many(models, index, view, layout=lay,
                                    batch_size=cfg.base.batch_size, workers=cfg.base.workers,
                                    device=device, amp=cfg.base.amp)
            share = (time.perf_counter() - started) / len(group)
            for p, info, result in zip(group, infos, results):
                write_eval_json(result, cfg.run_dir(p) / f"eval_{lay.label}.json",
                                classes=index.classes, checkpoint=info["path"],
                                epoch=info.get("epoch"), arch=info.get("arch"),
                                dataset={"kind": index.kind, "split": index.split,
                                         "subset": index.subset, "root": index.root,
                                         "digest": index.digest},
                                eval_time_s=share, eval_shared_by=len(group))
                log.debug("%s %s: %s", p.name, lay.label, result.summary())
                emit(SweepEvent("eval", name=p.name, views=lay.label,
                                message=result.summary()))
            failed = results[0].failed  # one decoding pass: the same videos failed for all
    if index is not None and failed:
        check_failed(failed, len(index), cfg.base.max_failed,
                     kept=f"the evaluations are written in {cfg.out_dir} (failures counted as "
                          "misses): --resume finishes the report from them; to evaluate again "
                          "once the videos are fixed, delete the runs' eval_*.json first")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    write_json_atomic(path, record)


