"""A synthetic action dataset that needs time to classify, written as real videos in UCF101 layout.

Every video shows the same kind of scene: a random smooth background, three square distractors
gliding in random directions at random speeds, pixel noise and flicker, and one "actor": a bar
with a big disc at its head and a small disc at its tail, in a random colour, at a uniformly
random place on a wrap-around (toroidal) frame. Each actor end flashes white twice per video.
The class is only in how things change:

    MoveLeft, MoveRight, MoveUp, MoveDown   actor glides along an axis at medium speed
    RotateClockwise, RotateCounterclockwise actor spins in place
    FlashHeadThenTail, FlashTailThenHead    the two flashes hit different ends, in this order
                                            (in every other class both flashes hit one end)
    DriftSlow, DashFast                     actor glides in a random direction, slow or fast

Positions are uniform at every frame (wrap-around), orientations and colours are drawn alike
for all classes and each frame shows a flash at either end equally often, so a single frame says
(close to) nothing about the class; two frames tell motion, and the flash classes need order.
Class prefixes come in pairs, so `classes=4` keeps MoveLeft/MoveRight and the two rotations.

Files are `UCF-101/<Class>/v_<Class>_gGG_cCC.{avi,mp4}` (MPEG-4 part 2 in AVI, H.264 in MP4
when PyAV has libx264, else MPEG-4 in both) and `ucfTrainTestlist/` with `classInd.txt` and the
three UCF101 splits (split k tests groups 7k-6..7k), CRLF line ends like the original.
Deterministic in the seed: the scene RNG is keyed by (seed, class, video), encoders run on one
thread and x264's macroblock tree (which was not reproducible byte for byte) is off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dvfl_cache.errors import DvflError

log = logging.getLogger(__name__)

CLASS_NAMES = ("MoveLeft", "MoveRight", "RotateClockwise", "RotateCounterclockwise",
               "FlashHeadThenTail", "FlashTailThenHead", "DriftSlow", "DashFast",
               "MoveUp", "MoveDown")

# Sizes and speeds in units of the short side S, per frame.
_BAR_LEN, _BAR_THICK, _HEAD_R, _TAIL_R = 0.30, 0.07, 0.085, 0.05
_SQUARE_HALF = (0.05, 0.08)
_SPEED = {"axis": (0.025, 0.035), "slow": (0.006, 0.010), "fast": (0.06, 0.08),
          "distractor": (0.0, 0.07)}
_SPIN = (0.12, 0.18)  # rad per frame
_NUM_DISTRACTORS = 3
_NOISE_STD = 10.0
_FLICKER = 0.05


@dataclass(frozen=True)
class SynthConfig:
    """What `write_synth` generates; saved as `synth.json` beside the videos."""

    classes: int = 10
    videos_per_class: int = 12
    width: int = 64
    height: int = 64
    frames: int = 32
    fps: int = 25
    seed: int = 0
    format: str = "mixed"  # mixed (alternate .avi/.mp4), avi, mp4

    def __post_init__(self):
        if not 1 <= self.classes <= len(CLASS_NAMES):
            raise ValueError(f"classes must be 1..{len(CLASS_NAMES)}, not {self.classes}")
        if self.videos_per_class < 1 or self.frames < 2:
            raise ValueError("need videos_per_class >= 1 and frames >= 2")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 16:
            raise ValueError(f"size {self.width}x{self.height}: sides must be even and >= 16 "
                             f"(4:2:0 video)")
        if self.format not in ("mixed", "avi", "mp4"):
            raise ValueError(f"format must be mixed, avi or mp4, not {self.format!r}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[: self.classes]


# ---------------------------------------------------------------------------- rendering


def _soft(d: np.ndarray) -> np.ndarray:
    """Coverage of a pixel at signed distance d (pixels) from a shape's edge: 1-px antialias."""
    return np.clip(0.5 - d, 0.0, 1.0)


def _patch(cx: float, cy: float, radius: float, w: int, h: int):
    """Wrapped pixel rows/cols around (cx, cy) and their offsets from it (toroidal frame)."""
    r = min(int(math.ceil(radius)) + 2, (min(w, h) - 1) // 2)  # no pixel twice in a patch
    xs = np.arange(int(math.floor(cx)) - r, int(math.floor(cx)) + r + 1)
    ys = np.arange(int(math.floor(cy)) - r, int(math.floor(cy)) + r + 1)
    dx = (xs + 0.5 - cx)[None, :]
    dy = (ys + 0.5 - cy)[:, None]
    return ys % h, xs % w, dx, dy


def _blend(frame: np.ndarray, ys: np.ndarray, xs: np.ndarray, alpha: np.ndarray,
           colour: np.ndarray) -> None:
    """Alpha-blend a colour into the wrapped patch of rows ys and columns xs."""
    a = alpha[..., None].astype(np.float32)
    idx = np.ix_(ys, xs)
    frame[idx] = frame[idx] * (1 - a) + colour.astype(np.float32) * a


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = float(min(w, h))
    c1, c2 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    kx, ky = rng.uniform(-2, 2, 2) * 2 * math.pi / s
    g = 0.5 + 0.5 * np.sin(kx * x + ky * y + rng.uniform(0, 2 * math.pi))
    bg = c1 + (c2 - c1) * g[..., None]
    return (bg + rng.normal(0, 6, (h, w, 3))).astype(np.float32)


def _contrasting_colour(rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    """A random colour at least 80 (RGB distance) from the background's mean colour."""
    for _ in range(32):
        c = rng.uniform(0, 255, 3)
        if np.linalg.norm(c - bg_mean) >= 80:
            return c
    return c


def _flash_plan(cls: str, rng: np.random.Generator, t: int) -> list[tuple[int, int, str]]:
    """Two flashes (start, length, end) in the first and second half of the video."""
    d = max(1, round(t / 4))
    t1 = int(rng.integers(0, max(t // 2 - d, 0) + 1))
    t2 = int(rng.integers(t // 2, max(t - d, t // 2) + 1))
    if cls == "FlashHeadThenTail":
        ends = ("head", "tail")
    elif cls == "FlashTailThenHead":
        ends = ("tail", "head")
    else:
        e = "head" if rng.random() < 0.5 else "tail"
        ends = (e, e)
    return [(t1, d, ends[0]), (t2, d, ends[1])]


def render_clip(cls: str, *, rng: np.random.Generator, width: int, height: int,
                frames: int) -> np.ndarray:
    """One synthetic clip of class `cls` as uint8 (T, H, W, 3)."""
    if cls not in CLASS_NAMES:
        raise ValueError(f"unknown synthetic class {cls!r}; known: {', '.join(CLASS_NAMES)}")
    w, h, s = width, height, float(min(width, height))
    bg = _background(rng, w, h)

    # actor
    pos = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    theta = rng.uniform(0, 2 * math.pi)
    bg_mean = bg.reshape(-1, 3).mean(0)
    colour = _contrasting_colour(rng, bg_mean)
    vel, spin = np.zeros(2), 0.0
    if cls.startswith("Move"):
        speed = rng.uniform(*_SPEED["axis"]) * s
        vel = speed * {"MoveLeft": np.array([-1.0, 0.0]), "MoveRight": np.array([1.0, 0.0]),
                       "MoveUp": np.array([0.0, -1.0]), "MoveDown": np.array([0.0, 1.0])}[cls]
    elif cls.startswith("Rotate"):
        # image y points down, so a clockwise turn on screen increases the angle
        spin = rng.uniform(*_SPIN) * (1.0 if cls == "RotateClockwise" else -1.0)
    elif cls in ("DriftSlow", "DashFast"):
        speed = rng.uniform(*_SPEED["slow" if cls == "DriftSlow" else "fast"]) * s
        a = rng.uniform(0, 2 * math.pi)
        vel = speed * np.array([math.cos(a), math.sin(a)])
    flashes = _flash_plan(cls, rng, frames)

    # distractors: squares gliding anywhere at any speed up to fast
    dis = []
    for _ in range(_NUM_DISTRACTORS):
        a = rng.uniform(0, 2 * math.pi)
        sp = rng.uniform(*_SPEED["distractor"]) * s
        dis.append((np.array([rng.uniform(0, w), rng.uniform(0, h)]),
                    sp * np.array([math.cos(a), math.sin(a)]),
                    rng.uniform(*_SQUARE_HALF) * s, _contrasting_colour(rng, bg_mean)))

    half_len, thick = _BAR_LEN * s / 2, _BAR_THICK * s / 2
    head_r, tail_r = _HEAD_R * s, _TAIL_R * s
    white = np.full(3, 255.0)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        frame = bg.copy()
        for p0, v, half, col in dis:
            cx, cy = (p0 + v * t) % (w, h)
            ys, xs, dx, dy = _patch(cx, cy, half * 1.5, w, h)
            _blend(frame, ys, xs, _soft(np.maximum(np.abs(dx), np.abs(dy)) - half), col)
        cx, cy = (pos + vel * t) % (w, h)
        ang = theta + spin * t
        ys, xs, dx, dy = _patch(cx, cy, half_len + head_r, w, h)
        u = dx * math.cos(ang) + dy * math.sin(ang)  # along the bar, head at +half_len
        vv = -dx * math.sin(ang) + dy * math.cos(ang)
        bar = np.hypot(np.maximum(np.abs(u) - half_len, 0), vv) - thick
        _blend(frame, ys, xs, _soft(bar), colour)
        lit = {end for start, d, end in flashes if start <= t < start + d}
        for end, r, sign in (("head", head_r, 1.0), ("tail", tail_r, -1.0)):
            disc = np.hypot(u - sign * half_len, vv) - r
            _blend(frame, ys, xs, _soft(disc), white if end in lit else colour)
        frame *= np.float32(1.0 + rng.uniform(-_FLICKER, _FLICKER))
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(_NOISE_STD)
        out[t] = np.clip(frame, 0, 255).round().astype(np.uint8)
    return out


def clip_rng(seed: int, class_idx: int, video: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(
        [int(seed), int(class_idx), int(video)])))


# ---------------------------------------------------------------------------- writing


def h264_available() -> bool:
    import av

    return "libx264" in av.codecs_available


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int, codec: str) -> None:
    """Encode uint8 (T, H, W, 3) frames; keyframe every 12 frames so seeking is exercised."""
    import av

    t, h, w, _ = frames.shape
    with av.open(os.fspath(path), mode="w") as container:
        options = {"g": "12"}
        if codec == "libx264":
            # mbtree made byte-different files from identical input in PyAV's x264 build
            options.update({"crf": "16", "preset": "fast", "bf": "2", "x264-params": "mbtree=0"})
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # deterministic output
        if codec == "mpeg4":
            stream.codec_context.bit_rate = int(w * h * fps * 1.0)
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            for pkt in stream.encode(frame):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)


def _group_clip(i: int, n: int) -> tuple[int, int]:
    """UCF-style group (1..25) and clip number of video i of n in a class."""
    group = 1 + (i * 25) // n
    clip = 1 + sum(1 for j in range(i) if 1 + (j * 25) // n == group)
    return group, clip


def video_relpath(cfg: SynthConfig, class_idx: int, i: int) -> str:
    name = cfg.class_names[class_idx]
    group, clip = _group_clip(i, cfg.videos_per_class)
    ext = {"avi": ".avi", "mp4": ".mp4", "mixed": ".avi" if i % 2 == 0 else ".mp4"}[cfg.format]
    return f"{name}/v_{name}_g{group:02d}_c{clip:02d}{ext}"


def _write_one(job: tuple) -> tuple[str, int]:
    cfg, class_idx, i, path, codec = job
    clip = render_clip(cfg.class_names[class_idx], rng=clip_rng(cfg.seed, class_idx, i),
                       width=cfg.width, height=cfg.height, frames=cfg.frames)
    write_video(path, clip, fps=cfg.fps, codec=codec)
    return path, len(clip)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(line + "\r\n" for line in lines).encode("ascii"))


def write_synth(out: str | os.PathLike, cfg: SynthConfig = SynthConfig(), *,
                overwrite: bool = False, workers: int = 1, progress=None) -> Path:
    """Generate the dataset under `out` (see the module docstring); returns `out`.

    `progress(k)` is called after each video (for a CLI progress bar).
    """
    out = Path(out)
    vroot, aroot = out / "UCF-101", out / "ucfTrainTestlist"
    if vroot.exists() or aroot.exists():
        if not overwrite:
            raise DvflError(f"{out}: already holds a dataset (UCF-101/ or ucfTrainTestlist/); "
                            f"pass --overwrite to replace it")
        shutil.rmtree(vroot, ignore_errors=True)
        shutil.rmtree(aroot, ignore_errors=True)
    h264 = h264_available()
    codecs = {".avi": "mpeg4", ".mp4": "libx264" if h264 else "mpeg4"}
    log.info("synthetic dataset: %d classes x %d videos, %dx%d, %d frames; codecs: .avi "
             "mpeg4, .mp4 %s", cfg.classes, cfg.videos_per_class, cfg.width, cfg.height,
             cfg.frames, codecs[".mp4"] + ("" if h264 else " (libx264 not in this PyAV build)"))
    jobs = []
    for c, name in enumerate(cfg.class_names):
        (vroot / name).mkdir(parents=True, exist_ok=True)
        for i in range(cfg.videos_per_class):
            rel = video_relpath(cfg, c, i)
            jobs.append((cfg, c, i, str(vroot / rel), codecs[os.path.splitext(rel)[1]]))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_write_one, jobs, chunksize=4):
                if progress is not None:
                    progress(1)
    else:
        for job in jobs:
            _write_one(job)
            if progress is not None:
                progress(1)

    aroot.mkdir(parents=True, exist_ok=True)
    _write_lines(aroot / "classInd.txt", [f"{c + 1} {n}" for c, n in enumerate(cfg.class_names)])
    for split in (1, 2, 3):
        test_groups = range(7 * split - 6, 7 * split + 1)
        train, test = [], []
        for c in range(cfg.classes):
            for i in range(cfg.videos_per_class):
                rel = video_relpath(cfg, c, i)
                if _group_clip(i, cfg.videos_per_class)[0] in test_groups:
                    test.append(rel)
                else:
                    train.append(f"{rel} {c + 1}")
        _write_lines(aroot / f"trainlist{split:02d}.txt", train)
        _write_lines(aroot / f"testlist{split:02d}.txt", test)
        if len(test) < cfg.classes:
            log.warning("split %d: only %d test videos for %d classes; use more "
                        "videos per class", split, len(test), cfg.classes)
    meta = {"generator": "dvfl synth", "config": asdict(cfg), "mp4_codec": codecs[".mp4"],
            "avi_codec": codecs[".avi"], "classes": list(cfg.class_names)}
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out
