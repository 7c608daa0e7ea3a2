"""Mixup / cutmix per row: a deterministic draw from (seed, video, view), pure mixing functions.

Why per row: the reference recipe (timm's Mixup in DVFL-Net's main_KD.py) draws one lambda per
*batch* and pairs the batch with a permutation of itself, so a clip's partner and lambda depend on
the batch it lands in. A cache must be the same for any batch size, worker count or number of
ranks, so dvfl draws, for every row on its own: whether it is mixed (`prob`), the operation
(mixup or cutmix, even odds when both alphas are > 0), lambda ~ Beta(alpha, alpha), the cutmix
box and the partner video. The partner's own view is drawn by the `ViewSampler` at the row's view
number (so it is the clip the partner's own row starts from, as a batch permutation would give).

Mixing happens on the uint8 pixels of two views at the output size (`mix_pixels`): cutmix pastes
the box from the partner, mixup rounds lambda * own + (1 - lambda) * partner back to uint8. Both
are exact on any machine, so a student replaying a mixed row at another size or with fewer frames
(`subsample_view` on both views) cuts both clips the same way and mixes them with the same lambda
and box, and a loader can still ship uint8. The cutmix box is stored in fractions of the output
frame; lambda is corrected to the box's area after clipping to the frame (as timm does); at a
given size the pasted pixel box is the rounded fraction box (`box_pixels`).

Labels are mixed from smoothed one-hots (`mix_targets`), as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dvfl_cache.data.views import View, views_from_arrays, views_to_arrays

OPS = ("none", "mixup", "cutmix")  # stored as uint8 codes 0, 1, 2
NO_BOX = (0.0, 0.0, 0.0, 0.0)
_MIX_ASPECT = 5  # after the view sampler's aspects 0-4; fixed forever, caches depend on it
PARTNER_PREFIX = "partner_"

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MixConfig:
    """Mixing settings of a build (stored in the cache) or of a student run.

    `prob` is the fraction of rows that are mixed once either alpha is > 0 (1: every row, the
    reference recipe); both alphas 0 means no mixing whatever `prob` says.
    """

    mixup: float = 0.0
    cutmix: float = 0.0
    prob: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("mixup", "cutmix"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} alpha must be a number >= 0, got {v!r}")
        if not (isinstance(self.prob, (int, float)) and 0.0 <= self.prob <= 1.0):
            raise ValueError(f"mix probability must be in [0, 1], got {self.prob!r}")
        object.__setattr__(self, "mixup", float(self.mixup))
        object.__setattr__(self, "cutmix", float(self.cutmix))
        object.__setattr__(self, "prob", float(self.prob))

    @property
    def enabled(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0

    def to_dict(self) -> dict:
        return {"mixup": self.mixup, "cutmix": self.cutmix, "prob": self.prob, "seed": self.seed}


@dataclass(frozen=True)
class MixDraw:
    """What (seed, video, view) decides about a row: everything but the partner's view.

    `lam` weighs the row's own clip and label; `box` (y0, x0, h, w), in fractions of the output
    frame, is the region cutmix fills from the partner (NO_BOX for mixup).
    """

    partner: int
    view: int
    op: str
    lam: float
    box: tuple[float, float, float, float] = NO_BOX

    def with_partner(self, partner_view: View) -> Mix:
        if partner_view.video != self.partner:
            raise ValueError(f"partner view of video {partner_view.video}, drawn {self.partner}")
        return Mix(op=self.op, lam=self.lam, box=self.box, partner=partner_view)


@dataclass(frozen=True)
class Mix:
    """A mixed row as stored: the operation, lambda, box and the partner's full view."""

    op: str
    lam: float
    box: tuple[float, float, float, float]
    partner: View


def _rng(seed: int, video: int, view: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(
        [int(seed), int(video), int(view), _MIX_ASPECT])))


def _f32(x: float) -> float:
    return float(np.float32(x))


def draw_mix(cfg: MixConfig, video: int, view: int, num_videos: int) -> MixDraw | None:
    """The mix of row (video, view), or None when the row is not mixed.

    A pure function of (cfg, video, view, num_videos): five uniforms, a Beta draw and a partner
    offset are always drawn in the same order so no setting moves another's stream.
    """
    if not cfg.enabled:
        return None
    if num_videos < 2:
        raise ValueError(f"mixing needs at least 2 videos, got {num_videos}")
    rng = _rng(cfg.seed, video, view)
    u_mix, u_op, u_cy, u_cx = rng.random(4)
    offset = int(rng.integers(1, num_videos))  # partner != video, uniform over the others
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup <= 0 or u_op < 0.5)
    alpha = cfg.cutmix if use_cutmix else cfg.mixup
    lam = float(rng.beta(alpha, alpha))
    if not u_mix < cfg.prob:
        return None
    partner = (video + offset) % num_videos
    if not use_cutmix:
        return MixDraw(partner=partner, view=view, op="mixup", lam=_f32(lam))
    box = cutmix_box(lam, u_cy, u_cx)
    return MixDraw(partner=partner, view=view, op="cutmix", lam=_f32(1.0 - box[2] * box[3]),
                   box=box)


def cutmix_box(lam: float, cy: float, cx: float) -> tuple[float, float, float, float]:
    """Box of side sqrt(1 - lam) (fractions) centred at (cy, cx), clipped to the frame, float32.

    The row's corrected lambda is 1 - h * w of the returned (clipped) box.
    """
    side = math.sqrt(1.0 - lam)
    y0, y1 = min(max(cy - side / 2, 0.0), 1.0), min(max(cy + side / 2, 0.0), 1.0)
    x0, x1 = min(max(cx - side / 2, 0.0), 1.0), min(max(cx + side / 2, 0.0), 1.0)
    return (_f32(y0), _f32(x0), _f32(y1 - y0), _f32(x1 - x0))


def box_pixels(box: Sequence[float], size: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) pixel bounds of a fraction box at output size `size` (rounded edges)."""
    y0, x0, h, w = (float(b) for b in box)
    if not (0 <= y0 and 0 <= x0 and h >= 0 and w >= 0 and y0 + h <= 1 + 1e-6
            and x0 + w <= 1 + 1e-6):
        raise ValueError(f"cutmix box {tuple(box)} is not inside the frame")

    def rnd(x: float) -> int:
        return min(max(int(math.floor(x * size + 0.5)), 0), size)

    return rnd(y0), rnd(y0 + h), rnd(x0), rnd(x0 + w)


def mix_pixels(own: torch.Tensor, partner: torch.Tensor, mix: Mix | MixDraw) -> torch.Tensor:
    """Mix two uint8 clips (..., T, 3, H, W) of equal shape (H == W); returns uint8.

    mixup: round(lam * own + (1 - lam) * partner) in float32; cutmix: own with the box's pixels
    taken from the partner. Exact and device-independent on CPU, so replays are bit-identical.
    """
    import torch  # here, so the cache schema can use MixConfig without loading torch

    if own.shape != partner.shape or own.dtype != torch.uint8 or partner.dtype != torch.uint8:
        raise ValueError(f"mix_pixels needs two uint8 clips of one shape, got {own.dtype} "
                         f"{tuple(own.shape)} and {partner.dtype} {tuple(partner.shape)}")
    if mix.op == "mixup":
        lam = torch.tensor(mix.lam, dtype=torch.float32)
        out = own.float() * lam + partner.float() * (1 - lam)
        return out.round_().clamp_(0, 255).to(torch.uint8)
    if mix.op == "cutmix":
        if own.shape[-1] != own.shape[-2]:
            raise ValueError(f"cutmix needs square frames, got {tuple(own.shape[-2:])}")
        y0, y1, x0, x1 = box_pixels(mix.box, own.shape[-1])
        out = own.clone()
        out[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        return out
    raise ValueError(f"unknown mix operation {mix.op!r} (known: mixup, cutmix)")


def mix_targets(labels: torch.Tensor, partner_labels: torch.Tensor, lam: torch.Tensor,
                num_classes: int, *, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets (B, C): lam * smooth(onehot(y)) + (1 - lam) * smooth(onehot(y_partner)).

    smooth(onehot) puts 1 - smoothing + smoothing / C on the class and smoothing / C elsewhere,
    applied to each one-hot before mixing as the reference does; unmixed rows pass lam = 1.
    """
    import torch

    off = smoothing / num_classes
    on = 1.0 - smoothing + off

    def hot(y: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(y), num_classes), off, dtype=torch.float32, device=y.device)
        return out.scatter_(1, y.long().view(-1, 1), on)

    lam = lam.to(torch.float32).view(-1, 1)
    return hot(labels) * lam + hot(partner_labels) * (1 - lam)


# --- fixed-width records for the store -------------------------------------------------------

def mix_arrays_spec(num_frames: int, *, per_frame: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, trailing shape) of the mix columns of a mixed cache."""
    spec: dict[str, tuple[str, tuple[int, ...]]] = {
        "mix_op": ("uint8", ()), "mix_lambda": ("float32", ()), "mix_box": ("float32", (4,)),
        "partner_video": ("int32", ()), "partner_frames": ("int32", (num_frames,)),
        "partner_crop": ("float32", (4,)), "partner_flip": ("uint8", ()),
        "partner_jitter": ("float32", (4,)), "partner_gray": ("uint8", ())}
    if per_frame:
        spec["partner_frame_jitter"] = ("float32", (num_frames, 4))
        spec["partner_jitter_order"] = ("uint8", (num_frames, 4))
    return spec


def mixes_to_arrays(mixes: Sequence[Mix | None], *, num_frames: int,
                    per_frame: bool) -> dict[str, np.ndarray]:
    """Fixed-width columns of N rows; unmixed rows (None) are all zeros with mix_op 0.

    The partner's view number is the row's own (not stored); its video is `partner_video`.
    """
    spec = mix_arrays_spec(num_frames, per_frame=per_frame)
    n = len(mixes)
    out = {k: np.zeros((n, *trail), dt) for k, (dt, trail) in spec.items()}
    idx = [i for i, m in enumerate(mixes) if m is not None]
    if not idx:
        return out
    partners = views_to_arrays([mixes[i].partner for i in idx])
    for k, a in partners.items():
        if k != "view":
            key = PARTNER_PREFIX + k
            if key not in out:
                raise ValueError(f"partner view column {k!r} but per_frame={per_frame}")
            out[key][idx] = a
    if per_frame and "frame_jitter" not in partners:
        raise ValueError("per_frame=True but the partner views have per-clip jitter")
    out["mix_op"][idx] = [OPS.index(mixes[i].op) for i in idx]
    out["mix_lambda"][idx] = [mixes[i].lam for i in idx]
    out["mix_box"][idx] = [mixes[i].box for i in idx]
    return out


def mixes_from_arrays(arrays: dict[str, np.ndarray], views: np.ndarray) -> list[Mix | None]:
    """Inverse of `mixes_to_arrays`; `views` is each row's own view number."""
    op = np.asarray(arrays["mix_op"])
    if op.size and op.max() >= len(OPS):
        raise ValueError(f"mix_op holds {int(op.max())}; known codes 0..{len(OPS) - 1}")
    idx = np.flatnonzero(op).tolist()
    out: list[Mix | None] = [None] * len(op)
    if not idx:
        return out
    part = {k[len(PARTNER_PREFIX):]: np.asarray(arrays[k])[idx] for k in arrays
            if k.startswith(PARTNER_PREFIX)}
    part["view"] = np.asarray(views)[idx]
    for i, pv in zip(idx, views_from_arrays(part)):
        out[i] = Mix(op=OPS[op[i]], lam=float(arrays["mix_lambda"][i]),
                     box=tuple(float(b) for b in arrays["mix_box"][i]), partner=pv)
    return out
