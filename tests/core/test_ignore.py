"""ignore=: layers (by module object or name pattern) whose output channels are never removed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunepilot as pp
from prunepilot import TraceError

from ._helpers import find_group, run, snapshot, state_equal
from .test_rules import Depthwise

X = torch.randn(2, 3, 8, 8)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.res = nn.Conv2d(8, 8, 1)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        y = y + self.res(F.relu(self.conv1(y)))
        return self.head(F.relu(self.conv2(y)))


def _prunable_producers(graph: pp.ChannelGraph) -> set[str]:
    return {m.name for g in graph.prunable for m in g.members if m.role == "out"}


def test_baseline() -> None:
    """Without ignore every hidden group is prunable."""
    graph = pp.trace(Net().eval(), X)
    assert {"stem.0.weight", "conv1.weight", "res.weight", "conv2.weight"} <= (
        _prunable_producers(graph)
    )


@pytest.mark.parametrize(
    "spec", ["module", "conv2", "conv2.weight", "conv2.*", "*2.w*"], ids=lambda s: str(s)
)
def test_ignore_pins_output_channels(spec: str) -> None:
    """Ignoring conv2 (object, module name, parameter name, glob) fixes its outputs only."""
    model = Net().eval()
    ignore: Any = model.conv2 if spec == "module" else spec
    graph = pp.trace(model, X, ignore=[ignore])
    g = find_group(graph, "conv2.weight")
    assert not g.prunable and g.reason and "ignore" in g.reason
    # its input channels (the stem/residual stream) still prune
    stream = find_group(graph, "stem.0.weight")
    assert stream.prunable and ("conv2.weight", 1) in {(m.name, m.dim) for m in stream.members}
    assert find_group(graph, "conv1.weight").prunable


def test_ignore_residual_member_pins_whole_group() -> None:
    """Ignoring one producer of a residual stream fixes the whole coupled group."""
    model = Net().eval()
    graph = pp.trace(model, X, ignore=[model.res])
    g = find_group(graph, "stem.0.weight")
    assert not g.prunable and g.reason and "ignore" in g.reason
    assert find_group(graph, "conv1.weight").prunable


def test_ignore_in_prune() -> None:
    """prune(ignore=...) keeps the ignored layer's width and prunes the rest."""
    model = Net().eval()
    expected = run(model, X).shape
    report = pp.prune(model, X, remove=0.5, ignore=[model.conv2, "conv1"])
    assert model.conv2.out_channels == 6 and model.conv1.out_channels == 8
    assert model.stem[0].out_channels == 4 and model.conv2.in_channels == 4
    assert report.macs_after < report.macs_before
    assert run(model, X).shape == expected


@pytest.mark.parametrize(
    ("ignore", "words"),
    [
        (["conv9"], "matches no"),
        (["*.nothing"], "matches no"),
        ([nn.Conv2d(8, 8, 1)], "not part of the model"),
        ([3], "ignore takes"),
    ],
    ids=["missing-name", "missing-glob", "foreign-module", "int"],
)
def test_bad_ignore(ignore: list[Any], words: str) -> None:
    """Patterns matching nothing, foreign modules and other types are TraceErrors."""
    model = Net().eval()
    before = snapshot(model)
    with pytest.raises(TraceError, match=words):
        pp.trace(model, X, ignore=ignore)
    with pytest.raises(TraceError):
        pp.prune(model, X, remove=0.5, ignore=ignore)
    assert state_equal(before, snapshot(model))


def test_ignore_depthwise_pins_the_channels_it_carries() -> None:
    """A depthwise conv's outputs are its inputs' channels: ignoring it fixes them all."""
    model = Depthwise(mult=1).eval()
    assert find_group(pp.trace(model, X), "a.weight").prunable
    g = find_group(pp.trace(model, X, ignore=[model.dw]), "a.weight")
    assert not g.prunable and g.reason and "ignore" in g.reason
    assert ("dw.weight", 0) in {(m.name, m.dim) for m in g.members}
