"""The run directory: what a training run leaves behind, and how a killed run picks up again.

    config.json    FitConfig.to_dict()
    metrics.jsonl  one JSON object per line, each with an "epoch" key, flushed as written
    last.pt        state after the latest finished epoch (atomic replace)
    best.pt        state at the best validation metric so far (atomic replace)
    summary.json   final numbers, written once at the end

Checkpoints are plain dicts of tensors and JSON values, loadable with
``torch.load(weights_only=True)``: no pickled classes, so opening someone's run runs none of their
code. :func:`training_state` lays them out like ``dvfl_cache.models.save_checkpoint`` (format
"dvfl-checkpoint", arch, model_config, model) plus the training extras, so ``best.pt`` loads
directly with ``model_from_checkpoint`` for evaluation.

Every file is written to a temporary name and moved into place with ``os.replace``: a run killed
mid-write leaves the previous ``last.pt`` whole. For the metrics log, append an epoch's lines
*before* saving that epoch's ``last.pt``; on resume, lines of epochs after the checkpoint are
dropped, so nothing is logged twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvfl_cache.atomic import TMP_SUFFIX, atomic_path, write_atomic
from dvfl_cache.errors import CheckpointError
from dvfl_cache.models.weights import FORMAT, FORMAT_VERSION, check_plain, read_checkpoint

from dvfl_train.config import FitConfig, load_config, resume_differences
from dvfl_train.runfiles import (BEST, CONFIG, LAST, METRICS, RUN_FILES, SUMMARY, TENSORBOARD,
                                 RunDirError, checkpoint_file, metric_lines, read_metrics)

__all__ = ["BEST", "CONFIG", "LAST", "METRICS", "SUMMARY", "RunDir", "RunDirError",
           "checkpoint_file", "plain_json", "read_metrics", "capture_rng", "restore_rng",
           "restore_training_state", "training_state"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class RunDir:
    """One training run's directory.

    A new run refuses a non-empty directory: pass ``resume=True`` to continue the run in it (see
    :meth:`resume_state`) or ``overwrite=True`` to start over. Overwrite deletes only the files a
    run writes, and only in a directory that holds a ``config.json``, so pointing ``--out`` at the
    wrong folder cannot wipe it.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise RunDirError(f"{path}: choose one of resume and overwrite")
        self.path = Path(path)
        self.resume = resume
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path}: exists and is not a directory")
        names = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        # Our own temporary files are what a run killed mid-write leaves; the real files are
        # intact, so they neither make the directory "used" nor survive opening it.
        ours_tmp = [n for n in names if _is_our_tmp(n)]
        existing = [n for n in names if n not in ours_tmp]
        if existing and not (resume or overwrite):
            raise RunDirError(f"{self.path}: run directory is not empty ({', '.join(existing[:5])}"
                              f"{', ...' if len(existing) > 5 else ''}); pass --resume to continue "
                              "that run or --overwrite to start over")
        if existing and CONFIG not in existing:
            raise RunDirError(f"{self.path}: not a dvfl run directory (no {CONFIG}); refusing to "
                              f"{'resume' if resume else 'overwrite'} it, choose an empty or new "
                              "directory")
        if existing and overwrite:
            for name in existing:
                if name in RUN_FILES:
                    (self.path / name).unlink()
                    log.info("overwrite: removed %s", self.path / name)
                elif name == TENSORBOARD and (self.path / name).is_dir():
                    shutil.rmtree(self.path / name)
                    log.info("overwrite: removed %s", self.path / name)
        for name in ours_tmp:
            (self.path / name).unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self.tensorboard = None  # a TensorBoardLog once open_tensorboard is called

    # -- config ------------------------------------------------------------------------------

    def write_config(self, cfg: FitConfig) -> None:
        """Store the run's config; when resuming, refuse one that computes something else."""
        path = self.path / CONFIG
        if path.exists() and self.resume:
            changed = resume_differences(load_config(path).to_dict(), cfg.to_dict())
            if changed:
                # Never suggest --overwrite here: it would throw the run's progress away.
                raise RunDirError(f"{path}: cannot resume with a different config "
                                  f"({', '.join(changed)}); give the same settings to resume "
                                  "this run, or a new --out for a new one")
        self._write_text(CONFIG, json.dumps(cfg.to_dict(), indent=2, allow_nan=False) + "\n")

    def read_config(self) -> FitConfig:
        return load_config(self.path / CONFIG)

    # -- metrics -----------------------------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line. ``record["epoch"]`` (int) is required: resume truncates by it.
        With TensorBoard open, the record goes to its event files too."""
        if not isinstance(record.get("epoch"), int) or isinstance(record.get("epoch"), bool):
            raise ValueError(f"a metrics record needs an integer 'epoch', got {record!r}")
        line = plain_json(record)
        with open(self.path / METRICS, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
        if self.tensorboard is not None:
            self.tensorboard.add(json.loads(line))

    def open_tensorboard(self, *, resume_step: int | None = None) -> None:
        """Mirror the metrics records into TensorBoard event files (``--tensorboard``)."""
        from dvfl_train.tensorboard_log import TensorBoardLog

        self.tensorboard = TensorBoardLog(self.path, resume_step=resume_step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete record; a torn line (the run was killed mid-write) is skipped."""
        return [rec for rec, _ in self._metric_lines() if rec is not None]

    def truncate_metrics(self, *, after_epoch: int | None) -> int:
        """Keep records with ``epoch <= after_epoch`` (none if None); return how many were dropped.

        Torn lines go too, so appending after a resume never glues onto a half-written line.
        """
        lines = self._metric_lines()
        keep = [raw for rec, raw in lines
                if rec is not None and after_epoch is not None and rec["epoch"] <= after_epoch]
        dropped = len(lines) - len(keep)
        if dropped:
            self._write_text(METRICS, "".join(raw + "\n" for raw in keep))
            log.info("resume: dropped %d metrics line(s) after epoch %s", dropped, after_epoch)
        return dropped

    def _metric_lines(self) -> list[tuple[dict[str, Any] | None, str]]:
        return metric_lines(self.path / METRICS)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise ValueError(f"checkpoint name {name!r} must be letters, digits, '_' or '-'")
        return self.path / f"{name}.pt"

    def has(self, name: str) -> bool:
        return self.checkpoint_path(name).exists()

    def save(self, name: str, state: dict[str, Any]) -> Path:
        """Write ``<name>.pt`` atomically: to a temporary file, fsync, then ``os.replace``.

        ``state`` must hold only tensors and JSON values (checked here, so a bad value fails now
        rather than at load time after hours of training).
        """
        check_plain(state, "state")
        path = self.checkpoint_path(name)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(state, fh)
        return path

    def save_as(self, name: str, source: str) -> Path:
        """Make ``<name>.pt`` the checkpoint ``<source>.pt`` holds, without writing it again.

        A hard link to the source, swapped in with ``os.replace`` (atomic like ``save``): a
        sweep writes best.pt after last.pt for every student that improved, and a 22 M-parameter
        student's state is 176 MB. ``save`` always writes a new file, so a later last.pt never
        changes best.pt. Where links are not supported the file is copied.
        """
        path, src = self.checkpoint_path(name), self.checkpoint_path(source)
        with atomic_path(path) as tmp:
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        return path

    def load(self, name: str, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = self.checkpoint_path(name)
        if not path.exists():
            raise CheckpointError(f"{path}: no such checkpoint")
        state = read_checkpoint(path, map_location=map_location)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a dict, found {type(state).__name__}")
        return state

    def resume_state(self, *, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """``last.pt`` when there is one, with metrics after its epoch dropped; else None.

        Without ``last.pt`` (killed during the first epoch) every metrics line is dropped and the
        run starts from scratch.
        """
        if not self.has(LAST):
            self.truncate_metrics(after_epoch=None)
            return None
        state = self.load(LAST, map_location=map_location)
        epoch = state.get("epoch")
        if not isinstance(epoch, int):
            raise CheckpointError(f"{self.checkpoint_path('last')}: no integer 'epoch' to resume "
                                  "from")
        self.truncate_metrics(after_epoch=epoch)
        return state

    # -- summary -----------------------------------------------------------------------------

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write_text(SUMMARY, plain_json(summary, indent=2) + "\n")

    def _write_text(self, name: str, text: str) -> None:
        write_atomic(self.path / name, text)


# -- state helpers ---------------------------------------------------------------------------

def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int,
                   step: int, best_metric: float | None, config: FitConfig) -> dict[str, Any]:
    """The checkpoint dict: the model-checkpoint layout plus what resuming needs.

    ``model`` must be the bare network (not DDP- or compile-wrapped, whose state-dict keys carry
    prefixes) with the ``arch`` and ``config`` attributes every dvfl model has.
    """
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": model.arch,
        "model_config": model.config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "best_metric": best_metric,
        "rng": capture_rng(),
        "config": config.to_dict(),
    }


# How the optimizer computes, not what it computes: the running build's choice wins on resume
# (torch's load_state_dict would bring back a checkpoint's, e.g. foreach=None from a run saved
# before the multi-tensor steps: identical results, slower kernels).
_OPTIMIZER_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


def restore_training_state(state: dict[str, Any], model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer) -> tuple[int, int, float | None]:
    """Load model, optimizer and RNG states (strictly); return ``(epoch, step, best_metric)``.
    The optimizer keeps its own implementation flags (``_OPTIMIZER_IMPLEMENTATION``)."""
    model.load_state_dict(state["model"])
    chosen = [{k: g[k] for k in _OPTIMIZER_IMPLEMENTATION if k in g}
              for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, keep in zip(optimizer.param_groups, chosen):
        group.update(keep)
    restore_rng(state["rng"])
    return state["epoch"], state["step"], state["best_metric"]


def capture_rng() -> dict[str, torch.Tensor]:
    """Python, NumPy (global), torch CPU and CUDA generator states, each as a tensor."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    if np_kind != "MT19937":
        raise ValueError(f"unexpected NumPy generator {np_kind}")
    states = {
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss is None else [gauss], dtype=torch.float64),
        "numpy": torch.tensor([*np_keys.tolist(), np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return states


def restore_rng(states: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`capture_rng`. CUDA states are restored only onto as many devices."""
    py = states["python"].tolist()
    gauss = states["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), gauss[0] if gauss else None))
    keys = states["numpy"][:-2].numpy().astype(np.uint32)
    pos, has_gauss = states["numpy"][-2:].tolist()
    np.random.set_state(("MT19937", keys, pos, has_gauss, states["numpy_gauss"].item()))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda = list(states["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has CUDA RNG states for %d device(s), this machine has %d; "
                        "CUDA randomness is not restored", len(cuda), torch.cuda.device_count())


def _is_our_tmp(name: str) -> bool:
    """A temporary file of :meth:`RunDir.save` or of a JSON file this module writes."""
    stem = name.removesuffix(TMP_SUFFIX)
    return stem != name and (stem in RUN_FILES or (stem.endswith(".pt")
                                                    and bool(_NAME_RE.match(stem[:-3]))))


def plain_json(record: Any, *, indent: int | None = None) -> str:
    """Strict JSON of a run's record (metrics line, summary, explain.json): a NaN or infinity
    is written as null (bare ``NaN`` is not JSON, and most readers other than Python's refuse
    the file); tensors and NumPy values as lists and numbers."""
    return json.dumps(_finite_or_null(record), indent=indent, default=_json_scalar,
                      allow_nan=False)


def _finite_or_null(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def _json_scalar(obj: Any) -> Any:
    """Let 0-d tensors and NumPy scalars/arrays be logged without manual conversion."""
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        return _finite_or_null(obj.tolist())
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
