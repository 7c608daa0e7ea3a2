"""`dvfl-train eval` (accuracy over a dataset) and `dvfl-train predict` (top-k of one video)."""

from __future__ import annotations

from pathlib import Path

import click

from dvfl_cache.commands.options import (dataset_options, index_from_options, options_from,
                                         threads_option)
from dvfl_cache.data.views import TEMPORAL
from dvfl_cache.tables import pct, text_table
from dvfl_train.config import FitConfig


def _views(ctx, param, values):
    from dvfl_train.evaluate import parse_views

    try:
        layouts = [parse_views(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return list(dict.fromkeys(layouts))  # "1" and "1x1" are one layout


def _one_view(ctx, param, value):
    return _views(ctx, param, (value,))[0]


def _geometry(info: dict, frames, size, temporal, stride, test_span):
    """The checkpoint's TestView with the command-line overrides applied."""
    import dataclasses

    view = info["view"]
    span = view.span if test_span is None else (test_span or None)
    if span is not None and span < view.num_frames:
        raise click.BadParameter(f"a test span of {span} frames cannot hold the model's "
                                 f"{view.num_frames} frames", param_hint="--test-span")
    return dataclasses.replace(view, size=size or view.size, temporal=temporal or view.temporal,
                               stride=stride or view.stride, span=span)


def _describe(geometry) -> str:
    text = (f"{geometry.num_frames} frames x {geometry.size} px, {geometry.temporal} "
            "sampling")
    if geometry.span is not None:
        text += f", each test view {geometry.span} frames cut to {geometry.num_frames}"
    return text


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    return text_table(("views", "top-1 (%)", "top-5 (%)", "mean class acc (%)", "videos",
                       "failed", "GMACs/view"), rows)


_frames_opt = click.option("--frames", type=click.IntRange(1), default=None,
                           help="Frames per clip; default: what the checkpoint was trained on.")
_size_opt = click.option("--size", type=click.IntRange(16), default=None,
                         help="Input side in pixels; default: the checkpoint's.")
_temporal_opt = click.option("--temporal", type=click.Choice(TEMPORAL), default=None,
                             help="Temporal sampling; default: the checkpoint's.")
_stride_opt = click.option("--stride", type=click.IntRange(1), default=None,
                           help="Frame stride for --temporal stride; default: the checkpoint's.")
_span_opt = click.option(
    "--test-span", type=click.IntRange(0), default=None, metavar="N",
    help="Draw N-frame test views and cut each to the model's frames, as a student saw its "
         "teacher's N-frame views in training; default: the run's `fit --test-span`; 0: plain "
         "views.")
_device_opt = click.option("--device", default="auto", show_default=True,
                           help="auto, cpu, cuda, cuda:1, mps")
_amp_opt = click.option("--amp/--no-amp", default=False, show_default=True,
                        help="bf16 autocast on CUDA (ignored elsewhere).")
_ckpt_opt = click.option("--checkpoint", required=True,
                         type=click.Path(exists=True, dir_okay=False),
                         help="best.pt / last.pt of a run, or a dvfl model checkpoint.")


@click.command("eval")
@_ckpt_opt
@dataset_options(subset="test", subset_help="Which subset of the split to evaluate.")
@click.option("--views", "layouts", multiple=True, default=("1",), show_default=True,
              callback=_views, metavar="1|NxC",
              help="Test views: 1 (centre crop) or N clips x C crops, e.g. 4x3. Repeatable.")
@_frames_opt
@_size_opt
@_temporal_opt
@_stride_opt
@_span_opt
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1),
              help="Views per forward pass.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(0),
              help="Decoding processes.")
@_device_opt
@threads_option
@_amp_opt
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for eval_<views>.json; default: the checkpoint's folder.")
@options_from(FitConfig, ("max_failed",))
def eval_cmd(checkpoint: str, kind, root, split, subset, index_path, videos_dir, annotations,
             layouts, frames: int | None, size: int | None, temporal: str | None,
             stride: int | None, test_span: int | None, batch_size: int, workers: int,
             device: str, threads: int, amp: bool, out: str | None, max_failed: float) -> None:
    """Top-1/top-5, per-class accuracy and confusion of a checkpoint on a dataset subset.

    Writes eval_<views>.json (per-class accuracy, confusion matrix, failed videos) next to the
    checkpoint or into --out, and prints a table. Videos that fail to decode count as misses.
    """
    from tqdm import tqdm

    from dvfl_cache.failbudget import check_failed
    from dvfl_cache.models.flops import count_gmacs
    from dvfl_cache.runtime import resolve_device, set_compute_threads
    from dvfl_train.evaluate import check_classes, evaluate, load_for_eval, write_eval_json

    index = index_from_options(kind, root, split, subset, index_path, videos_dir, annotations)
    model, classes, info = load_for_eval(checkpoint, num_frames=frames)
    check_classes(checkpoint, model, classes, index)
    geometry = _geometry(info, frames, size, temporal, stride, test_span)
    dev = resolve_device(device)
    set_compute_threads(device=dev, workers=workers, threads=threads)
    model.to(dev)
    gmacs = count_gmacs(model, frames=geometry.num_frames, size=geometry.size)
    out_dir = Path(out) if out else Path(checkpoint).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)

    rows, results = [], []
    for layout in layouts:
        with tqdm(total=len(index), unit="video", desc=f"eval {layout.label}",
                  leave=False) as bar:
            result = evaluate(model, index, geometry, layout=layout, batch_size=batch_size,
                              workers=workers, device=dev, amp=amp, progress=bar.update)
        path = write_eval_json(
            result, out_dir / f"eval_{layout.label}.json", classes=index.classes,
            checkpoint=str(checkpoint), epoch=info.get("epoch"), arch=info.get("arch"),
            dataset={"kind": index.kind, "split": index.split, "subset": index.subset,
                     "root": index.root, "digest": index.digest},
            gmacs_per_view=gmacs)
        results.append((result, path))
        report = result.report
        rows.append((layout.describe(), pct(report.top1), pct(report.top5),
                     pct(report.mean_class_accuracy), str(result.num_videos),
                     str(result.num_failed), f"{gmacs:.3g}"))

    click.echo(f"{checkpoint}: {index.kind} split {index.split} {index.subset}, "
               f"{_describe(geometry)}")
    for line in _table(rows):
        click.echo(line)
    for result, path in results:
        click.echo(f"{result.views}: {result.summary()}; wrote {path}")
    for result, path in results:  # failures are misses above; past the budget the run fails
        check_failed(result.failed, len(index), max_failed,
                     kept=f"results (failures as misses) written to {path}")


@click.command("predict")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@_ckpt_opt
@click.option("--views", "layout", default="1", show_default=True, callback=_one_view,
              metavar="1|NxC",
              help="Test views: 1 (centre crop) or N clips x C crops, e.g. 4x3.")
@click.option("--topk", default=5, show_default=True, type=click.IntRange(1),
              help="How many classes to print.")
@_frames_opt
@_size_opt
@_temporal_opt
@_stride_opt
@_span_opt
@_device_opt
@_amp_opt
def predict_cmd(video: str, checkpoint: str, layout, topk: int, frames: int | None,
                size: int | None, temporal: str | None, stride: int | None,
                test_span: int | None, device: str, amp: bool) -> None:
    """Print the top-k classes of VIDEO with their probabilities."""
    from dvfl_cache.runtime import resolve_device
    from dvfl_train.evaluate import load_for_eval
    from dvfl_train.predict import predict_video

    model, classes, info = load_for_eval(checkpoint, num_frames=frames)
    geometry = _geometry(info, frames, size, temporal, stride, test_span)
    dev = resolve_device(device)
    model.to(dev)
    pred = predict_video(model, video, geometry, classes=classes, layout=layout, topk=topk,
                         device=dev, amp=amp)
    click.echo(f"{video}: {layout.describe()}, {_describe(geometry)}")
    width = max(len(name) for name, _ in pred.top)
    for rank, (name, p) in enumerate(pred.top, 1):
        click.echo(f"{rank:>3}. {name.ljust(width)}  {p:.4f}")
