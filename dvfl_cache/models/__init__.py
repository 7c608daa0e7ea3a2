"""The Video-FocalNet family used by both stages (teacher for the cache, students for training).

Names are resolved lazily so that ``dvfl_cache.models.registry`` (and CLI help) can be imported
without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VideoFocalNet": "video_focalnet",
    "Modulators": "video_focalnet",
    "create_model": "registry",
    "list_models": "registry",
    "model_defaults": "registry",
    "MODEL_NAMES": "registry",
    "LoadReport": "weights",
    "load_pretrained": "weights",
    "from_reference": "weights",
    "save_checkpoint": "weights",
    "model_from_checkpoint": "weights",
    "read_checkpoint": "weights",
    "count_params": "flops",
    "load_model": "load",
    "LoadedModel": "load",
    "ClipClassifier": "load",
    "count_gmacs": "flops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
