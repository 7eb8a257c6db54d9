"""FashionMixNet: the search benchmark's Fashion-MNIST CNN with many prunable groups of mixed kinds.

Deeper than ``criteria.py``'s FashionResNet, so that per-layer ratios have room to matter:
plain conv blocks (stem, 28x28 conv, downsampling convs, head), a residual stage of basic
blocks (14x14), and two MobileNetV2-style stages of inverted residual blocks with expansion
and depthwise convolution (7x7, 4x4). With the default config: 17 prunable groups, about
27 M MACs at 28x28. Trained once per (config, epochs, seed) and cached under
``benchmarks/.cache/`` (git-ignored).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from criteria import CACHE, train_cached
from torch import nn

__all__ = ["FashionMixNet", "MixConfig", "cache_path", "train_mixnet"]


@dataclass(frozen=True)
class MixConfig:
    """Widths and depths of FashionMixNet (part of the cache key)."""

    stem: int = 16
    plain: int = 32
    res: int = 32
    res_blocks: int = 4
    ir1: int = 48
    ir1_blocks: int = 4
    ir2: int = 80
    ir2_blocks: int = 3
    expand: int = 4
    head: int = 256


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias), BatchNorm, ReLU: a plain block."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Basic(nn.Module):
    """A ResNet basic block with an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c, c, 3)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection; a residual
    connection when stride and width allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn(cin, hidden, 1)
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class FashionMixNet(nn.Module):
    """Plain stem (28x28) -> residual stage (14x14) -> inverted residual stages (7x7, 4x4)
    -> plain 1x1 head conv, global pooling, linear classifier."""

    def __init__(self, cfg: MixConfig = MixConfig(), num_classes: int = 10) -> None:
        super().__init__()
        c = cfg
        self.stem = conv_bn(1, c.stem, 3)
        self.plain = conv_bn(c.stem, c.plain, 3)
        self.down1 = conv_bn(c.plain, c.res, 3, 2)
        self.res = nn.Sequential(*(Basic(c.res) for _ in range(c.res_blocks)))
        self.down2 = conv_bn(c.res, c.ir1, 3, 2)
        self.ir1 = nn.Sequential(
            *(InvertedResidual(c.ir1, c.ir1, 1, c.expand) for _ in range(c.ir1_blocks))
        )
        self.ir2 = nn.Sequential(
            InvertedResidual(c.ir1, c.ir2, 2, c.expand),
            *(InvertedResidual(c.ir2, c.ir2, 1, c.expand) for _ in range(c.ir2_blocks - 1)),
        )
        self.head = conv_bn(c.ir2, c.head, 1)
        self.fc = nn.Linear(c.head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down1(self.plain(self.stem(x)))
        y = self.head(self.ir2(self.ir1(self.down2(self.res(y)))))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def cache_path(cfg: MixConfig, epochs: int, seed: int, cache: Path = CACHE) -> Path:
    """Where the trained model of this config, epoch count and seed is cached."""
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return cache / f"fashion_mixnet_{key}_e{epochs}_s{seed}.pt"


def train_mixnet(
    data: tuple[torch.Tensor, ...], cfg: MixConfig, epochs: int, seed: int
) -> tuple[nn.Module, float]:
    """Train FashionMixNet (or load it from the cache); returns it (eval mode) and its test
    top-1, trained like ``criteria.py``'s base model."""
    path = cache_path(cfg, epochs, seed)
    return train_cached(FashionMixNet(cfg), data, epochs, seed, path, "FashionMixNet")
