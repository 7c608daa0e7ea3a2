"""Parameter and multiply-accumulate counts.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, which is
what the papers' "GFLOPs" columns count: multiply-accumulates, so MACs = FLOPs / 2). A
VideoFocalNet is rebuilt on the meta device for counting, so even the 157 M-parameter teacher at
8x224x224 costs well under a second and no memory.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from dvfl_cache.models.video_focalnet import VideoFocalNet


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: torch.nn.Module, *, frames: int, size: int, batch: int = 1) -> float:
    """Giga multiply-accumulates of one forward pass on a (batch, frames, C, size, size) input.

    With batch=1 this is the per-clip number of the papers' efficiency tables.
    """
    if isinstance(model, VideoFocalNet):
        with torch.device("meta"):
            counted = VideoFocalNet(**{**model.config, "num_frames": frames})
        device = torch.device("meta")
        in_chans = model.config["in_chans"]
    else:  # any other module: count on its own device with a real forward
        counted = model
        device = next(model.parameters()).device
        in_chans = getattr(model, "in_chans", 3)
    x = torch.zeros(batch, frames, in_chans, size, size, device=device)
    was_training = counted.training
    counted.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            counted(x)
    finally:
        counted.train(was_training)
    return counter.get_total_flops() / 2e9
