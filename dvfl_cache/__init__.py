"""dvfl stage 1: run a video teacher once and cache its raw logits in a sharded Zarr store.

The public API (docs/api.md; stable within a minor version) is what ``__all__`` lists:

    from dvfl_cache import open_cache, CachedClips, replay_view

    cache = open_cache("cache.zarr")            # a folder, a .zip or an fsspec URL
    ds = CachedClips(cache, root="/data/UCF101", frames=8, size=224, epoch=0)

Everything else in the package may change between versions. The names load on first use, so
``import dvfl_cache`` stays cheap (no torch, no zarr) for the command line.
"""

__version__ = "0.1.0"

__all__ = ["CachedClips", "open_cache", "replay_view", "__version__"]

_API = {"CachedClips", "open_cache", "replay_view"}


def __getattr__(name: str):
    if name in _API:
        from dvfl_cache import api

        return getattr(api, name)
    raise AttributeError(f"module 'dvfl_cache' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
