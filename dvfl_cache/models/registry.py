"""Named Video-FocalNet variants.

Importing this module does not import torch, so the CLI can offer the names as choices while
``--help`` stays fast.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dvfl_cache.models.video_focalnet import VideoFocalNet

# Shared by every variant: the paper's 8-frame clips, UCF101 classes, focal level 2 / window 3.
_COMMON: dict[str, Any] = dict(num_classes=101, num_frames=8, focal_levels=[2, 2, 2, 2],
                               focal_windows=[3, 3, 3, 3])

# Drop-path rates: 0.2 (student) and 0.5 (teacher) are the paper's; tiny and small take 0.1 and
# 0.3, rising with depth between them.
_VARIANTS: dict[str, dict[str, Any]] = {
    "vfl-nano": dict(embed_dim=96, depths=[1, 1, 2, 1], drop_path_rate=0.2),
    "vfn-tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], drop_path_rate=0.1),
    "vfn-small": dict(embed_dim=96, depths=[2, 2, 18, 2], drop_path_rate=0.3),
    "vfn-base": dict(embed_dim=128, depths=[2, 2, 18, 2], drop_path_rate=0.5),
}

MODEL_NAMES: tuple[str, ...] = tuple(_VARIANTS)


def list_models() -> list[str]:
    return list(MODEL_NAMES)


def model_defaults(name: str) -> dict[str, Any]:
    """Constructor options of a registered variant (a fresh copy the caller may edit)."""
    if name not in _VARIANTS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    merged = {**_COMMON, **_VARIANTS[name]}
    return {k: list(v) if isinstance(v, list) else v for k, v in merged.items()}


def create_model(name: str, **overrides: Any) -> VideoFocalNet:
    """Build a registered variant; any constructor option can be overridden by keyword."""
    from dvfl_cache.models.video_focalnet import VideoFocalNet

    options = model_defaults(name)
    accepted = set(inspect.signature(VideoFocalNet).parameters)
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
                        f"accepted: {', '.join(sorted(accepted))}")
    model = VideoFocalNet(**{**options, **overrides})
    model.arch = name
    return model
