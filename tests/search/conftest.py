"""Fixtures for the search tests: tiny models, their graphs and synthetic batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunepilot as pp

from ._models import TinyMLP, TinyResNet, image_batches, vector_batches


@pytest.fixture
def resnet() -> tuple[nn.Module, torch.Tensor, pp.ChannelGraph]:
    """A fresh TinyResNet (eval mode), an example input and its graph."""
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 8, 8)
    return model, x, pp.trace(model, x)


@pytest.fixture
def mlp() -> tuple[nn.Module, torch.Tensor, pp.ChannelGraph]:
    """A fresh TinyMLP (eval mode), an example input and its graph."""
    torch.manual_seed(0)
    model = TinyMLP().eval()
    x = torch.randn(2, 12)
    return model, x, pp.trace(model, x)


@pytest.fixture
def images() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four batches of 8 learnable synthetic 8x8 images with 4 classes."""
    return image_batches()


@pytest.fixture
def vectors() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four batches of 16 linearly separable vectors with 4 classes."""
    return vector_batches()
