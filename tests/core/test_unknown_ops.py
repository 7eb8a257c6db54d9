"""Ops without a channel rule: their channels are kept, the rest of the model still prunes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunepilot as pp

from ._helpers import run, zero_check


def _unfold(y: torch.Tensor) -> torch.Tensor:
    """F.unfold (aten.im2col) summed back to a one-channel map of y's size."""
    n, _, h, w = y.shape
    cols = F.unfold(y, 2, stride=2).sum(1).reshape(n, 1, h // 2, w // 2)
    return F.interpolate(cols, scale_factor=2, mode="nearest")


def _fft(y: torch.Tensor) -> torch.Tensor:
    """An FFT over the channel dim, reduced to one channel."""
    return torch.fft.fft(y, dim=1).real.sum(1, keepdim=True)


class Unknown(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(F.relu(self.a(x)))
        return self.b(y) + self.fn(y)


@pytest.mark.parametrize(("fn", "op"), [(_unfold, "im2col"), (_fft, "fft")])
def test_unknown_op_pins_its_input_channels(
    fn: Callable[[torch.Tensor], torch.Tensor], op: str
) -> None:
    """The op's input channels are unprunable ("no channel rule"); others still prune."""
    model = Unknown(fn)
    x = torch.randn(2, 3, 16, 16)
    graph = pp.trace(model.eval(), x)
    assert any(op in name for name in graph.unknown_ops)
    assert all(n >= 1 for n in graph.unknown_ops.values())
    c = graph.group("c.weight:0")
    assert not c.prunable
    assert c.reason and "no channel rule" in c.reason and op in c.reason
    assert "no channel rule" in graph.summary()

    a = graph.group("a.weight:0")
    assert a.prunable and a.reason is None
    _, plan, pruned = zero_check(model, x, graph=graph)
    assert set(plan) == {"a.weight:0"}
    assert pruned.a.out_channels == 4 and pruned.c.in_channels == 4
    assert pruned.c.out_channels == 8
    assert run(pruned, x).shape == (2, 4, 16, 16)


def test_known_ops_report_no_unknown() -> None:
    """A plain conv net reports no unknown ops."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    graph = pp.trace(model, torch.randn(1, 3, 8, 8))
    assert graph.unknown_ops == {}
    assert "no channel rule" not in graph.summary()
