"""dvfl stage 2: train small video students from a cached teacher, sweep alpha/tau, evaluate."""

from dvfl_cache import __version__

__all__ = ["__version__"]
