"""Video data: indexes, decoding, views, transforms, mixing, the clip dataset, synthetic data.

Names are imported lazily so `import dvfl_cache.data.index` stays light (no torch, no av).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VideoEntry": "index", "DatasetIndex": "index", "ProbeResult": "index",
    "save_index": "index", "load_index": "index", "index_digest": "index",
    "build_index": "readers", "KINDS": "readers",
    "VideoInfo": "decode", "open_video": "decode", "decode_frames": "decode",
    "video_info": "decode", "VideoDecodeError": "decode",
    "View": "views", "ViewSampler": "views", "SamplerViewFn": "views",
    "views_to_arrays": "views", "views_from_arrays": "views", "subsample_view": "views",
    "subsample_positions": "views", "SubsampledViews": "views",
    "apply_view": "transforms",
    "ClipDataset": "dataset", "collate_clips": "dataset", "FailureLog": "dataset",
    "Cut": "dataset", "SampledViews": "dataset", "FixedViews": "dataset", "AllViews": "dataset",
    "TestView": "views",
    "mixed_clip": "dataset", "replay_clip": "dataset", "DrawnMixes": "dataset",
    "StoredMixes": "dataset",
    "MixConfig": "mix", "MixDraw": "mix", "Mix": "mix", "draw_mix": "mix",
    "mix_pixels": "mix", "mix_targets": "mix", "mixes_to_arrays": "mix",
    "mixes_from_arrays": "mix",
    "probe_index": "probe", "probe_video": "probe",
    "SynthConfig": "synth", "write_synth": "synth", "CLASS_NAMES": "synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"dvfl_cache.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dvfl_cache.data' has no attribute {name!r}")
