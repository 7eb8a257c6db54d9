"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import prunepilot as pp


@pytest.fixture(scope="session")
def pruned_resnet18() -> tuple[nn.Module, torch.Tensor, pp.PruneReport]:
    """resnet18 (random init, eval) pruned by 30% at 64x64; do not modify it in a test."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    report = pp.prune(model, x, remove=0.3)
    return model, x, report
