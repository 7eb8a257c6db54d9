"""A small trained model and data shared by the search and worker tests."""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.search import SearchData, Trainer

from ._models import TinyResNet, image_batches


def trained_resnet(width: int = 16, steps: int = 60) -> nn.Module:
    """A TinyResNet trained briefly on synthetic images, so channel scores differ."""
    torch.manual_seed(0)
    model = TinyResNet(width=width)
    data = image_batches(n_batches=20, batch=16, seed=1)
    Trainer(model, lr=0.05).fit(data, epochs=None, max_steps=steps)
    return model.eval()


def search_data() -> SearchData:
    """Train, validation and held-out score splits of the synthetic images."""
    return SearchData(
        train=image_batches(n_batches=8, batch=16, seed=1),
        val=image_batches(n_batches=4, batch=16, seed=2),
        score=image_batches(n_batches=2, batch=16, seed=3),
    )
