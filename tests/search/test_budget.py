"""Budget filling: every filled candidate uses at least 98% of the tightest budget."""

from __future__ import annotations

import random

import pytest
import torch

import prunepilot as pp
from prunepilot.search import SearchSettings, SearchSpace, Space, score_channels
from prunepilot.search.engine._budget import Budgets

from ._models import PlainCNN


@pytest.fixture(scope="module")
def space() -> Space:
    torch.manual_seed(0)
    model = PlainCNN().eval()
    graph = pp.trace(model, torch.randn(1, 3, 16, 16))
    return Space(model, graph, score_channels(model, graph, "l2"), SearchSpace())


@pytest.mark.parametrize("keep", [0.10, 0.25])
def test_filled_configs_use_98_percent_of_a_macs_budget(space: Space, keep: float) -> None:
    limit = keep * space.graph.macs()
    budgets = Budgets(space, space.graph, {"macs": limit}, SearchSettings())
    rng = random.Random(1)
    for _ in range(8):
        raw = {d.name: rng.choice(space.choices) for d in space.dims}
        filled = budgets.fill(raw)
        assert 0.98 <= budgets.estimate(filled)["macs"] / limit <= 1.0
        space.check(filled)  # a valid config for Space.plan and the evaluators
        assert all(space.low <= v <= space.high for v in filled.values())
        # exact channel fractions: the config says what the plan keeps
        plan = space.plan(filled)
        for d in space.dims:
            kept = d.channels - len(plan.get(d.groups[0], []))
            assert filled[d.name] == kept / d.channels


def test_filling_respects_the_tightest_of_two_budgets(space: Space) -> None:
    g = space.graph
    limits = {"macs": 0.5 * g.macs(), "params": 0.2 * g.params()}
    budgets = Budgets(space, g, limits, SearchSettings())
    filled = budgets.fill({d.name: 0.5 for d in space.dims})
    est = budgets.estimate(filled)
    assert est["macs"] <= limits["macs"] and 0.98 <= est["params"] / limits["params"] <= 1.0


def test_a_config_that_cannot_fit_comes_back_unchanged(space: Space) -> None:
    budgets = Budgets(space, space.graph, {"macs": 1.0}, SearchSettings())
    raw = {d.name: 0.5 for d in space.dims}
    assert budgets.fill(raw) == raw
