"""What models attend to in one video: focal modulator maps and top-5, models side by side.

The DVFL-Net paper shows the top-5 predictions beside a clip's thumbnails (its figure 5), the
spatio-temporal modulator maps over the frames (figure 6) and the spatial and temporal modulators
apart (figure 10); their code was never released. ``explain_video`` draws them for any dvfl
checkpoints (teacher, CE student, distilled student) on the same video:

    modulators.png  one row per video frame any model saw; per model the frame as that model saw
                    it, then the spatial and the temporal modulator's magnitude over it
    top5.png        per model its input frames as a strip and its top-5 classes as bars
    modulators.mp4  the same overlays played over every video frame of the sampled span
    explain.json    the predictions, the frames each map covers and, per stage, modulator
                    statistics, for scripting

Why it is built this way:

- The maps are the ones the network used: one ``forward_features(x, return_modulators=True)``
  pass (the model's own path, tested to recombine exactly into each block's modulation output),
  whose features also give the logits, so the top-5 is ``predict``'s for the same view.
- Each model is shown at its own test view, the one ``eval`` and ``predict`` use (one centre
  view, its frames, size and test span), so a student replaying a teacher's 8-frame views cut to
  4 frames is shown on those 4 frames.
- A map covers the frames of its tubelet (``tubelet_size`` input frames per token frame). Models
  are aligned by video frame index: row f shows, for each model that saw frame f, the map that
  covers it, and is blank for a model that did not see it. In the video, each frame shows the
  map of the model's nearest seen frame (the earlier one on a tie).
- Magnitude is the L2 norm over channels of a modulator at each token, averaged over the
  stage's blocks (or one block). For display each model's spatial (and temporal) maps are scaled
  by their min and max over the clip, so changes across frames stay visible; the raw values are
  in explain.json.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dvfl_cache.data.decode import open_video, short_video
from dvfl_cache.data.transforms import to_float, view_pixels
from dvfl_cache.data.views import View
from dvfl_cache.errors import CheckpointError, DvflError

from dvfl_train.checkpoint import plain_json

__all__ = ["Column", "ExplainError", "ExplainResult", "FILES", "Loaded", "covered_frames",
           "explain_video", "load_column", "magnitudes", "nearest_position", "overlay",
           "select_maps"]

log = logging.getLogger(__name__)

FILES = ("modulators.png", "top5.png", "modulators.mp4", "explain.json")
KINDS = ("spatial", "temporal")
TOPK = 5
DPI = 96
CELL = 1.25         # inches per image cell (120 px at 96 dpi)
HEAD = 0.75         # inches above the grid for the titles (72 px)
BARS = 4.0          # inches of the top-5 bar panel (384 px)
MIN_TILE = 128      # the video's tiles are at least this many pixels wide
HEADER = 24         # pixels of column titles above the video's tiles
MAX_VIDEO_FRAMES = 300  # longer spans are played every k-th frame at fps / k (and decoded so)
ALPHA = 0.5         # heat-map opacity over the frame


class ExplainError(DvflError):
    """A request explain cannot draw: a missing stage or block, an output that exists, ..."""


@dataclass(frozen=True, eq=False)
class Column:
    """One model's look at the video.

    ``view.frames`` are indices into the video; ``pixels`` uint8 (T, 3, S, S) are the frames as
    the model saw them; ``maps[stage]`` holds ``spatial``/``temporal`` magnitudes of shape
    (blocks, T', H, W) with T' = T / tubelet; ``shown`` is the (T', H, W) pair drawn.
    """

    label: str
    checkpoint: str
    info: dict[str, Any]
    view: View
    tubelet: int
    pixels: torch.Tensor
    top: tuple[tuple[str, float], ...]
    maps: dict[int, dict[str, np.ndarray]]
    stage: int                   # 0-based stage drawn
    block: int | None            # 0-based block drawn, None: mean over the stage's blocks
    shown: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])


@dataclass(frozen=True, eq=False)
class ExplainResult:
    video: str
    columns: tuple[Column, ...]
    paths: dict[str, Path]
    rows: tuple[int, ...]        # video frames of modulators.png, one per row
    video_frames: tuple[int, ...]  # video frames played in modulators.mp4


# --------------------------------------------------------------------------- pure pieces


def covered_frames(frames: Sequence[int], tubelet: int) -> list[tuple[int, ...]]:
    """The video frames each token frame (map) covers: tubelet j covers input frames
    ``j*k .. j*k + k - 1`` of the view."""
    frames = list(frames)
    if tubelet < 1 or len(frames) % tubelet:
        raise ValueError(f"{len(frames)} frames do not split into tubelets of {tubelet}")
    return [tuple(frames[j:j + tubelet]) for j in range(0, len(frames), tubelet)]


def nearest_position(frames: Sequence[int], f: int) -> int:
    """Position in ``frames`` of the frame nearest to video frame ``f`` (the earlier on a tie,
    then the first of repeats)."""
    return min(range(len(frames)), key=lambda p: (abs(frames[p] - f), frames[p], p))


def magnitudes(maps: Sequence[Any]) -> dict[int, dict[str, np.ndarray]]:
    """Per stage, the L2 norm over channels of every block's modulators of clip 0:
    ``{stage: {"spatial": (blocks, T', H, W), "temporal": ...}}`` as float32 arrays."""
    out: dict[int, dict[str, list[np.ndarray]]] = {}
    for m in maps:
        stage = out.setdefault(m.stage, {k: [] for k in KINDS})
        for kind in KINDS:
            stage[kind].append(getattr(m, kind)[0].float().norm(dim=-1).cpu().numpy())
    return {s: {k: np.stack(v) for k, v in d.items()} for s, d in out.items()}


def select_maps(maps: dict[int, dict[str, np.ndarray]], stage: int | None, block: int | None,
                *, where: str) -> tuple[int, int | None, dict[str, np.ndarray]]:
    """(stage, block, {"spatial", "temporal": (T', H, W)}): one block's maps or the mean over the
    stage's blocks. ``stage``/``block`` are 1-based as on the command line (None: the last
    stage; the mean over blocks); a missing one raises ``ExplainError`` naming ``where``."""
    stages = sorted(maps)
    if stage is None:
        s = stages[-1]
    elif stage - 1 in maps:
        s = stage - 1
    else:
        raise ExplainError(f"{where}: stage {stage} does not exist; the model has stages "
                           f"1-{len(stages)}")
    blocks = maps[s]["spatial"].shape[0]
    if block is None:
        return s, None, {k: maps[s][k].mean(axis=0) for k in KINDS}
    if not 1 <= block <= blocks:
        raise ExplainError(f"{where}: block {block} does not exist in stage {s + 1}, which has "
                           f"block{'s' * (blocks > 1)} 1-{blocks}")
    return s, block - 1, {k: maps[s][k][block - 1] for k in KINDS}


def _unit(x: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1] over the whole array (a constant map becomes 0)."""
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo)


def overlay(pixels: torch.Tensor, heat: np.ndarray | None, tile: int, cmap) -> np.ndarray:
    """A frame (uint8 (3, S, S)) resized to tile x tile, with ``heat`` (H, W) in [0, 1] blended
    over it through ``cmap`` (bilinear upsampling, opacity ``ALPHA``); uint8 (tile, tile, 3)."""
    frame = F.interpolate(pixels[None].float(), size=(tile, tile), mode="bilinear",
                          align_corners=False, antialias=pixels.shape[-1] > tile)[0]
    frame = frame.permute(1, 2, 0).clamp(0, 255).numpy()
    if heat is not None:
        up = F.interpolate(torch.as_tensor(heat, dtype=torch.float32)[None, None],
                           size=(tile, tile), mode="bilinear", align_corners=False)[0, 0]
        colour = cmap(up.clamp(0, 1).numpy())[..., :3] * 255.0
        frame = (1 - ALPHA) * frame + ALPHA * colour
    return np.rint(frame).astype(np.uint8)


# --------------------------------------------------------------------------- models


class Loaded(NamedTuple):
    """A checkpoint ready to look at a video: ``info`` as ``load_for_eval`` gives it, with the
    test span actually used."""

    model: torch.nn.Module
    classes: tuple[str, ...]
    sampler: Any                 # ViewSampler | SubsampledViews
    size: int
    info: dict[str, Any]


def load_column(checkpoint: str | os.PathLike, *, test_span: int | None = None) -> Loaded:
    """A checkpoint's model, class names, test-view sampler and input size: the view ``eval``
    and ``predict`` use (one centre view; ``test_span`` None: the run's own, 0: plain views).

    The one place explain reads the evaluation API. Raises ``CheckpointError`` for a checkpoint
    without class names: explain names its predictions.
    """
    from dataclasses import replace

    from dvfl_train.evaluate import load_for_eval

    model, classes, info = load_for_eval(checkpoint)
    from dvfl_cache.models.video_focalnet import VideoFocalNet

    if not isinstance(model, VideoFocalNet):
        raise ExplainError(f"{checkpoint}: explain needs a focal modulation model (the "
                           f"Video-FocalNet family); this checkpoint holds {info.get('arch')}")
    if classes is None:
        raise CheckpointError(f"{checkpoint}: has no class list, so its predictions cannot be "
                              "named; use a run's best.pt/last.pt or save the model with "
                              "classes=[...]")
    view = info["view"]
    span = view.span if test_span is None else (test_span or None)
    if span is not None and span < view.num_frames:
        raise ExplainError(f"{checkpoint}: a test span of {span} frames cannot hold the "
                           f"model's {view.num_frames} frames")
    if span == view.num_frames:
        span = None  # the same views
    view = replace(view, span=span)
    geometry = {"num_frames": view.num_frames, "size": view.size, "temporal": view.temporal,
                "stride": view.stride, "span": span}
    return Loaded(model, classes, view.sampler(), view.size, {**info, **geometry, "view": view})


def _topk(probs: np.ndarray, classes: Sequence[str]) -> tuple[tuple[str, float], ...]:
    order = np.argsort(-probs, kind="stable")[:min(TOPK, probs.shape[0])]  # as predict ranks
    return tuple((classes[i], float(probs[i])) for i in order)


def _run(model: torch.nn.Module, pixels: torch.Tensor):
    """Probabilities (C,) and per-stage magnitudes from one forward pass of one clip."""
    model.eval()
    with torch.inference_mode():
        features, maps = model.forward_features(to_float(pixels)[None], return_modulators=True)
        probs = model.forward_head(features).float().softmax(dim=1)[0].numpy()
    return probs, magnitudes(maps)


def _labels(checkpoints: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(checkpoints):
            raise ExplainError(f"{len(labels)} labels for {len(checkpoints)} checkpoints; give "
                               "one --label per --checkpoint, in order")
        return list(labels)
    out = []
    for c in checkpoints:
        p = Path(c)
        name = p.parent.name if p.stem in ("best", "last") and p.parent.name else p.stem
        out.append(name if name not in out else f"{name} ({len(out) + 1})")
    return out


# --------------------------------------------------------------------------- the command


def explain_video(video: str | os.PathLike, checkpoints: Sequence[str | os.PathLike],
                  out_dir: str | os.PathLike, *, stage: int | None = None,
                  block: int | None = None, test_span: int | None = None,
                  labels: Sequence[str] | None = None, overwrite: bool = False) -> ExplainResult:
    """Write modulators.png, top5.png, modulators.mp4 and explain.json for ``video`` into
    ``out_dir``, one column per checkpoint. ``stage``/``block`` are 1-based (None: each model's
    last stage; the mean over its blocks). Refuses to replace existing outputs unless
    ``overwrite``; explain.json is written last, so its presence means the set is complete."""
    if not checkpoints:
        raise ExplainError("explain needs at least one checkpoint")
    cmap = _colormap()
    out = Path(out_dir)
    paths = {name: out / name for name in FILES}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ExplainError(f"{existing[0]}: exists; pass --overwrite to replace the outputs in "
                           f"{out}")
    names = _labels([str(c) for c in checkpoints], labels)
    loaded = [load_column(c, test_span=test_span) for c in checkpoints]

    with open_video(video, threads=0) as v:
        vinfo = v.info
        views = [col.sampler.sample(0, 0, vinfo) for col in loaded]
        short = short_video(video, vinfo, max(len(view.frames) for view in views))
        if short:  # the maps are of the frames there are, repeated (predict and eval's rule)
            log.warning("%s", short)
        rows = tuple(sorted({f for view in views for f in view.frames}))
        step = max(1, math.ceil((rows[-1] - rows[0] + 1) / MAX_VIDEO_FRAMES))
        played = tuple(range(rows[0], rows[-1] + 1, step))
        wanted = sorted(set(rows) | set(played))
        decoded = v.frames(wanted)
    at = {f: i for i, f in enumerate(wanted)}

    columns = []
    for name, ckpt, view, col in zip(names, checkpoints, views, loaded):
        pixels = view_pixels(decoded[[at[f] for f in view.frames]], view, col.size)
        probs, maps = _run(col.model, pixels)
        s, b, shown = select_maps(maps, stage, block, where=str(ckpt))
        columns.append(Column(label=name, checkpoint=str(ckpt), info=col.info, view=view,
                              tubelet=int(col.model.config["tubelet_size"]), pixels=pixels,
                              top=_topk(probs, col.classes), maps=maps, stage=s, block=b,
                              shown={k: _unit(x) for k, x in shown.items()}))
        log.debug("%s: %s %.3f", name, *columns[-1].top[0])

    out.mkdir(parents=True, exist_ok=True)
    paths["explain.json"].unlink(missing_ok=True)  # until the new set is complete
    if not vinfo.fps:
        log.warning("%s: no frame rate in the container; modulators.mp4 plays at 25 fps", video)
    tile = _tile(columns)
    _modulators_png(columns, rows, paths["modulators.png"], Path(video).name, cmap)
    _top5_png(columns, paths["top5.png"], Path(video).name)
    _modulators_mp4(columns, played, decoded[[at[f] for f in played]], tile, cmap,
                    Fraction(vinfo.fps or 25).limit_denominator(1001) / step,
                    paths["modulators.mp4"])
    record = _record(video, vinfo, columns, rows, played, stage, block, paths)
    tmp = paths["explain.json"].with_name("explain.json.tmp")
    tmp.write_text(plain_json(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, paths["explain.json"])
    return ExplainResult(video=str(video), columns=tuple(columns), paths=paths, rows=rows,
                         video_frames=played)


def _colormap():
    try:
        import matplotlib
    except ImportError:
        raise ExplainError('matplotlib is not installed: explain draws its figures with it '
                           '(pip install "dvfl[plot]")') from None
    return matplotlib.colormaps["jet"]


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _tile(columns: Sequence[Column]) -> int:
    side = max(MIN_TILE, max(c.size for c in columns))
    return side + side % 2  # yuv420p needs even sides


def _map_index(column: Column, position: int) -> int:
    return position // column.tubelet


def _stage_text(c: Column) -> str:
    what = "mean of blocks" if c.block is None else f"block {c.block + 1}"
    return f"stage {c.stage + 1}, {what}"


def _modulators_png(columns: Sequence[Column], rows: Sequence[int], path: Path, title: str,
                    cmap) -> None:
    """Rows: video frames; per model three cells (frame, spatial, temporal). Size: 3 * CELL per
    model by CELL per row, plus HEAD."""
    fig = _figure(3 * CELL * len(columns), CELL * len(rows) + HEAD)
    height = CELL * len(rows) + HEAD
    axes = fig.subplots(len(rows), 3 * len(columns), squeeze=False,
                        gridspec_kw=dict(left=0.03, right=0.99, bottom=0.1 / height,
                                         top=1 - HEAD / height, wspace=0.05, hspace=0.12))
    fig.suptitle(f"{title}: modulator magnitude (colour: min to max over the clip, per model)",
                 fontsize=9)
    for ci, c in enumerate(columns):
        frames = list(c.view.frames)
        for ri, f in enumerate(rows):
            cells = axes[ri, 3 * ci:3 * ci + 3]
            for ax in cells:
                ax.set_xticks([])
                ax.set_yticks([])
            if f not in frames:
                for ax in cells:
                    ax.axis("off")
                cells[1].text(0.5, 0.5, "frame not seen", ha="center", va="center",
                              fontsize=7, color="gray", transform=cells[1].transAxes)
                continue
            p = frames.index(f)
            j = _map_index(c, p)
            cells[0].imshow(overlay(c.pixels[p], None, c.size, cmap))
            covers = covered_frames(frames, c.tubelet)[j]
            cells[0].text(0.03, 0.04, f"map {j + 1}" + (f" (frames {', '.join(map(str, covers))})"
                                                        if len(covers) > 1 else ""),
                          fontsize=6, color="white", transform=cells[0].transAxes,
                          bbox=dict(facecolor="black", alpha=0.6, pad=1, linewidth=0))
            for ax, kind in zip(cells[1:], KINDS):
                ax.imshow(overlay(c.pixels[p], c.shown[kind][j], c.size, cmap))
        for ax, text in zip(axes[0, 3 * ci:3 * ci + 3],
                            (f"{c.label}\n{_stage_text(c)}", "spatial", "temporal")):
            ax.set_title(text, fontsize=7)
    for ri, f in enumerate(rows):  # row labels, also where the first model saw nothing
        ax = axes[ri, 0]
        if not ax.axison:
            ax.axis("on")
            ax.spines[:].set_visible(False)
        ax.set_ylabel(f"frame {f}", fontsize=7)
    fig.savefig(path, dpi=DPI)


def _top5_png(columns: Sequence[Column], path: Path, title: str) -> None:
    """Per model a row: its input frames as a strip, then its top-5 as bars. Size: CELL per
    frame of the longest clip plus BARS wide, CELL per model plus HEAD high."""
    longest = max(c.pixels.shape[0] for c in columns)
    width, height = CELL * longest + BARS, CELL * len(columns) + HEAD
    fig = _figure(width, height)
    axes = fig.subplots(len(columns), 2, squeeze=False,
                        gridspec_kw=dict(width_ratios=(CELL * longest, BARS - 1), left=0.01,
                                         right=0.97, bottom=0.3 / height, top=1 - HEAD / height,
                                         wspace=1 / (CELL * longest + BARS), hspace=0.35))
    fig.suptitle(f"{title}: top-{TOPK} per model", fontsize=9)
    for (strip_ax, bar_ax), c in zip(axes, columns):
        strip = torch.cat(list(c.pixels), dim=-1).permute(1, 2, 0).numpy()
        strip_ax.imshow(strip, extent=(0, c.pixels.shape[0], 0, 1))
        strip_ax.set_xlim(0, longest)
        strip_ax.set_xticks([])
        strip_ax.set_yticks([])
        strip_ax.set_title(f"{c.label}: frames {', '.join(map(str, c.view.frames))}", fontsize=7)
        names = [n for n, _ in c.top][::-1]
        probs = [p for _, p in c.top][::-1]
        bar_ax.barh(range(len(names)), probs, color="tab:blue")
        bar_ax.set_yticks(range(len(names)), names, fontsize=7)
        bar_ax.set_xlim(0, 1)
        bar_ax.tick_params(axis="x", labelsize=6)
        for y, p in enumerate(probs):
            bar_ax.text(min(p + 0.02, 0.8), y, f"{p:.3f}", va="center", fontsize=6)
    fig.savefig(path, dpi=DPI)


def _modulators_mp4(columns: Sequence[Column], played: Sequence[int], frames: np.ndarray,
                    tile: int, cmap, fps: Fraction, path: Path) -> None:
    """Every played video frame, per model as that model crops it, with the maps of its nearest
    seen frame: (HEADER + tile) x (3 * tile * models) pixels, one output frame per played frame;
    the header names the columns."""
    from dvfl_cache.data.synth import h264_available, write_video

    width = 3 * tile * len(columns)
    out = np.empty((len(played), HEADER + tile, width, 3), np.uint8)
    fig = _figure(width / DPI, HEADER / DPI)  # exact: width is a multiple of 3 * 2
    fig.patch.set_facecolor("black")
    for ci, c in enumerate(columns):
        for k, text in enumerate((c.label, *KINDS)):
            fig.text((3 * ci + k + 0.5) / (3 * len(columns)), 0.5, text, ha="center",
                     va="center", fontsize=8, color="white")
    fig.canvas.draw()
    out[:, :HEADER] = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    body = out[:, HEADER:]
    for ci, c in enumerate(columns):
        span = view_pixels(frames, replace(c.view, frames=tuple(played)), c.size)
        seen = list(c.view.frames)
        for i, f in enumerate(played):
            j = _map_index(c, nearest_position(seen, f))
            x0 = 3 * tile * ci
            body[i, :, x0:x0 + tile] = overlay(span[i], None, tile, cmap)
            for k, kind in enumerate(KINDS, 1):
                body[i, :, x0 + k * tile:x0 + (k + 1) * tile] = overlay(
                    span[i], c.shown[kind][j], tile, cmap)
    write_video(path, out, fps=fps, codec="libx264" if h264_available() else "mpeg4")


def _stats(x: np.ndarray) -> dict[str, Any]:
    """x: (blocks, T', H, W) magnitudes."""
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
            "max": float(x.max()), "per_map_mean": x.mean(axis=(0, 2, 3)).tolist(),
            "per_block_mean": x.mean(axis=(1, 2, 3)).tolist()}


def _record(video, vinfo, columns: Sequence[Column], rows, played, stage, block,
            paths: dict[str, Path]) -> dict[str, Any]:
    return {
        "video": str(video),
        "video_info": {"num_frames": vinfo.num_frames, "fps": vinfo.fps, "width": vinfo.width,
                       "height": vinfo.height},
        "stage": stage, "block": block,
        "rows": list(rows),
        "video_frames": {"first": played[0], "last": played[-1], "count": len(played),
                         "step": played[1] - played[0] if len(played) > 1 else 1},
        "files": {k: str(p) for k, p in paths.items()},
        "magnitude": "L2 norm over channels of each modulator, per token",
        "columns": [{
            "label": c.label, "checkpoint": c.checkpoint, "arch": c.info.get("arch"),
            "num_frames": c.info["num_frames"], "size": c.size, "span": c.info["span"],
            "temporal": c.info["temporal"], "stride": c.info["stride"],
            "tubelet_size": c.tubelet, "frames": list(c.view.frames),
            "crop": list(c.view.crop),
            "maps_cover": [list(g) for g in covered_frames(c.view.frames, c.tubelet)],
            "top5": [{"class": n, "prob": p} for n, p in c.top],
            "shown": {"stage": c.stage + 1, "block": None if c.block is None else c.block + 1},
            "stages": [{"stage": s + 1, "blocks": int(m["spatial"].shape[0]),
                        "grid": list(m["spatial"].shape[2:]),
                        **{k: _stats(m[k]) for k in KINDS}} for s, m in sorted(c.maps.items())],
        } for c in columns],
    }
