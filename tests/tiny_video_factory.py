"""A `py:` model factory for the tests (`--teacher py:tiny_video_factory:tiny_video_net`): a
channels-first 3-D convolution classifier, the shape of torchvision's video models."""

from __future__ import annotations

import torch
from torch import nn


class TinyVideoNet(nn.Module):
    """[B, C, T, H, W] -> logits; ``fc`` is the classifier, so dvfl finds its features."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.conv = nn.Conv3d(3, width, kernel_size=3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"expected channels-first clips [B, 3, T, H, W], got {tuple(x.shape)}")
        return self.fc(self.conv(x).relu().mean(dim=(2, 3, 4)))


def tiny_video_net(num_classes: int, width: int = 8) -> TinyVideoNet:
    return TinyVideoNet(num_classes, width=width)


class Constant(nn.Module):
    """Always the same logits (class 0 first): a teacher at chance level."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(1, num_classes)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(-torch.arange(num_classes, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.new_ones(x.shape[0], 1))


def constant_net(num_classes: int) -> Constant:
    return Constant(num_classes)
