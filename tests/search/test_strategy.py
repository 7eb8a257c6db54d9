"""Allocation strategies: uniform, global, config, round_to, min channels, ignore, MACs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import prunepilot as pp
from prunepilot import search as ps

from ._models import TinyResNet


@pytest.fixture
def wide() -> tuple[nn.Module, pp.ChannelGraph, dict[str, np.ndarray]]:
    """A 32-wide TinyResNet (32, 32 and 64 channel groups) with L2 scores."""
    torch.manual_seed(0)
    model = TinyResNet(width=32).eval()
    graph = pp.trace(model, torch.randn(1, 3, 8, 8))
    return model, graph, ps.score_channels(model, graph, "l2")


def _kept(graph: pp.ChannelGraph, plan: dict[str, list[int]]) -> dict[str, int]:
    return {g.id: g.channels - len(plan.get(g.id, [])) for g in graph.prunable}


def test_uniform_removes_the_same_fraction_everywhere(wide) -> None:
    model, graph, scores = wide
    plan = ps.plan_for_ratio(model, graph, scores, 0.25)
    assert _kept(graph, plan) == {"stem.weight:0": 24, "conv1.weight:0": 24, "down.weight:0": 48}
    for gid, removed in plan.items():  # the lowest-scored channels go
        assert sorted(removed) == sorted(np.argsort(scores[gid])[: len(removed)].tolist())


def test_global_ranking_respects_the_per_group_cap(wide) -> None:
    model, graph, scores = wide
    scores = dict(scores)
    scores["conv1.weight:0"] = scores["conv1.weight:0"] * 0 + 1e-9  # worthless group
    st = ps.Strategy(allocation="global", max_remove=0.5, normalize="none")
    plan = ps.plan_for_ratio(model, graph, scores, 0.3, st)
    kept = _kept(graph, plan)
    assert kept["conv1.weight:0"] == 16  # capped at 50 %
    total = sum(g.channels for g in graph.prunable)
    # the others make up for the capped group: 30 % of all channels go
    assert sum(len(v) for v in plan.values()) == math.floor(0.3 * total)


def test_global_allocation_is_not_uniform(wide) -> None:
    model, graph, _ = wide
    scores = {g.id: np.linspace(1, 2, g.channels) for g in graph.prunable}
    scores["down.weight:0"] = scores["down.weight:0"] * 10  # this group matters more
    st = ps.Strategy(allocation="global", normalize="none")
    kept = _kept(graph, ps.plan_for_ratio(model, graph, scores, 0.3, st))
    assert kept["down.weight:0"] == 64 and kept["stem.weight:0"] < 32


@pytest.mark.parametrize("allocation", ["uniform", "global"])
@pytest.mark.parametrize("round_to", [8, 16])
def test_round_to_keeps_multiples(wide, allocation: str, round_to: int) -> None:
    model, graph, scores = wide
    st = ps.Strategy(allocation=allocation, round_to=round_to)
    for ratio in (0.1, 0.33, 0.6, 0.85):
        for keep in _kept(graph, ps.plan_for_ratio(model, graph, scores, ratio, st)).values():
            assert keep % round_to == 0 and keep >= round_to


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_min_channels_is_respected(wide, allocation: str) -> None:
    model, graph, scores = wide
    st = ps.Strategy(allocation=allocation, min_channels=12, max_remove=0.95)
    plan = ps.plan_for_ratio(model, graph, scores, 0.9, st)
    assert min(_kept(graph, plan).values()) >= 12
    plan = ps.plan_for_macs(model, graph, scores, keep=0.02, strategy=st)
    assert min(_kept(graph, plan).values()) >= 12


def test_explicit_config_by_ratio_and_width(wide) -> None:
    model, graph, scores = wide
    st = ps.Strategy(config={"conv1.weight:0": 0.75, "down.weight:0": 40})
    kept = _kept(graph, ps.plan_for_ratio(model, graph, scores, 0.5, st))
    assert kept == {"stem.weight:0": 16, "conv1.weight:0": 8, "down.weight:0": 40}


def test_config_patterns(wide) -> None:
    model, graph, scores = wide
    st = ps.Strategy(config={"*conv1*": 10})
    assert _kept(graph, ps.plan_for_ratio(model, graph, scores, 0.0, st))["conv1.weight:0"] == 10


def test_ignore_by_module_and_by_pattern(wide) -> None:
    model, graph, scores = wide
    for ignore in ((model.down,), ("down",), ("bn3.*",), ("down.weight:0",)):
        st = ps.Strategy(ignore=ignore)
        assert ps.ignored_groups(model, graph, ignore) == {"down.weight:0"}
        plan = ps.plan_for_ratio(model, graph, scores, 0.5, st)
        assert "down.weight:0" not in plan and "conv1.weight:0" in plan
    # a residual group is produced by several layers: ignoring one keeps all of it
    assert ps.ignored_groups(model, graph, ["conv2"]) == {"stem.weight:0"}


@pytest.mark.parametrize("allocation", ["uniform", "global"])
@pytest.mark.parametrize("keep", [0.5, 0.25, 0.1])
def test_macs_target_is_met_closely(wide, allocation: str, keep: float) -> None:
    model, graph, scores = wide
    st = ps.Strategy(allocation=allocation)
    plan = ps.plan_for_macs(model, graph, scores, keep=keep, strategy=st)
    got = graph.macs(plan) / graph.macs()
    assert got <= keep + 1e-9
    assert got >= keep - 0.05  # the least pruning that meets the target, not much more
    pruned = TinyResNet(width=32).eval()
    pruned.load_state_dict(model.state_dict())
    pp.prune_channels(pruned, graph, plan)
    x = torch.randn(1, 3, 8, 8)
    assert pp.profile(pruned, x).macs == graph.macs(plan)


def test_cost_aware_global_ranking_prefers_expensive_channels(wide) -> None:
    model, graph, _ = wide
    flat = {g.id: np.ones(g.channels) + np.arange(g.channels) * 1e-6 for g in graph.prunable}
    st = ps.Strategy(allocation="global", cost_weight=1.0)
    kept = _kept(graph, ps.plan_for_ratio(model, graph, flat, 0.2, st))
    # stem/residual channels run at full resolution in three convs: they go first
    assert kept["stem.weight:0"] < 32 and kept["down.weight:0"] == 64


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_macs_target_with_fixed_and_ignored_groups(wide, allocation: str) -> None:
    model, graph, scores = wide
    st = ps.Strategy(allocation=allocation, config={"down.weight:0": 48}, ignore=["conv1"])
    plan = ps.plan_for_macs(model, graph, scores, keep=0.6, strategy=st)
    kept = _kept(graph, plan)
    assert kept["down.weight:0"] == 48 and kept["conv1.weight:0"] == 32
    assert kept["stem.weight:0"] < 32
    assert graph.macs(plan) <= 0.6 * graph.macs()


def test_lamp_scores_follow_the_paper_on_a_hand_made_group() -> None:
    # squared: 16, 9, 9, 1; each over the sum of squares at least as large (ties share)
    got = ps.lamp_scores([4.0, -3.0, 3.0, 1.0])
    want = [16 / 16, 9 / 34, 9 / 34, 1 / 35]
    assert got.tolist() == pytest.approx(want)
    assert ps.lamp_scores([]).size == 0
    assert ps.lamp_scores([0.0, 0.0]).tolist() == [0.0, 0.0]


def test_lamp_ranks_groups_by_their_own_distribution(wide) -> None:
    model, graph, _ = wide
    stem, conv1, down = (g.id for g in graph.prunable)
    # stem: one dominant channel, the rest tiny; conv1 and down: flat distributions
    scores = {
        stem: np.array([10.0] + [0.1] * 31),
        conv1: np.ones(32),
        down: np.ones(64),
    }
    st = ps.Strategy(allocation="lamp")
    kept = _kept(graph, ps.plan_for_ratio(model, graph, scores, 0.3, st))
    # the tiny stem channels have the lowest LAMP scores and go first (up to the cap)
    assert kept[stem] == 4
    # flat groups: every channel scores 1/width, so the wider group pays the other 10
    assert kept[conv1] == 32 and kept[down] == 64 - (math.floor(0.3 * 128) - 28)
    # magnitude ranking sees equal scores and takes them from conv1 instead
    st_global = ps.Strategy(allocation="global", normalize="none")
    assert _kept(graph, ps.plan_for_ratio(model, graph, scores, 0.3, st_global))[conv1] == 22


def test_lamp_meets_a_macs_target_and_bad_allocations_are_refused(wide) -> None:
    model, graph, scores = wide
    st = ps.Strategy(allocation="lamp")
    plan = ps.plan_for_macs(model, graph, scores, keep=0.4, strategy=st)
    assert graph.macs(plan) <= 0.4 * graph.macs()
    with pytest.raises(pp.PlanError, match="allocation must be one of"):
        ps.Strategy(allocation="random")  # type: ignore[arg-type]


def test_max_ratio_is_a_deprecated_name_of_max_remove() -> None:
    with pytest.warns(DeprecationWarning, match="max_remove"):
        old = ps.Strategy(allocation="global", max_ratio=0.5)
    assert old == ps.Strategy(allocation="global", max_remove=0.5)
    with pytest.warns(DeprecationWarning, match="max_remove"):
        assert old.max_ratio == 0.5
