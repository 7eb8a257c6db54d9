"""Baselines: the exact uniform, global and LAMP plans at the budget are candidates."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest
import torch
from torch import nn

import prunepilot as pp
from prunepilot import search as ps
from prunepilot.search import SearchSpec, search

from ._models import PlainCNN
from ._search_fixtures import search_data

X = torch.randn(1, 3, 8, 8)
KEEP = 0.3


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return PlainCNN().eval()


def _spec(**search_settings: Any) -> SearchSpec:
    return SearchSpec.model_validate(
        {
            "constraints": {"flops": f"{KEEP:.0%}"},
            "search": {"trials": 2, "uniform_seeds": 0, "bn_batches": 1, "top_k": 1}
            | search_settings,
            "finetune": {"steps": 2},
        }
    )


def _exact(model: nn.Module, allocation: ps.Strategy) -> dict[str, list[int]]:
    """The allocation's plan at the budget, computed independently of the search."""
    graph = pp.trace(model, X)
    scores = ps.score_channels(model, graph, "l2")
    plan = ps.plan_for_macs(model, graph, scores, keep=KEEP, strategy=allocation)
    return {g: sorted(c) for g, c in plan.items() if c}


def _widths(model: nn.Module) -> tuple[int, ...]:
    return tuple(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def test_baselines_are_the_exact_plans_evaluated_and_flagged(model: nn.Module) -> None:
    res = search(model, X, search_data(), _spec())
    base = {t.baseline: t for t in res.trials if t.baseline is not None}
    assert sorted(base) == ["global", "lamp", "uniform"]
    graph = pp.trace(model, X)
    coarse = ps.SearchSpace(min_keep=0.1, step=0.3)  # few ratios: a quick table
    space = ps.Space(model, graph, ps.score_channels(model, graph, "l2"), coarse)
    for name, t in base.items():
        assert t.state == "complete" and t.score is not None and t.feasible
        assert t.macs <= res.limits["macs"]
        # the evaluated config is exactly the allocation's plan at the budget (off the grid)
        strategy = ps.Strategy(allocation=name, max_remove=0.9)  # type: ignore[arg-type]
        plan = {g: sorted(c) for g, c in space.plan(t.config).items() if c}
        assert plan == _exact(model, strategy)
    assert any(round(v / 0.05, 6) % 1 for v in base["uniform"].config.values())
    # two searched trials besides the three baselines
    assert sum(t.baseline is None and t.state == "complete" for t in res.trials) == 2
    assert sum(f.baseline is not None for f in res.finalists) == 1
    assert [t["baseline"] for t in res.report()["trials"]].count("lamp") == 1


def test_the_search_returns_a_baseline_when_nothing_beats_it(
    model: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    graph = pp.trace(model, X)
    uniform = _exact(model, ps.Strategy(max_remove=0.9))
    pruned = PlainCNN().eval()
    pp.prune_channels(pruned, graph, uniform)
    target = _widths(pruned)

    def only_uniform(m: nn.Module, loader: Iterable[Any]) -> float:
        """A metric that only the exact uniform plan satisfies."""
        return 1.0 if _widths(m) == target else 0.0

    with caplog.at_level(logging.INFO, logger="prunepilot.search"):
        res = search(model, X, search_data(), _spec(), metric=only_uniform)
    assert res.chosen == "uniform" and res.report()["chosen"] == "uniform"
    assert _widths(res.model) == target and res.score == 1.0
    assert "no searched candidate beat the uniform baseline" in caplog.text
    searched = [t for t in res.trials if t.baseline is None and t.state == "complete"]
    assert searched and all(t.score == 0.0 for t in searched)


def test_baselines_can_be_turned_off_and_must_not_repeat(model: nn.Module) -> None:
    res = search(model, X, search_data(), _spec(baselines=[], trials=1))
    assert all(t.baseline is None for t in res.trials) and res.chosen == "search"
    with pytest.raises(ValueError, match="must not repeat"):
        _spec(baselines=["lamp", "lamp"])
    with pytest.raises(ValueError, match="baselines"):
        _spec(baselines=["random"])


def test_a_latency_scale_re_sizes_a_baseline(model: nn.Module) -> None:
    # a baseline measured slower than predicted is re-sized with the measured/predicted
    # ratio: the plan shrinks until the scaled prediction fits
    from prunepilot.search.engine._baselines import baseline_config
    from prunepilot.search.engine._budget import Budgets

    graph = pp.trace(model, X)
    space = ps.Space(model, graph, ps.score_channels(model, graph, "l2"), ps.SearchSpace())

    class MacsLatency:
        """Latency proportional to MACs (deterministic, unlike a measured table)."""

        def predict(self, plan: dict[str, list[int]]) -> float:
            return graph.macs(plan) / 1e6

    limits: dict[str, float] = {"latency_ms": 0.5 * graph.macs() / 1e6}
    budgets = Budgets(space, graph, limits, ps.SearchSettings(latency_slack=0.0))
    budgets.latency_model = MacsLatency()  # type: ignore[assignment]
    plain = baseline_config(space, budgets, "uniform")
    scaled = baseline_config(space, budgets, "uniform", latency_scale=1.3)
    assert plain is not None and scaled is not None

    def predicted(config: dict[str, float]) -> float:
        return float(budgets.estimate(config)["predicted_ms"])

    assert predicted(plain) <= limits["latency_ms"]
    assert predicted(scaled) * 1.3 <= limits["latency_ms"] < predicted(plain) * 1.3
    assert all(scaled[k] <= plain[k] for k in plain) and scaled != plain
