"""`dvfl-train explain`: focal modulator maps and top-5 of one video, models side by side."""

from __future__ import annotations

import click

from dvfl_train.commands.evaluate import _span_opt


@click.command("explain")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="best.pt / last.pt of a run, or a dvfl model checkpoint with class names. "
                   "Repeat for side-by-side columns (e.g. teacher, CE student, distilled).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for modulators.png, top5.png, modulators.mp4 and explain.json.")
@click.option("--stage", type=click.IntRange(1), default=None,
              help="Stage whose modulators to draw, 1 = the first; default: each model's last.")
@click.option("--block", type=click.IntRange(1), default=None,
              help="Draw this block of the stage (1 = its first); default: the mean over the "
                   "stage's blocks.")
@_span_opt
@click.option("--label", "labels", multiple=True,
              help="Column title per --checkpoint, in order; default: the run folder's name.")
@click.option("--overwrite", is_flag=True, help="Replace the outputs already in --out.")
def explain_cmd(video: str, checkpoints: tuple[str, ...], out: str, stage: int | None,
                block: int | None, test_span: int | None, labels: tuple[str, ...],
                overwrite: bool) -> None:
    """Draw what each checkpoint's focal modulators do on VIDEO, at the model's own test view
    (the one `eval` and `predict` use): the spatial and temporal modulator maps over the frames
    (a figure and a video) and the top-5 classes, with the numbers in explain.json."""
    from dvfl_train.explain import explain_video

    result = explain_video(video, checkpoints, out, stage=stage, block=block,
                           test_span=test_span, labels=labels or None, overwrite=overwrite)
    for c in result.columns:
        name, p = c.top[0]
        click.echo(f"{c.label}: {name} {p:.4f} (frames {', '.join(map(str, c.view.frames))})")
    click.echo(f"wrote {', '.join(str(p) for p in result.paths.values())}")
