"""Model factories importable by name, for save/load round trips (``tests.core._factories``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """Conv-BN stem, a grouped conv, a depthwise conv, global pool and a classifier."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.dw(F.relu(self.conv2(y))))
        return self.fc(y.mean((2, 3)))


def tiny_net(num_classes: int = 4, width: int = 8) -> nn.Module:
    """Build a randomly initialised `TinyNet`."""
    return TinyNet(num_classes=num_classes, width=width)


class StyleNet(nn.Module):
    """Convolutions with instance norms as PyTorch makes them by default (no weights, no
    statistics: pruning slices none of their tensors), as in style-transfer networks."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.in1 = nn.InstanceNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.in2 = nn.InstanceNorm2d(width, affine=True)  # has weights: follows them
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        return self.out(y)


def style_net(width: int = 8) -> nn.Module:
    """Build a randomly initialised `StyleNet`."""
    return StyleNet(width=width)


def not_a_model() -> int:
    """A factory that returns something other than a module."""
    return 3
