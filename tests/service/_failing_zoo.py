"""A model factory for hostile tests: it builds on ``meta`` (the submit-time check passes)
and raises for real, in the job runner, with ANSI colours in its message."""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.demo.models import digits_cnn

BROKEN = "the model broke"


def broken_when_built(num_classes: int = 10) -> nn.Module:
    """The zoo's digits CNN on ``meta``; a coloured `RuntimeError` on a real device."""
    if torch.empty(0).device.type != "meta":
        raise RuntimeError(f"\x1b[31m{BROKEN}\x1b[0m")
    return digits_cnn(num_classes=num_classes, width=4)
