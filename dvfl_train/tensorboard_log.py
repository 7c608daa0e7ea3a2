"""TensorBoard event files of a run (``--tensorboard``): the metrics.jsonl records, as scalars.

Why it mirrors metrics.jsonl instead of logging on its own: the records are the run's one
account of itself (resume truncates them by epoch); the event files are a view of the same
numbers for people who watch runs in TensorBoard. Every scalar is at the optimizer step, so a
resumed run purges the events past its checkpoint (``purge_step``) and the curves continue
without a doubled tail.

    train/loss, train/kd, train/ce, train/feat, train/lr     every logged step window
    epoch/loss, epoch/kd, epoch/ce, epoch/feat, epoch/lr, epoch/train_top1, epoch/mixed,
    epoch/cutmix_share, epoch/val_top1, epoch/val_top5, epoch/clips_per_s   each epoch

``tensorboard`` is an optional extra imported only here, when the option asks for it; torch's
``SummaryWriter`` needs it and nothing else (no torchvision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dvfl_train.config import ConfigError
from dvfl_train.runfiles import TENSORBOARD

__all__ = ["TensorBoardLog"]

_STEP_KEYS = ("loss", "kd", "ce", "feat", "lr")
_EPOCH_KEYS = ("loss", "kd", "ce", "feat", "lr", "train_top1", "mixed", "cutmix_share",
               "val_top1", "val_top5", "clips_per_s")


class TensorBoardLog:
    """Writes a run's metrics records to ``<run>/tensorboard``; events past ``resume_step`` (a
    resumed run's checkpoint) are purged."""

    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"{run_dir}: --tensorboard needs the tensorboard package: pip "
                              "install 'dvfl[tensorboard]'") from None
        self.path = Path(run_dir) / TENSORBOARD
        self.writer = SummaryWriter(str(self.path), purge_step=(None if resume_step is None
                                                                else resume_step + 1))

    def add(self, record: dict[str, Any]) -> None:
        """One metrics record: a step window's means, or an epoch's record. Flushed at once,
        as metrics.jsonl is: a killed run leaves the curves it logged."""
        kind = record.get("type")
        keys, prefix = (_STEP_KEYS, "train") if kind == "step" else (_EPOCH_KEYS, "epoch")
        if kind not in ("step", "epoch"):
            return
        for key in keys:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
