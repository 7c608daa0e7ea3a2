"""Evaluation of a student: 1-view and N-clips x C-crops accuracy over a dataset index.

Test views are fixed, not drawn: ``ViewSampler(mode="test", clips=N, crops=C)`` gives clip c of N
at offset (c + 1/2) / N inside each temporal segment and, for C = 1, a centred square of 224/256
of the short side (short side 256, centre 224), for C > 1 squares of the full short side at evenly
spaced positions along the long side (left, centre, right for 3). So two evaluations of one model
give the same numbers, and the cache builder's test views are the same ones.

A video's score is the mean of the softmax over its views (probabilities, not logits, are averaged:
a view the model is unsure about then cannot outvote a confident one by its logit scale). Each
video is decoded once for all its views: the frames of all views are gathered, decoded together
and cut into views, so 4x3 costs one decode per video instead of twelve.

A video that fails to decode is never dropped: it stays in the denominator as a miss (its
probabilities are NaN), is listed in ``EvalResult.failed`` and named in the summary sentence.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dvfl_cache.atomic import write_atomic
from dvfl_cache.data.dataset import AllViews, ClipDataset, collate_clips
from dvfl_cache.data.index import DatasetIndex
from dvfl_cache.data.views import SubsampledViews, TestView, ViewSampler
from dvfl_cache.errors import CheckpointError, DvflError
from dvfl_train.metrics import AccuracyReport, accuracy_report, topk_correct

__all__ = ["EvalResult", "TestView", "ViewLayout", "check_classes", "evaluate", "evaluate_many",
           "load_for_eval", "parse_views", "report_with_misses", "score_videos", "test_sampler",
           "write_eval_json"]

log = logging.getLogger(__name__)

_VIEWS_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


# --------------------------------------------------------------------------- view layouts


@dataclass(frozen=True)
class ViewLayout:
    """N clips x C crops per video; ``label`` names it in file names and tables ("1", "4x3")."""

    clips: int = 1
    crops: int = 1

    def __post_init__(self):
        if self.clips < 1 or self.crops < 1:
            raise ValueError(f"clips and crops must be >= 1, got {self.clips}x{self.crops}")

    @property
    def num_views(self) -> int:
        return self.clips * self.crops

    @property
    def label(self) -> str:
        return "1" if self.num_views == 1 else f"{self.clips}x{self.crops}"

    def describe(self) -> str:
        if self.num_views == 1:
            return "1 view (centre crop)"
        return (f"{self.clips} clip{'s' * (self.clips > 1)} x {self.crops} "
                f"crop{'s' * (self.crops > 1)}")


def parse_views(text: str) -> ViewLayout:
    """``"1"`` (one centre view) or ``"NxC"`` (N clips x C crops, e.g. ``"4x3"``).

    A bare number other than 1 is refused: "12" could mean 12 clips or 4x3, so it must be spelt.
    """
    text = str(text).strip()
    if text == "1":
        return ViewLayout(1, 1)
    found = _VIEWS_RE.match(text)
    if found is None or int(found.group(1)) < 1 or int(found.group(2)) < 1:
        raise ValueError(f"views {text!r}: expected 1 or NxC with N, C >= 1 (e.g. 4x3 = 4 clips "
                         "x 3 crops, 4x1 = 4 centre clips)")
    return ViewLayout(int(found.group(1)), int(found.group(2)))


def test_sampler(view: TestView, layout: ViewLayout = ViewLayout()
                 ) -> ViewSampler | SubsampledViews:
    """The deterministic test-view sampler of ``view`` in an N x C ``layout``."""
    return view.sampler(layout.clips, layout.crops)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Accuracy of one model on one index with one view layout.

    ``report`` counts every video of the index: ``top1``, ``top5`` and ``per_class`` treat videos
    that failed to decode as misses; ``report.confusion`` counts the decoded videos only (a failed
    video has no predicted class). ``probs`` (num_videos, C) is the mean softmax over each video's
    views, with NaN rows for failed videos and for non-finite model outputs (both misses);
    ``labels`` (num_videos,) are the true classes.
    """

    report: AccuracyReport
    failed: list[tuple[str, str]]
    probs: np.ndarray
    labels: np.ndarray
    layout: ViewLayout
    view: TestView
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_videos(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_failed(self) -> int:
        return len(self.failed)

    @property
    def num_views(self) -> int:
        return self.layout.num_views

    @property
    def views(self) -> str:
        """The layout's label, "1" or "NxC"."""
        return self.layout.label

    def summary(self) -> str:
        """One sentence that never hides failures behind the headline number."""
        head = (f"top-1 {100 * self.report.top1:.2f}%, top-5 {100 * self.report.top5:.2f}% over "
                f"{self.num_videos} videos ({self.layout.describe()})")
        if self.num_failed:
            return (f"{head}, of which {self.num_failed} failed to decode and count as misses")
        return f"{head}, all decoded"

    def to_dict(self, classes: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
        """JSON-able record: accuracies, per-class, confusion, failures and how views were made."""
        out = {
            "views": self.views,
            "num_views": self.num_views,
            **self.view.to_dict(),
            "num_videos": self.num_videos,
            "num_failed": self.num_failed,
            **self.report.to_dict(),
            "confusion_counts": "decoded videos only (rows: true class, columns: predicted)",
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "summary": self.summary(),
        }
        if classes is not None:
            out["classes"] = list(classes)
        out.update(self.extra)
        return out


def report_with_misses(probs: np.ndarray, labels: np.ndarray, ok: np.ndarray,
                       num_classes: int) -> AccuracyReport:
    """Accuracy over all rows where rows with ``ok`` False are misses at every k.

    Built from counts (not from a fake score row) so a miss stays a miss even in top-5 of a
    dataset with five classes or fewer.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ok = np.asarray(ok, dtype=bool)
    n = int(labels.shape[0])
    if n == 0:
        raise ValueError("no videos to score")
    if ok.any():
        good = accuracy_report(probs[ok], labels[ok], num_classes)
        hits = topk_correct(torch.from_numpy(np.ascontiguousarray(probs[ok])),
                            torch.from_numpy(labels[ok]), ks=(1, 5))
        confusion = good.confusion
    else:
        hits = {1: 0, 5: 0}
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    support = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return AccuracyReport(count=n, top1=hits[1] / n, top5=hits[5] / n,
                          per_class=per_class.astype(np.float64), confusion=confusion)


# --------------------------------------------------------------------------- evaluation


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside DDP / torch.compile wrappers, for reading its attributes."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def evaluate(model: torch.nn.Module, index: DatasetIndex, view: TestView, *,
             layout: ViewLayout = ViewLayout(), batch_size: int = 8, workers: int = 0,
             device: str | torch.device = "cpu", amp: bool = False,
             progress: Callable[[int], None] | None = None) -> EvalResult:
    """Score every video of ``index`` with the mean softmax over its ``layout`` test views.

    ``model`` must already be on ``device``; it is put in eval mode and its training flag is
    restored afterwards. ``batch_size`` is the number of views per forward pass (a video's views
    may span passes). ``amp`` runs the forward under bf16 autocast on CUDA (ignored elsewhere);
    softmax and averaging are float32. ``progress(k)`` is told when k more videos are done.
    """
    return evaluate_many([model], index, view, layout=layout, batch_size=batch_size,
                         workers=workers, device=device, amp=amp, progress=progress)[0]


def _check_models(models: Sequence[torch.nn.Module], num_frames: int, num_classes: int,
                  where: str) -> None:
    for model in models:
        net = _bare(model)
        model_frames = getattr(net, "num_frames", None)
        if model_frames is not None and model_frames != num_frames:
            raise DvflError(f"the model takes {model_frames}-frame clips, evaluation asked for "
                            f"{num_frames} frames")
        model_classes = getattr(net, "num_classes", None)
        if model_classes is not None and num_classes and model_classes != num_classes:
            raise DvflError(f"the model has {model_classes} classes, {where} has {num_classes}")


def score_videos(models: Sequence[torch.nn.Module], index: DatasetIndex, view: TestView, *,
                 layout: ViewLayout = ViewLayout(), num_classes: int, batch_size: int = 8,
                 workers: int = 0, device: str | torch.device = "cpu", amp: bool = False,
                 threads: int = 1, progress: Callable[[int], None] | None = None
                 ) -> tuple[list[np.ndarray], np.ndarray, list[tuple[str, str]]]:
    """The scoring loop of evaluation and predict: every video of ``index`` decoded once
    (``ClipDataset`` of ``AllViews``) and scored by every model.

    Returns, per model, the mean softmax over each video's views (num_videos, C), NaN rows for
    videos that failed; the decoded mask; the failures [(path, reason)].
    """
    device = torch.device(device)
    dataset = ClipDataset(index, AllViews(view.sampler(layout.clips, layout.crops), len(index)),
                          view.size, threads=threads)
    num_views = layout.num_views
    loader = DataLoader(dataset, batch_size=max(1, batch_size // num_views), shuffle=False,
                        num_workers=workers, collate_fn=collate_clips,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    use_amp = amp and device.type == "cuda"
    probs = [np.full((len(index), num_classes), np.nan, dtype=np.float32) for _ in models]
    failed: list[tuple[str, str]] = []
    decoded = np.zeros(len(index), dtype=bool)
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                failed.extend(batch["failures"])
                if batch["clip"] is not None:
                    clips_in = batch["clip"].flatten(0, 1)  # (B*V, T, 3, S, S)
                    view_probs: list[list[torch.Tensor]] = [[] for _ in models]
                    for start in range(0, clips_in.shape[0], batch_size):
                        x = clips_in[start:start + batch_size].to(device, non_blocking=True)
                        for model, out in zip(models, view_probs):
                            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                                logits = model(x)
                            if logits.ndim != 2 or logits.shape[1] != num_classes:
                                raise DvflError(f"the model gives logits of shape "
                                                f"{tuple(logits.shape)}, the index has "
                                                f"{num_classes} classes")
                            out.append(logits.float().softmax(dim=1).cpu())
                    rows = batch["video"].numpy()
                    for model_probs, out in zip(probs, view_probs):
                        per_view = torch.cat(out).view(len(rows), num_views, num_classes)
                        model_probs[rows] = per_view.mean(dim=1).numpy()
                    decoded[rows] = True
                if progress is not None:
                    progress(len(batch["label"]) + len(batch["failures"]))
    finally:
        for model, flag in zip(models, was_training):
            model.train(flag)
    return probs, decoded, failed


def evaluate_many(models: Sequence[torch.nn.Module], index: DatasetIndex, view: TestView, *,
                  layout: ViewLayout = ViewLayout(), batch_size: int = 8, workers: int = 0,
                  device: str | torch.device = "cpu", amp: bool = False,
                  progress: Callable[[int], None] | None = None) -> list[EvalResult]:
    """``evaluate`` for several models that take the same clips, from one decoding pass.

    Decoding dominates the evaluation of small students, and a sweep's students all see the same
    test views: each batch of views is decoded once and scored by every model. Each result is
    exactly what ``evaluate`` gives that model alone.
    """
    if not models:
        raise ValueError("evaluate_many needs at least one model")
    if len(index) == 0:
        raise DvflError(f"index of {index.kind} {index.subset} (root {index.root}) has no videos "
                        "to evaluate")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    num_classes = index.num_classes
    _check_models(models, view.num_frames, num_classes, f"the {index.kind} index "
                  f"({index.subset})")
    probs, decoded, failed = score_videos(models, index, view, layout=layout,
                                          num_classes=num_classes, batch_size=batch_size,
                                          workers=workers, device=device, amp=amp,
                                          progress=progress)
    labels = np.array([v.label for v in index.videos], dtype=np.int64)
    if failed:
        log.warning("%d of %d video(s) failed to decode and count as misses:\n%s", len(failed),
                    len(index), "\n".join(f"  {p}: {r}" for p, r in failed))
    results = []
    for model_probs in probs:
        ok = decoded & np.isfinite(model_probs).all(axis=1)
        if (decoded & ~ok).any():  # a diverged model: loud, but the run's numbers stay defined
            log.warning("the model gave non-finite scores for %d decoded video(s); they count "
                        "as misses", int((decoded & ~ok).sum()))
            model_probs[decoded & ~ok] = np.nan
        report = report_with_misses(model_probs, labels, ok, num_classes)
        result = EvalResult(report=report, failed=list(failed), probs=model_probs,
                            labels=labels, layout=layout, view=view)
        log.debug("%s", result.summary())
        results.append(result)
    return results


# --------------------------------------------------------------------------- checkpoints


def load_for_eval(checkpoint_path: str | os.PathLike, *, num_frames: int | None = None
                  ) -> tuple[torch.nn.Module, tuple[str, ...] | None, dict[str, Any]]:
    """Rebuild the model of a run checkpoint (``best.pt``/``last.pt``) or a plain dvfl model
    checkpoint, read without running pickled code.

    Returns ``(model, classes, info)``: ``classes`` are the class names stored with the weights
    (None when a plain checkpoint has none); ``info`` has the clip geometry the model was trained
    on (``view``: its ``TestView``)
    plus ``kind`` ("run" or "model"), ``arch`` and ``epoch``. ``num_frames`` rebuilds the model
    for another clip length (a shorter test span is then dropped). The model is on the CPU in
    eval mode.
    """
    from dvfl_cache.models.load import load_model
    from dvfl_cache.models.weights import read_checkpoint
    from dvfl_train.config import ConfigError, FitConfig

    path = str(checkpoint_path)
    # Read once for our own keys; load_model (model_from_checkpoint) reads again, and checks
    # format, version, options and a strict key/shape match of the weights; an hf:/py: student
    # is rebuilt from the config its checkpoint holds inline.
    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != "dvfl-checkpoint":
        raise CheckpointError(f"{path}: not a dvfl run or model checkpoint (no 'format': "
                              "'dvfl-checkpoint'); evaluate a best.pt/last.pt of a run or a file "
                              "written by save_checkpoint")
    overrides = {} if num_frames is None else {"num_frames": int(num_frames)}
    try:
        # strict: no fresh or extra keys
        model = load_model(path, options=overrides, identify=False).model
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from None
    model.eval()

    classes = obj.get("classes")
    if classes is not None:
        if not (isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)):
            raise CheckpointError(f"{path}: 'classes' must be a list of class names")
        if len(classes) != model.num_classes:
            raise CheckpointError(f"{path}: {len(classes)} class names but the model has "
                                  f"{model.num_classes} outputs")
        classes = tuple(classes)

    config = obj.get("config")
    if config is not None:
        try:
            cfg = FitConfig.from_dict(config, source=f"{path} [config]")
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        info = {"kind": "run", "view": cfg.test_view()}
    else:
        info = {"kind": "model", "view": TestView(num_frames=model.num_frames,
                                                  size=int(model.config["img_size"]))}
    view = info["view"]
    if num_frames is not None:
        info["view"] = view.with_frames(num_frames)
        if view.span is not None and info["view"].span is None:
            log.info("%s: its test span of %d frames is shorter than %d frames; testing on plain "
                     "%d-frame views", path, view.span, num_frames, num_frames)
    elif view.num_frames != model.num_frames:
        raise CheckpointError(f"{path}: run config says {view.num_frames} frames but the model "
                              f"was saved for {model.num_frames}")
    info.update(arch=obj.get("arch"), epoch=obj.get("epoch"), path=path)
    return model, classes, info


def check_classes(checkpoint_path: str | os.PathLike, model: torch.nn.Module,
                  classes: tuple[str, ...] | None, index: DatasetIndex) -> None:
    """Refuse a checkpoint whose classes are not the dataset's (count first, then names)."""
    num = _bare(model).num_classes
    if num != index.num_classes:
        raise CheckpointError(f"{checkpoint_path}: the model has {num} classes but the "
                              f"{index.kind} {index.subset} index has {index.num_classes}")
    if classes is not None and tuple(classes) != tuple(index.classes):
        i = next(i for i, (a, b) in enumerate(zip(classes, index.classes)) if a != b)
        raise CheckpointError(f"{checkpoint_path}: class {i} is {classes[i]!r} in the checkpoint "
                              f"but {index.classes[i]!r} in the {index.kind} index; labels would "
                              "not line up")


def write_eval_json(result: EvalResult, path: str | os.PathLike, *,
                    classes: tuple[str, ...] | None = None, **extra: Any) -> Path:
    """Write ``result`` (plus ``extra`` keys, e.g. checkpoint and dataset) as indented JSON."""
    path = Path(path)
    record = result.to_dict(classes)
    record.update(extra)
    return write_atomic(path, _compact_json(record))


def _compact_json(record: dict[str, Any]) -> str:
    """One key per line and one confusion row per line: a 101-class file stays readable (plain
    ``indent`` would put every count of the matrix on its own line)."""
    def value(v: Any) -> str:
        if isinstance(v, list) and v and all(isinstance(row, list) for row in v):
            return "[\n  " + ",\n  ".join(json.dumps(row, allow_nan=False) for row in v) + "\n ]"
        return json.dumps(v, allow_nan=False)

    body = ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in record.items())
    return "{\n" + body + "\n}\n"
