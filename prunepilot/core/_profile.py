"""Count multiply-accumulates and parameters from the traced graph."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

__all__ = ["Profile", "count_params"]


@dataclass(frozen=True)
class Profile:
    """MACs (conv, linear, matmul, attention) and parameters of one forward pass."""

    macs: int
    params: int
    by_module: dict[str, int] = field(default_factory=dict)


def count_params(model: nn.Module) -> int:
    """Unique parameter elements (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())
