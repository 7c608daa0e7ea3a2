"""A synthetic action dataset that needs time to classify, written as real videos in UCF101 layout.

Every video shows one random textured scene that changes as a whole: a sum of a few coloured
sinusoidal gratings (random orientations, 1-3 cycles per short side, random phases, random colour
directions around a random base colour), plus pixel noise and a per-frame flicker. The class is
only in how the whole scene changes over time. Classes come in time-reversal twins (a clip of one
class played backwards is a clip of its twin):

    PanLeft, PanRight                       the scene slides along x by 0.25-0.4 of the short side
    PanUp, PanDown                          the same along y
    HueForward, HueBackward                 the colours turn 0.25-0.4 of the hue wheel (a rotation
                                            about the grey axis of RGB)
    RotateClockwise, RotateCounterclockwise the scene turns 0.6-0.9 rad about the frame centre
    ZoomIn, ZoomOut                         the scene scales by 1.7 about the frame centre

The scene is drawn alike for every class and the geometry is centred on mid-video, so a single
frame says (close to) nothing about the class; and since a clip played backwards is distributed
like one of its twin, neither does an unordered set of frames: only the order tells the twins
apart.
The first six classes (pans and hues) are the setting measured learnable by small
Video-FocalNets trained from scratch in the demo's budget (`classes=6`); rotations and zooms
make local motion in every direction, which small nets confuse with pans, and need much more
data. `classes=k` keeps the first k names, so an even k keeps whole twins. Horizontal flips
turn PanLeft into PanRight and swap the rotations: train on this set without them.

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

CLASS_NAMES = ("PanLeft", "PanRight", "PanUp", "PanDown", "HueForward", "HueBackward",
               "RotateClockwise", "RotateCounterclockwise", "ZoomIn", "ZoomOut")

# Lengths are fractions of the short side S, measured from the frame centre; changes are totals
# over the whole video (spread evenly, centred on mid-video), so a clip of any length shows the
# same action.
_WAVES = 6                  # gratings summed into the scene
_WAVE_FREQ = (1.0, 3.0)     # cycles per S
_WAVE_AMP = 28.0            # RGB levels per grating along its unit colour direction
_BASE = (70.0, 185.0)       # RGB range of the scene's base colour
_NOISE_STD = 6.0            # per-pixel, per-frame Gaussian noise, RGB levels
_FLICKER = 0.03             # per-frame brightness factor within 1 +- this
_PAN = (0.25, 0.4)          # Pan*: distance travelled, in S
_HUE = (0.25, 0.4)          # Hue*: turns of the hue wheel
_ROT = (0.6, 0.9)           # Rotate*: radians turned
_ZOOM = 1.7                 # Zoom*: last frame's scale over the first's

# class -> (what changes, +1 for the twin that runs "forward")
_MOTION = {"PanLeft": ("pan_x", -1.0), "PanRight": ("pan_x", 1.0),
           "PanUp": ("pan_y", -1.0), "PanDown": ("pan_y", 1.0),
           "HueForward": ("hue", 1.0), "HueBackward": ("hue", -1.0),
           "RotateClockwise": ("rotate", 1.0), "RotateCounterclockwise": ("rotate", -1.0),
           "ZoomIn": ("zoom", 1.0), "ZoomOut": ("zoom", -1.0)}


@dataclass(frozen=True)
class SynthConfig:
    """What `write_synth` generates; saved as `synth.json` beside the videos."""

    classes: int = 6                  # pans and hues; 7-10 add rotations and zooms (harder)
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


def _trajectory(cls: str, rng: np.random.Generator,
                u_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (shift (T, 2) in S, rotation rad, zoom factor, hue angle rad) of class `cls`.

    u_t runs 0..1 over the video. Geometry is centred on mid-video, so the middle frame shows the
    untransformed scene in every class and the scene's placement says nothing about the class;
    the hue starts at 0, which is as good as any start since the colour directions are isotropic.
    Either way a clip played backwards is distributed like one of its twin class.
    """
    kind, sign = _MOTION[cls]
    n = len(u_t)
    shift, rot, zoom, hue = np.zeros((n, 2)), np.zeros(n), np.ones(n), np.zeros(n)
    if kind in ("pan_x", "pan_y"):
        d = rng.uniform(*_PAN) * sign
        shift[:, 0 if kind == "pan_x" else 1] = d * (u_t - 0.5)
    elif kind == "rotate":
        rot = sign * rng.uniform(*_ROT) * (u_t - 0.5)
    elif kind == "zoom":
        zoom = _ZOOM ** (sign * (u_t - 0.5))
    else:
        hue = sign * rng.uniform(*_HUE) * 2 * np.pi * u_t
    return shift, rot, zoom, hue


def _turn_hue(cvec: np.ndarray, angle: float) -> np.ndarray:
    """Rotate RGB directions (K, 3) by `angle` about the grey axis (Rodrigues' formula)."""
    axis = np.ones(3) / np.sqrt(3)
    c, s = math.cos(angle), math.sin(angle)
    return cvec * c + np.cross(axis, cvec) * s + np.outer(cvec @ axis, axis) * (1 - c)


def render_clip(cls: str, *, rng: np.random.Generator, width: int, height: int,
                frames: int) -> np.ndarray:
    """One synthetic clip of class `cls` as uint8 (T, H, W, 3)."""
    if cls not in CLASS_NAMES:
        raise ValueError(f"unknown synthetic class {cls!r}; known: {', '.join(CLASS_NAMES)}")
    w, h, s = width, height, float(min(width, height))
    u_t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    # pixel centres in units of the short side, origin at the frame centre
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = (x + 0.5 - w / 2) / s, (y + 0.5 - h / 2) / s
    # the scene: identical draws for every class, so it carries no class information
    ang = rng.uniform(0, 2 * np.pi, _WAVES)
    freq = rng.uniform(*_WAVE_FREQ, _WAVES) * 2 * np.pi
    kx, ky = freq * np.cos(ang), freq * np.sin(ang)
    phase = rng.uniform(0, 2 * np.pi, _WAVES)
    base = rng.uniform(*_BASE, 3)
    cvec = rng.normal(0, 1, (_WAVES, 3))
    cvec /= np.linalg.norm(cvec, axis=1, keepdims=True)
    shift, rot, zoom, hue = _trajectory(cls, rng, u_t)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        # sample the scene at the inverse transform of each pixel: content moves forward
        c, sn = math.cos(rot[t]), math.sin(rot[t])
        xs = (c * x + sn * y) / zoom[t] - shift[t, 0]
        ys = (-sn * x + c * y) / zoom[t] - shift[t, 1]
        waves = np.sin(kx[:, None, None] * xs + ky[:, None, None] * ys + phase[:, None, None])
        frame = base + _WAVE_AMP * np.einsum("khw,kc->hwc", waves, _turn_hue(cvec, hue[t]))
        frame = frame * (1.0 + rng.uniform(-_FLICKER, _FLICKER))
        frame += rng.standard_normal(frame.shape) * _NOISE_STD
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
