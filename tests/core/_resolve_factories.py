"""Factories and look-alikes for the resolver tests (``tests.core._resolve_factories``)."""

from __future__ import annotations

import torch
from torch import nn

from ._factories import tiny_net

__all__ = ["NotAModule", "Outer", "Small", "make_small", "returns_int", "small", "tiny_net"]


class Small(nn.Module):
    """One linear layer."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def small(width: int = 4) -> nn.Module:
    """A function factory of `Small`."""
    return Small(width)


make_small = small  # an alias: defined here, but under another name


def _hidden() -> nn.Module:
    return Small()


class NotAModule:
    """A class that is no nn.Module."""


class Outer:
    """Holds a nested module class (reachable only by an attribute path)."""

    class Inner(Small):
        """Nested."""


def returns_int() -> int:
    """A 'factory' that returns no module."""
    return 3
