"""dvfl stage 2: train small video students from a cached teacher, sweep alpha/tau, evaluate.

The public API (docs/api.md) is ``kd_loss``, the loss `dvfl-train` itself trains with: the
same function, not a copy, so a loop of your own gets the trainer's numbers. It loads on first
use, so ``import dvfl_train`` stays cheap.
"""

from dvfl_cache import __version__

__all__ = ["__version__", "kd_loss"]


def __getattr__(name: str):
    if name == "kd_loss":
        from dvfl_train.losses import kd_loss

        return kd_loss
    raise AttributeError(f"module 'dvfl_train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"kd_loss"})
