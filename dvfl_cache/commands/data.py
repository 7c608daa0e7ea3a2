"""`dvfl-cache index`, `synth` and `probe`: datasets on disk -> index JSON, synthetic data."""

from __future__ import annotations

import os

import click

from dvfl_cache.commands.options import FiniteFloat
from dvfl_cache.data.readers import KINDS, SUBSETS


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _parse_size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(w), int(h)
        return int(text), int(text)
    except ValueError:
        raise click.BadParameter(f"expected N or WxH, got {text!r}") from None


def _print_failures(index) -> None:
    bad = [(v.path, v.probe.error) for v in index.videos if v.probe and v.probe.error]
    if bad:
        click.echo(f"{len(bad)} of {len(index)} videos failed to decode:", err=True)
        for path, error in bad:
            click.echo(f"  {path}: {error}", err=True)


@click.command("index")
@click.option("--dataset", "kind", type=click.Choice(KINDS), required=True,
              help="Dataset kind (what annotation files to read).")
@click.option("--root", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder where the official archives were extracted.")
@click.option("--split", type=int, default=1, show_default=True,
              help="Split number (UCF101/HMDB51 1-3; UCF50 test group 1-25).")
@click.option("--subset", type=click.Choice(SUBSETS), default="train",
              show_default=True, help="Which subset of the split to index.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Index JSON file to write.")
@click.option("--videos", "videos_dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="Video folder, if not found under --root.")
@click.option("--annotations", type=click.Path(exists=True), default=None,
              help="Annotation folder or file (the list file for --dataset list).")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False), default=None,
              help="For --dataset list: class names, one per line or '<n> <name>'.")
@click.option("--probe", is_flag=True,
              help="Open every video and record frame count, fps, size and errors.")
@click.option("--workers", type=int, default=_default_workers(), show_default=True,
              help="Processes for --probe.")
@click.option("--hold-out", "hold_out", type=FiniteFloat(0, 1, min_open=True, max_open=True),
              default=None, help="Hold out this fraction of the training subset, whole groups "
              "at a time (UCF gNN, HMDB51 source videos), into --hold-out-out; --out gets the "
              "rest. For choosing checkpoints without test videos (fit --val-index).")
@click.option("--hold-out-out", type=click.Path(dir_okay=False), default=None,
              help="Index JSON file for the held-out videos (with --hold-out).")
@click.option("--hold-out-seed", type=int, default=0, show_default=True,
              help="Which groups are held out (with --hold-out).")
def index_cmd(kind, root, split, subset, out, videos_dir, annotations, class_names, probe,
              workers, hold_out, hold_out_out, hold_out_seed):
    """Read a dataset's annotations into an index JSON (classes + videos + digest)."""
    if (hold_out is None) != (hold_out_out is None):
        raise click.UsageError("--hold-out FRACTION and --hold-out-out FILE go together")
    from dvfl_cache.data.index import save_index
    from dvfl_cache.data.readers import build_index

    index = build_index(kind, root, split=split, subset=subset, videos_dir=videos_dir,
                        annotations=annotations, class_names=class_names)
    if probe:
        from tqdm import tqdm

        from dvfl_cache.data.probe import probe_index

        with tqdm(total=len(index), desc="probe", unit="video") as bar:
            index = probe_index(index, workers=workers, progress=bar.update)
    if hold_out is not None:
        from dvfl_cache.data.holdout import hold_out as split_off

        index, held = split_off(index, hold_out, seed=hold_out_seed)
        save_index(held, hold_out_out)
        click.echo(f"{hold_out_out}: {len(held)} held-out videos, {held.digest}")
    save_index(index, out)
    click.echo(f"{out}: {kind} split {split} {subset}: {len(index)} videos, "
               f"{index.num_classes} classes, {index.digest}")
    if index.skipped:
        click.echo(f"{len(index.skipped)} annotated videos missing on disk (listed under "
                   f"\"skipped\" in {out})", err=True)
    if probe:
        _print_failures(index)


@click.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder to write UCF-101/ and ucfTrainTestlist/ into.")
@click.option("--classes", type=click.IntRange(1, 10), default=6, show_default=True,
              help="The first N of the 10 classes. 6 (pans and hues) is what small nets learn "
                   "from scratch; 7-10 add rotations and zooms, much harder (docs/demo.md).")
@click.option("--videos-per-class", type=click.IntRange(1), default=12, show_default=True,
              help="Videos per class, spread over UCF's 25 groups (gNN); split N tests on groups "
                   "7N-6..7N, as UCF101 does.")
@click.option("--size", default="64", show_default=True, help="Frame size: N or WxH (even).")
@click.option("--frames", type=click.IntRange(2), default=32, show_default=True,
              help="Frames per video.")
@click.option("--fps", type=click.IntRange(1), default=25, show_default=True,
              help="Frame rate written into the videos.")
@click.option("--format", "fmt", type=click.Choice(["mixed", "avi", "mp4"]), default="mixed",
              show_default=True, help="mixed alternates .avi (MPEG-4) and .mp4 (H.264).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the videos' random content (the same seed writes the same frames).")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in --out.")
def synth_cmd(out, classes, videos_per_class, size, frames, fps, fmt, seed, workers, overwrite):
    """Write the synthetic temporal-action dataset as real videos in UCF101 layout."""
    from tqdm import tqdm

    from dvfl_cache.data.synth import SynthConfig, write_synth

    width, height = _parse_size(size)
    try:
        cfg = SynthConfig(classes=classes, videos_per_class=videos_per_class, width=width,
                          height=height, frames=frames, fps=fps, seed=seed, format=fmt)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    with tqdm(total=classes * videos_per_class, desc="synth", unit="video") as bar:
        write_synth(out, cfg, overwrite=overwrite, workers=workers, progress=bar.update)
    click.echo(f"{out}: {classes} classes x {videos_per_class} videos; index it with "
               f"`dvfl-cache index --dataset ucf101 --root {out} --split 1 --out ...`")


@click.command("probe")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where an index's videos are now (if moved).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="With one index JSON: write the probed index here.")
@click.option("--workers", type=int, default=_default_workers(), show_default=True,
              help="Processes opening videos.")
def probe_cmd(paths, root, out, workers):
    """Open videos (or every video of an index JSON) and report frame counts and errors."""
    from tqdm import tqdm

    from dvfl_cache.data.index import load_index, save_index
    from dvfl_cache.data.probe import iter_probe, probe_index

    if len(paths) == 1 and paths[0].endswith(".json"):
        index = load_index(paths[0], root=root)
        with tqdm(total=len(index), desc="probe", unit="video") as bar:
            index = probe_index(index, workers=workers, progress=bar.update)
        if out:
            save_index(index, out)
        ok = sum(1 for v in index.videos if v.probe.ok)
        click.echo(f"{paths[0]}: {ok} of {len(index)} videos decode")
        _print_failures(index)
        return
    if out:
        raise click.UsageError("--out needs a single index JSON argument")
    failed = 0
    for path, r in zip(paths, iter_probe(list(paths), workers=workers)):
        if r.ok:
            click.echo(f"{path}: {r.num_frames} frames, {r.fps:g} fps, {r.width}x{r.height}")
        else:
            failed += 1
            click.echo(f"{path}: ERROR {r.error}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
