"""The model zoo: small built-in model factories the service and `prunepilot.load` trust.

Job specs name them as ``prunepilot.demo.models:NAME``. They are tiny on purpose: the demo
and the tests prune them on scikit-learn's 8x8 digits in seconds on a CPU, yet they have the
structure pruning must respect (BatchNorm after convolutions, a residual add that couples
channels, a linear head).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_cnn"]


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = _cbr(width, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.bn2(self.conv2(self.conv1(x))))


class DigitsCNN(nn.Module):
    """A small residual CNN for 8x8 single-channel images (or any size / channel count).

    Args:
        num_classes: outputs of the linear head.
        width: channels of the first stage (the second has twice as many).
        in_channels: input channels.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, width)
        self.block1 = _Residual(width)
        self.down = _cbr(width, 2 * width, stride=2)
        self.block2 = _Residual(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.head(torch.flatten(self.pool(x), 1))


def digits_cnn(num_classes: int = 10, width: int = 32, in_channels: int = 1) -> DigitsCNN:
    """A `DigitsCNN` with random weights (see the class for the arguments)."""
    if width < 1 or num_classes < 1 or in_channels < 1:
        raise ValueError("num_classes, width and in_channels must be positive")
    return DigitsCNN(num_classes=num_classes, width=width, in_channels=in_channels)
