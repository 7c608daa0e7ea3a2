"""Views: exactly what the teacher saw, so a student can replay it pixel for pixel.

A `View` names the frames (indices into the decoded video), a crop box in fractions of the
frame, a flip flag, the grayscale flag and the colour jitter: one set of factors per clip
(`jitter_mode="clip"`), or, as the reference recipe does by calling a colour jitter once per
frame, new factors and a new operation order for every frame (`jitter_mode="frame"`, kept in
`frame_jitter` / `jitter_order`; the apply and grey coin flips stay per clip). `ViewSampler` draws
views deterministically from (seed, video, view index): each aspect (frames, crop, flip,
colour) has its own Philox stream keyed by a SeedSequence of (seed, video, view, aspect), so no
global RNG state is touched and changing, say, the frame count does not move the crops.
Views travel through the cache as fixed-width arrays (`views_to_arrays`).
The sampler parameters and formulas are documented in docs/dataset-index.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from dvfl_cache.settings import check_options, setting

if TYPE_CHECKING:
    from dvfl_cache.data.decode import VideoInfo

IDENTITY_JITTER = (1.0, 1.0, 1.0, 0.0)
FULL_CROP = (0.0, 0.0, 1.0, 1.0)

TEMPORAL = ("segment", "stride")

# Aspect keys of the per-view random streams; fixed forever, since caches depend on them.
_TEMPORAL, _CROP, _FLIP, _COLOUR, _FRAME_COLOUR = 0, 1, 2, 3, 4
IDENTITY_ORDER = (0, 1, 2, 3)  # brightness, contrast, saturation, hue
JITTER_MODES = ("clip", "frame")


@dataclass(frozen=True)
class View:
    """One clip of one video as the teacher saw it.

    `crop` is (y0, x0, h, w) in fractions of the frame height/width; `jitter` is (brightness,
    contrast, saturation, hue) factors, identity (1, 1, 1, 0). Per-frame jitter: `frame_jitter`
    holds one such tuple per frame and `jitter_order` the order the four operations run in for
    that frame (0 brightness, 1 contrast, 2 saturation, 3 hue); `jitter` is then the identity.
    Both are empty for a per-clip view.
    """

    video: int
    view: int
    frames: tuple[int, ...]
    crop: tuple[float, float, float, float] = FULL_CROP
    flip: bool = False
    jitter: tuple[float, float, float, float] = IDENTITY_JITTER
    gray: bool = False
    frame_jitter: tuple[tuple[float, float, float, float], ...] = ()
    jitter_order: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self):
        if self.frame_jitter or self.jitter_order:
            if not len(self.frame_jitter) == len(self.jitter_order) == len(self.frames):
                raise ValueError(f"per-frame jitter needs one factor set and one order per "
                                 f"frame: {len(self.frames)} frames, "
                                 f"{len(self.frame_jitter)} factor sets, "
                                 f"{len(self.jitter_order)} orders")
            if tuple(self.jitter) != IDENTITY_JITTER:
                raise ValueError("a view has either per-clip or per-frame jitter, not both")

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def per_frame(self) -> bool:
        return bool(self.frame_jitter)


def views_to_arrays(views: list[View] | tuple[View, ...]) -> dict[str, np.ndarray]:
    """Fixed-width arrays of N views (all with the same frame count T).

    Per-frame views add `frame_jitter` float32 (N, T, 4) and `jitter_order` uint8 (N, T, 4);
    per-clip views have only the seven classic arrays (so a version-1 cache is unchanged).
    """
    views = list(views)
    t = {len(v.frames) for v in views}
    if len(t) > 1:
        raise ValueError(f"views have different frame counts {sorted(t)}; "
                         f"fixed-width arrays need one")
    width = t.pop() if t else 0
    modes = {v.per_frame for v in views}
    if len(modes) > 1:
        raise ValueError("views mix per-clip and per-frame jitter; fixed-width arrays need one")
    out = {
        "video": np.array([v.video for v in views], np.int32).reshape(len(views)),
        "view": np.array([v.view for v in views], np.int32).reshape(len(views)),
        "frames": np.array([v.frames for v in views], np.int32).reshape(len(views), width),
        "crop": np.array([v.crop for v in views], np.float32).reshape(len(views), 4),
        "flip": np.array([v.flip for v in views], np.uint8).reshape(len(views)),
        "jitter": np.array([v.jitter for v in views], np.float32).reshape(len(views), 4),
        "gray": np.array([v.gray for v in views], np.uint8).reshape(len(views)),
    }
    if modes == {True}:
        out["frame_jitter"] = np.array([v.frame_jitter for v in views],
                                       np.float32).reshape(len(views), width, 4)
        out["jitter_order"] = np.array([v.jitter_order for v in views],
                                       np.uint8).reshape(len(views), width, 4)
    return out


def views_from_arrays(arrays: dict[str, np.ndarray]) -> list[View]:
    """Inverse of `views_to_arrays` (crop and jitter come back as the float32 values)."""
    n = len(arrays["video"])
    per_frame = "frame_jitter" in arrays

    def frame_fields(i: int) -> dict:
        if not per_frame:
            return {}
        return {"frame_jitter": tuple(tuple(float(x) for x in f)
                                      for f in arrays["frame_jitter"][i]),
                "jitter_order": tuple(tuple(int(x) for x in o)
                                      for o in arrays["jitter_order"][i])}

    return [View(video=int(arrays["video"][i]), view=int(arrays["view"][i]),
                 frames=tuple(int(f) for f in arrays["frames"][i]),
                 crop=tuple(float(c) for c in arrays["crop"][i]),
                 flip=bool(arrays["flip"][i]),
                 jitter=tuple(float(j) for j in arrays["jitter"][i]),
                 gray=bool(arrays["gray"][i]), **frame_fields(i))
            for i in range(n)]


def subsample_positions(t: int, k: int) -> list[int]:
    """Positions of the k of t frames a `subsample_view` keeps.

    p_j = floor(j * (t - 1) / (k - 1) + 1/2) for j = 0..k-1 when k > 1 (first and last kept,
    the rest evenly between, ties rounded up); p_0 = floor((t - 1) / 2) when k = 1.
    Exact in integers: p_j = (2 j (t - 1) + k - 1) // (2 (k - 1)).
    """
    if not 1 <= k <= t:
        raise ValueError(f"cannot keep {k} of {t} frames (need 1 <= k <= {t})")
    if k == 1:
        return [(t - 1) // 2]
    return [(2 * j * (t - 1) + k - 1) // (2 * (k - 1)) for j in range(k)]


def subsample_view(view: View, k: int) -> View:
    """The same view with k of its frames spread evenly over the same span (k == T: itself).

    Per-frame jitter is cut with the frames, so each kept frame keeps its own colours.
    """
    pos = subsample_positions(len(view.frames), k)
    return replace(view, frames=tuple(view.frames[p] for p in pos),
                   frame_jitter=tuple(view.frame_jitter[p] for p in pos) if view.per_frame
                   else (),
                   jitter_order=tuple(view.jitter_order[p] for p in pos) if view.per_frame
                   else ())


@dataclass(frozen=True)
class SubsampledViews:
    """The views of ``base``, each cut to ``k`` of its frames by ``subsample_view``.

    A student that replays a teacher's T-frame views cut to k frames is tested the same way:
    ``base`` draws the teacher-like T-frame test views (same span and crops), and the student
    sees k of their frames, exactly as in training. Offers the members of ``ViewSampler`` that
    test-view loading uses (``sample``, ``views_per_video``, ``num_frames``).
    """

    base: ViewSampler
    k: int

    def __post_init__(self):
        if not 1 <= self.k <= self.base.num_frames:
            raise ValueError(f"cannot keep {self.k} of {self.base.num_frames} frames per view")

    @property
    def views_per_video(self) -> int:
        return self.base.views_per_video

    @property
    def num_frames(self) -> int:
        return self.k

    def sample(self, video: int, view: int, info: VideoInfo) -> View:
        return subsample_view(self.base.sample(video, view, info), self.k)


def _f32(values) -> tuple[float, ...]:
    """Round to float32 so a view equals its `views_from_arrays(views_to_arrays(...))` copy."""
    return tuple(float(np.float32(v)) for v in values)


def _rng(seed: int, video: int, view: int, aspect: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(
        [int(seed), int(video), int(view), aspect])))


@dataclass(frozen=True)
class ViewSampler:
    """Draws `View`s; the config is stored with every cache for provenance.

    temporal: "segment" (TSN: `num_frames` equal segments of the video, one frame from each,
    uniformly at random in train, at the segment centre in test) or "stride" (`num_frames`
    frames `stride` apart from a random start in train, evenly spaced starts in test).
    mode "train": random-resized crop (`area`, `ratio` of the frame in pixels), flip with
    probability `flip`, colour jitter with probability `jitter_p` and strengths `jitter`,
    grayscale with probability `gray_p`. `jitter_mode` "clip" draws one set of jitter factors
    per clip; "frame" draws new factors and a random operation order for every frame (the apply
    and grey coins stay per clip), as the reference recipe's per-frame ColorJitter does.
    mode "test": view v is clip v // crops and crop v % crops, `clips` x `crops` views per
    video. crops == 1: a centred square of side `crop_size / short_side` of the short side
    (short side 256, centre 224). crops > 1: squares of the full short side (short side
    resized to the crop size) at evenly spaced positions along the long side (left, centre,
    right for 3).
    """

    # `setting` metadata gives `dvfl-cache build` its sampler options (--sampler, --stride, ...)
    temporal: str = setting("segment", flag="--sampler", choices=TEMPORAL,
                            help="Temporal sampler (TSN segments or fixed stride).")
    num_frames: int = 8
    stride: int = setting(4, flag="--stride", low=1, help="Frame stride for --sampler stride.")
    mode: str = "train"
    short_side: int = 256
    crop_size: int = 224
    area: tuple[float, float] = setting(
        (0.08, 1.0), flag="--area", low=0, low_open=True, high=1, ordered=True,
        metavar="MIN,MAX", help="Random-resized-crop area range, as fractions of the frame (raise "
                                "MIN for small videos, where an 8% crop keeps few pixels).")
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = setting(0.5, flag="--flip", low=0, high=1,
                          help="Horizontal flip probability (use 0 for Something-Something-v2).")
    jitter: tuple[float, float, float, float] = setting(
        (0.0, 0.0, 0.0, 0.0), flag="--jitter", low=0, metavar="B,C,S,H",
        help="Colour jitter strengths (brightness, contrast, saturation, hue), applied with "
             "probability 0.8; factors drawn per clip or per frame (--jitter-mode).")
    jitter_p: float = 0.8
    gray_p: float = setting(0.0, flag="--gray", low=0, high=1, help="Grayscale probability.")
    clips: int = 1
    crops: int = 1
    seed: int = 0
    jitter_mode: str = setting(
        "clip", flag="--jitter-mode", choices=JITTER_MODES,
        help="Colour jitter factors drawn once per clip, or per frame with a random operation "
             "order (the reference recipe).")

    def __post_init__(self):
        if self.temporal not in TEMPORAL:
            raise ValueError(f"temporal sampler must be 'segment' or 'stride', "
                             f"not {self.temporal!r}")
        if self.mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', not {self.mode!r}")
        if self.jitter_mode not in JITTER_MODES:
            raise ValueError(f"jitter_mode must be 'clip' or 'frame', not {self.jitter_mode!r}")
        if self.num_frames < 1 or self.stride < 1 or self.clips < 1 or self.crops < 1:
            raise ValueError("num_frames, stride, clips and crops must be >= 1")
        if not 0 < self.crop_size <= self.short_side:
            raise ValueError(f"crop_size {self.crop_size} must be in 1..short_side "
                             f"{self.short_side}")
        if not (0 < self.area[0] <= self.area[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"bad area {self.area} or ratio {self.ratio} range")
        # tuples, not lists, so the config stays hashable after from_dict(JSON)
        object.__setattr__(self, "area", tuple(float(a) for a in self.area))
        object.__setattr__(self, "ratio", tuple(float(r) for r in self.ratio))
        object.__setattr__(self, "jitter", tuple(float(j) for j in self.jitter))

    @property
    def views_per_video(self) -> int:
        """Distinct views per video in test mode (train views are unbounded)."""
        return self.clips * self.crops

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.jitter_mode == "clip":
            # Left out at its default so per-clip samplers keep their round-1 provenance dict
            # (and version-1 caches still compare equal on --resume).
            del d["jitter_mode"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ViewSampler:
        check_options(d, (f.name for f in fields(cls)), what="ViewSampler", error=ValueError)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    # -- sampling ------------------------------------------------------------------------

    def sample(self, video: int, view: int, info: VideoInfo) -> View:
        if info.num_frames < 1:
            raise ValueError(f"video {video} has no frames")
        if self.mode == "train":
            frames = self._temporal_train(_rng(self.seed, video, view, _TEMPORAL),
                                          info.num_frames)
            crop = self._random_resized_crop(_rng(self.seed, video, view, _CROP),
                                             info.width, info.height)
            flip = bool(_rng(self.seed, video, view, _FLIP).random() < self.flip)
            jitter, gray = self._colour(_rng(self.seed, video, view, _COLOUR))
            if self.jitter_mode == "frame":
                per_frame, order = self._frame_colour(
                    _rng(self.seed, video, view, _FRAME_COLOUR), applied=jitter != IDENTITY_JITTER)
                return View(video=video, view=view, frames=frames, crop=_f32(crop), flip=flip,
                            gray=gray, frame_jitter=tuple(_f32(j) for j in per_frame),
                            jitter_order=order)
            return View(video=video, view=view, frames=frames, crop=_f32(crop), flip=flip,
                        jitter=_f32(jitter), gray=gray)
        clip, crop_pos = divmod(view, self.crops)
        if clip >= self.clips:
            raise ValueError(f"test view {view} out of range: {self.clips} clips x "
                             f"{self.crops} crops = {self.views_per_video} views")
        return View(video=video, view=view, frames=self._temporal_test(clip, info.num_frames),
                    crop=_f32(self._test_crop(crop_pos, info.width, info.height)))

    def _temporal_train(self, rng: np.random.Generator, n: int) -> tuple[int, ...]:
        t = self.num_frames
        if self.temporal == "segment":
            # frame_i = floor((i + u_i) * n / T), u_i ~ U[0, 1): uniform within segment i
            u = rng.random(t)
            return tuple(min(int(math.floor((i + u[i]) * n / t)), n - 1) for i in range(t))
        span = (t - 1) * self.stride + 1
        start = int(rng.integers(0, max(n - span, 0) + 1))
        return tuple(min(start + i * self.stride, n - 1) for i in range(t))

    def _temporal_test(self, clip: int, n: int) -> tuple[int, ...]:
        t, c = self.num_frames, self.clips
        if self.temporal == "segment":
            # clip c of C takes the point (c + 1/2) / C of the way through each segment
            off = (clip + 0.5) / c
            return tuple(min(int(math.floor((i + off) * n / t)), n - 1) for i in range(t))
        span = (t - 1) * self.stride + 1
        free = max(n - span, 0)
        start = free // 2 if c == 1 else (clip * free) // (c - 1)
        return tuple(min(start + i * self.stride, n - 1) for i in range(t))

    def _random_resized_crop(self, rng: np.random.Generator, width: int,
                             height: int) -> tuple[float, float, float, float]:
        """Crop of area in `area` x frame area and aspect (w/h, in pixels) in `ratio`.

        Ten tries as in Inception-style training; then the largest centred crop whose aspect
        is clamped into `ratio`. Resizing the short side to 256 first scales both sides alike,
        so it changes no fraction and is left out.
        """
        total = float(width * height)
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = total * rng.uniform(self.area[0], self.area[1])
            aspect = math.exp(rng.uniform(*log_r))
            w = math.sqrt(area * aspect)
            h = math.sqrt(area / aspect)
            if w <= width and h <= height:
                y0 = rng.uniform(0, height - h)
                x0 = rng.uniform(0, width - w)
                return (y0 / height, x0 / width, h / height, w / width)
        return self.centred_crop(width, height)

    def centred_crop(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The random-resized crop's fallback: the largest centred crop whose aspect is
        clamped into `ratio`."""
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = float(width), width / self.ratio[0]
        elif aspect > self.ratio[1]:
            w, h = height * self.ratio[1], float(height)
        else:
            w, h = float(width), float(height)
        return ((height - h) / 2 / height, (width - w) / 2 / width, h / height, w / width)

    def _test_crop(self, pos: int, width: int,
                   height: int) -> tuple[float, float, float, float]:
        short = min(width, height)
        side = short * (self.crop_size / self.short_side if self.crops == 1 else 1.0)
        h, w = side / height, side / width
        if self.crops == 1:
            return ((1 - h) / 2, (1 - w) / 2, h, w)
        frac = pos / (self.crops - 1)  # 0 = left/top, 1/2 = centre, 1 = right/bottom
        if width >= height:
            return ((1 - h) / 2, (1 - w) * frac, h, w)
        return ((1 - h) * frac, (1 - w) / 2, h, w)

    def _colour(self, rng: np.random.Generator) -> tuple[tuple[float, float, float, float],
                                                          bool]:
        # Draw everything unconditionally so each parameter's stream position is fixed.
        apply, b, c, s, hue, gray = rng.random(6)
        jitter = IDENTITY_JITTER
        if any(self.jitter) and apply < self.jitter_p:
            jitter = self._factors(b, c, s, hue)
        return tuple(float(x) for x in jitter), bool(gray < self.gray_p)

    def _factors(self, b: float, c: float, s: float, hue: float
                 ) -> tuple[float, float, float, float]:
        """Uniforms in [0, 1) -> factors uniform in [max(0, 1 - j), 1 + j] (hue in [-j, j])."""
        jb, jc, js, jh = self.jitter
        return (max(0.0, 1 - jb) + b * (1 + jb - max(0.0, 1 - jb)),
                max(0.0, 1 - jc) + c * (1 + jc - max(0.0, 1 - jc)),
                max(0.0, 1 - js) + s * (1 + js - max(0.0, 1 - js)),
                -jh + hue * 2 * jh)

    def _frame_colour(self, rng: np.random.Generator, *, applied: bool
                      ) -> tuple[list[tuple[float, ...]], tuple[tuple[int, ...], ...]]:
        """Per-frame factors and operation orders (identity when the clip's coin said no).

        Drawn unconditionally from their own stream, `num_frames` rows of four uniforms then
        one permutation per frame, so the coin flips (from the per-clip stream) never move them.
        """
        t = self.num_frames
        u = rng.random((t, 4))
        orders = tuple(tuple(int(i) for i in rng.permutation(4)) for _ in range(t))
        if not applied:
            return [IDENTITY_JITTER] * t, (IDENTITY_ORDER,) * t
        return [self._factors(*u[i]) for i in range(t)], orders


@dataclass(frozen=True)
class SamplerViewFn:
    """`ClipDataset` view function giving view number `view` of every video.

    A dataclass rather than a closure so it pickles into spawned DataLoader workers.
    """

    sampler: ViewSampler
    view: int = 0

    def __call__(self, video: int, info: VideoInfo) -> View:
        return self.sampler.sample(video, self.view, info)


@dataclass(frozen=True)
class TestView:
    """How a model is tested: the clip geometry of its deterministic test views.

    ``num_frames`` frames at ``size`` px; ``temporal``/``stride`` as the training sampler's;
    ``span`` (T > num_frames) draws T-frame test views and cuts each to ``num_frames``
    (``SubsampledViews``): how a student that replayed a T-frame teacher's views is tested on
    views like the ones it learned from. None or ``num_frames``: plain views. One value,
    because the five always travel together (evaluation, predict, validation, a run's config).
    """

    __test__ = False  # not a pytest class

    num_frames: int
    size: int
    temporal: str = "segment"
    stride: int = 4
    span: int | None = None

    def __post_init__(self):
        if self.span is not None and self.span < self.num_frames:
            raise ValueError(f"test span of {self.span} frames cannot hold {self.num_frames} "
                             "frames")

    def sampler(self, clips: int = 1, crops: int = 1) -> ViewSampler | SubsampledViews:
        """The test-view sampler of an N clips x C crops layout."""
        span = self.span or self.num_frames
        base = ViewSampler(temporal=self.temporal, num_frames=span, stride=self.stride,
                           mode="test", clips=clips, crops=crops)
        return base if span == self.num_frames else SubsampledViews(base, self.num_frames)

    def with_frames(self, num_frames: int) -> TestView:
        """The same views for a model rebuilt with another clip length (a span too short for
        it is dropped: plain views)."""
        span = self.span if self.span is not None and self.span >= num_frames else None
        return replace(self, num_frames=int(num_frames), span=span)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TestView:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
