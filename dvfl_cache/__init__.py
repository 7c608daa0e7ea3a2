"""dvfl stage 1: run a video teacher once and cache its raw logits in a sharded Zarr store."""

__version__ = "0.1.0"
