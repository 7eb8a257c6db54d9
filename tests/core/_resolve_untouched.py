"""A module no test imports: the resolver must refuse its factory before importing it."""

from __future__ import annotations

from torch import nn


def net() -> nn.Module:
    """Would be a valid factory, if anybody trusted this module."""
    return nn.Linear(2, 2)
