"""Tiny models and synthetic data for the search tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyResNet(nn.Module):
    """Conv-BN stem, one residual block, one downsampling block, pooled linear head."""

    def __init__(self, width: int = 8, num_classes: int = 4) -> None:
        super().__init__()
        w = width
        self.stem = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w)
        self.conv1 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.stem(x)))
        z = self.relu(self.bn1(self.conv1(y)))
        y = self.relu(self.bn2(self.conv2(z)) + y)
        y = self.relu(self.bn3(self.down(y)))
        return self.fc(y.mean((2, 3)))


class TinyMLP(nn.Module):
    """Two hidden linear layers (no normalisation)."""

    def __init__(self, d_in: int = 12, hidden: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


def image_batches(
    n_batches: int = 4, batch: int = 8, side: int = 8, classes: int = 4, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Learnable synthetic images: the label is the brightest quadrant-colour combination."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, classes, (batch,), generator=g)
        x = torch.randn(batch, 3, side, side, generator=g) * 0.5
        for i, c in enumerate(y.tolist()):
            x[i, c % 3, : side // 2 if c < 2 else side] += 1.5
        out.append((x, y))
    return out


def vector_batches(
    n_batches: int = 4, batch: int = 16, d_in: int = 12, classes: int = 4, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Linearly separable synthetic vectors."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_in, classes, generator=g)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, d_in, generator=g)
        out.append((x, (x @ w).argmax(1)))
    return out


class PlainCNN(nn.Module):
    """Nine Conv-BN-ReLU layers of mixed widths (two strided), pooled linear head."""

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 32, 48, 48, 64, 64, 96)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(widths):
            stride = 2 if i in (2, 5) else 1
            layers += [nn.Conv2d(c, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))
