"""select(): counts per group, round_to, min_channels, importance; prune() reports."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunepilot as pp
from prunepilot import ChannelGraph, PlanError

from ._helpers import run, snapshot, state_equal

X = torch.randn(1, 3, 8, 8)


class Wide(nn.Module):
    """Groups of 24, 40, 64 and 100 channels, and a 2-block GroupNorm group of 48."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 24, 3, padding=1)
        self.c2 = nn.Conv2d(24, 40, 3, padding=1)
        self.c3 = nn.Conv2d(40, 64, 1)
        self.c4 = nn.Conv2d(64, 100, 1)
        self.c5 = nn.Conv2d(100, 48, 1)
        self.gn = nn.GroupNorm(2, 48)
        self.head = nn.Conv2d(48, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c2(F.relu(self.c1(x))))
        y = F.relu(self.c4(F.relu(self.c3(y))))
        return self.head(F.relu(self.gn(self.c5(y))))


@pytest.fixture(scope="module")
def wide() -> tuple[nn.Module, ChannelGraph]:
    model = Wide().eval()
    return model, pp.trace(model, X)


def _kept(graph: ChannelGraph, plan: dict[str, list[int]]) -> dict[str, int]:
    return {g.id: g.channels - len(plan.get(g.id, [])) for g in graph.prunable}


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.9])
def test_ratio_counts(wide: tuple[nn.Module, ChannelGraph], ratio: float) -> None:
    """Each group loses floor(channels * ratio) channels (block groups: whole quanta)."""
    model, graph = wide
    plan = pp.select(model, graph, remove=ratio)
    graph.check(plan)
    for g in graph.prunable:
        removed = len(plan.get(g.id, []))
        if g.blocks == 1:
            assert removed == math.floor(g.channels * ratio + 1e-9)
        else:
            per_cell = [sum(1 for c in plan.get(g.id, []) if c in cell) for cell in g.cells]
            assert len(set(per_cell)) == 1
            assert removed <= math.floor(g.channels * ratio + 1e-9) + g.blocks
    assert all(len(v) == len(set(v)) and v == sorted(v) for v in plan.values())


@pytest.mark.parametrize("round_to", [4, 8, 16])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.7])
def test_round_to(wide: tuple[nn.Module, ChannelGraph], round_to: int, ratio: float) -> None:
    """Kept widths are multiples of round_to (or the whole group) and at most what ratio keeps."""
    model, graph = wide
    plan = pp.select(model, graph, remove=ratio, round_to=round_to)
    graph.check(plan)
    for gid, kept in _kept(graph, plan).items():
        g = graph.group(gid)
        assert kept % round_to == 0 or kept == g.channels, (gid, kept)
        assert kept >= g.channels - math.floor(g.channels * ratio + 1e-9)


@pytest.mark.parametrize("min_channels", [1, 8, 30, 200])
def test_min_channels(wide: tuple[nn.Module, ChannelGraph], min_channels: int) -> None:
    """No group keeps fewer than min_channels (a smaller group keeps all of its channels)."""
    model, graph = wide
    plan = pp.select(model, graph, remove=0.9, min_channels=min_channels)
    graph.check(plan)
    for gid, kept in _kept(graph, plan).items():
        assert kept >= min(min_channels, graph.group(gid).channels)
    if min_channels == 200:
        assert plan == {}


def test_ratios_per_group(wide: tuple[nn.Module, ChannelGraph]) -> None:
    """ratios= prunes only the named groups, overriding ratio= for them."""
    model, graph = wide
    plan = pp.select(model, graph, ratios={"c2.weight:0": 0.5})
    assert set(plan) == {"c2.weight:0"} and len(plan["c2.weight:0"]) == 20
    plan = pp.select(model, graph, remove=0.25, ratios={"c4.weight:0": 0.5})
    assert len(plan["c4.weight:0"]) == 50 and len(plan["c1.weight:0"]) == 6


def test_select_leaves_model_alone(wide: tuple[nn.Module, ChannelGraph]) -> None:
    """select() only reads the model."""
    model, graph = wide
    before = snapshot(model)
    for importance in ("l1", "l2", "random"):
        pp.select(model, graph, remove=0.5, importance=importance)
    assert state_equal(before, snapshot(model))


class Ranked(nn.Module):
    def __init__(self, scale: list[float]) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, len(scale), 1)
        self.b = nn.Conv2d(len(scale), 2, 1)
        s = torch.tensor(scale)
        with torch.no_grad():
            self.a.weight.copy_(torch.ones_like(self.a.weight) * s.view(-1, 1, 1, 1))
            self.a.bias.copy_(s)
            self.b.weight.copy_(torch.ones_like(self.b.weight) * s.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_magnitude_importance_removes_smallest(importance: str) -> None:
    """l1/l2 remove the channels with the smallest weights (producers and consumers)."""
    scale = [5.0, 0.1, 3.0, -0.2, 4.0, 0.3, -6.0, 0.05]
    model = Ranked(scale).eval()
    graph = pp.trace(model, X)
    plan = pp.select(model, graph, remove=0.5, importance=importance)
    assert plan == {"a.weight:0": [1, 3, 5, 7]}
    scores = pp.channel_scores(model, graph.group("a.weight:0"), importance)
    assert scores.shape == (8,) and (scores >= 0).all()
    assert list(np.argsort(scores)[:4]) == [7, 1, 3, 5]


def test_precomputed_importance() -> None:
    """A score map per group is used as given."""
    model = Ranked([1.0] * 8).eval()
    graph = pp.trace(model, X)
    scores = {"a.weight:0": [8, 7, 6, 5, 4, 3, 2, 1]}
    assert pp.select(model, graph, remove=0.25, importance=scores) == {"a.weight:0": [6, 7]}


def test_random_importance_is_seeded(wide: tuple[nn.Module, ChannelGraph]) -> None:
    """importance='random' is reproducible for a seed and varies across seeds."""
    model, graph = wide
    a = pp.select(model, graph, remove=0.5, importance="random", seed=1)
    b = pp.select(model, graph, remove=0.5, importance="random", seed=1)
    c = pp.select(model, graph, remove=0.5, importance="random", seed=2)
    assert a == b and a != c
    assert {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in c.items()}


def test_prune_report(wide: tuple[nn.Module, ChannelGraph]) -> None:
    """prune() applies select's plan in place and reports consistent counts."""
    model, graph = wide
    model = copy.deepcopy(model)
    expected_plan = pp.select(model, graph, remove=0.5, round_to=4)
    out_shape = run(model, X).shape
    report = pp.prune(model, X, remove=0.5, round_to=4)
    assert report.plan == expected_plan
    assert [g.id for g in report.graph.groups] == [g.id for g in graph.groups]
    assert report.macs_after < report.macs_before == graph.macs_total
    assert report.params_after < report.params_before
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert report.params_after == report.graph.params(report.plan)
    assert abs(report.macs_after - graph.macs(report.plan)) <= 0.01 * report.macs_after
    assert report.macs_ratio == pytest.approx(report.macs_after / report.macs_before)
    assert "MACs" in str(report)
    assert model.c4.out_channels == 52 and run(model, X).shape == out_shape


def test_prune_remove_zero_is_a_no_op() -> None:
    """remove=0 removes nothing."""
    model = Wide().eval()
    before = snapshot(model)
    report = pp.prune(model, X, remove=0.0)
    assert report.plan == {} and report.macs_after == report.macs_before
    assert state_equal(before, snapshot(model))


def test_prune_ratio_is_the_deprecated_name_of_remove(wide: tuple[nn.Module, ChannelGraph]) -> None:
    """prune(ratio=) still prunes as prune(remove=), with a DeprecationWarning; both: refused."""
    model, _ = wide
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    with pytest.warns(DeprecationWarning, match="remove="):
        old = pp.prune(a, X, ratio=0.5)
    assert old.plan == pp.prune(b, X, remove=0.5).plan != {}
    with pytest.raises(PlanError, match="remove= only"):
        pp.prune(copy.deepcopy(model), X, remove=0.5, ratio=0.5)


def test_select_ratio_is_the_deprecated_name_of_remove(
    wide: tuple[nn.Module, ChannelGraph],
) -> None:
    """select(ratio=) plans as select(remove=), warning at the caller's line; both: refused."""
    model, graph = wide
    with pytest.warns(DeprecationWarning, match=r"select\(remove=\)") as caught:
        old = pp.select(model, graph, ratio=0.5)
    assert caught[0].filename == __file__  # the warning points at this call, not our code
    assert old == pp.select(model, graph, remove=0.5) != {}
    with pytest.raises(PlanError, match="remove= only"):
        pp.select(model, graph, remove=0.5, ratio=0.5)
