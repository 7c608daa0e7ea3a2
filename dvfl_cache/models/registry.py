"""Named Video-FocalNet variants.

Importing this module does not import torch, so the CLI can offer the names as choices while
``--help`` stays fast.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from dvfl_cache.errors import DvflError
from dvfl_cache.settings import check_options

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

# Models from elsewhere (``dvfl_cache.models.load``): a Hugging Face folder or cached model id,
# and a Python factory ``MODULE:FUNCTION`` (which runs the user's own code).
FOREIGN_PREFIXES: tuple[str, ...] = ("hf:", "py:")


def is_foreign(spec: str | None) -> bool:
    """True for an ``hf:`` or ``py:`` model spec (no torch import: the CLI asks this)."""
    return isinstance(spec, str) and spec.startswith(FOREIGN_PREFIXES)


def list_models() -> list[str]:
    return list(MODEL_NAMES)


def model_defaults(name: str) -> dict[str, Any]:
    """Constructor options of a registered variant (a fresh copy the caller may edit)."""
    if name not in _VARIANTS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    merged = {**_COMMON, **_VARIANTS[name]}
    return {k: list(v) if isinstance(v, list) else v for k, v in merged.items()}


class ModelOptionError(DvflError, TypeError):
    """A constructor option the model does not have, or a value of the wrong type."""


def check_model_options(name: str, overrides: dict[str, Any], *, flag: str = "option") -> None:
    """Refuse unknown options and values whose type differs from the constructor default's
    (an int is a float, a list of ints fits a sequence of ints), in one line naming the key."""
    from dvfl_cache.models.video_focalnet import VideoFocalNet

    params = inspect.signature(VideoFocalNet).parameters
    check_options(overrides, params, what=f"model {name!r}", error=ModelOptionError)
    for key, value in overrides.items():
        default = params[key].default
        if not _same_kind(value, default):
            raise ModelOptionError(f"{flag} {key}={json.dumps(value)}: model {name!r} expects "
                                   f"{_kind(default)}")


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return (isinstance(value, (list, tuple)) and bool(value)
                and all(_same_kind(v, default[0]) for v in value))
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, (list, tuple)):
        return f"a comma list like {','.join(map(str, default))}"
    return {int: "an integer", float: "a number", str: "a string"}.get(type(default),
                                                                      type(default).__name__)


def create_model(name: str, **overrides: Any) -> VideoFocalNet:
    """Build a registered variant; any constructor option can be overridden by keyword."""
    from dvfl_cache.models.video_focalnet import VideoFocalNet

    options = model_defaults(name)
    check_model_options(name, overrides)
    model = VideoFocalNet(**{**options, **overrides})
    model.arch = name
    return model
