"""The search space: grid, tying, plans, config validation; the spec's budgets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunepilot as pp
from prunepilot.search import (
    Budget,
    Constraints,
    FinetuneSettings,
    LatencyTarget,
    SearchSpace,
    Space,
    score_channels,
)


def _space(model: nn.Module, x: torch.Tensor, **kw: object) -> Space:
    graph = pp.trace(model, x)
    return Space(model, graph, score_channels(model, graph, "l2"), SearchSpace.model_validate(kw))


def test_grid() -> None:
    assert SearchSpace(min_keep=0.25, step=0.25).choices() == (0.25, 0.5, 0.75, 1.0)
    assert SearchSpace(min_keep=0.2, max_keep=0.7, step=0.2).choices() == (0.2, 0.4, 0.6)
    with pytest.raises(ValueError, match="must not exceed"):
        SearchSpace(min_keep=0.8, max_keep=0.5)


def test_the_old_ratio_names_still_parse() -> None:
    """``min_ratio``/``max_ratio`` (deprecated) mean the same kept fractions, and a spec
    stored under them reads back as ``min_keep``/``max_keep``."""
    old = SearchSpace.model_validate({"min_ratio": 0.2, "max_ratio": 0.7, "step": 0.2})
    assert old == SearchSpace(min_keep=0.2, max_keep=0.7, step=0.2)
    assert old.model_dump()["min_keep"] == 0.2 and "min_ratio" not in old.model_dump()
    with pytest.raises(ValueError, match="must not exceed"):
        SearchSpace.model_validate({"min_ratio": 0.8, "max_ratio": 0.5})


def test_plan_keeps_the_ratio(resnet: tuple[nn.Module, torch.Tensor, pp.ChannelGraph]) -> None:
    model, x, graph = resnet
    space = _space(model, x, min_keep=0.25, step=0.25)
    assert [d.name for d in space.dims] == [g.id for g in graph.prunable if g.channels > 1]
    plan = space.plan(space.uniform(0.5))
    for d in space.dims:
        g = graph.group(d.name)
        assert len(plan[d.name]) == g.channels - g.channels // 2
    assert space.plan(space.uniform(1.0)) == {}
    pruned = pp.prune_channels(model, graph, plan)
    assert pruned(x).shape == (2, 4)


def test_tie_shares_one_ratio() -> None:
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
    for _ in range(3):  # three identical conv-BN-ReLU layers: one family
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    untied = _space(model, x)
    tied = _space(model, x, tie=True)
    assert len(untied.dims) == 4
    assert sorted(len(d.groups) for d in tied.dims) == [1, 3]
    family = next(d for d in tied.dims if len(d.groups) == 3)
    plan = tied.plan({d.name: 0.5 for d in tied.dims})
    assert all(len(plan[g]) == 4 for g in family.groups)


def test_ignore_and_bad_configs(resnet: tuple[nn.Module, torch.Tensor, pp.ChannelGraph]) -> None:
    model, x, graph = resnet
    space = _space(model, x, ignore=["down"])
    assert all(not d.name.startswith("down") for d in space.dims)
    good = space.uniform(0.5)
    with pytest.raises(pp.PlanError, match="unknown"):
        space.check({**good, "nope": 0.5})
    with pytest.raises(pp.PlanError, match=r"keep ratio .* must be in \(0, 1\]"):
        space.check({k: 0.0 for k in good})
    with pytest.raises(pp.PlanError, match="nothing to search"):
        _space(model, x, ignore=[g.id for g in graph.prunable])


def test_budgets() -> None:
    assert Budget.parse("25%") == Budget(value=0.25, relative=True)
    assert Budget.parse(12) == Budget(value=12.0)
    assert Budget.parse("25%").limit(200) == 50
    c = Constraints(flops="25%", latency_ms=3.5, target={"device": "cuda", "dtype": "fp16"})
    again = Constraints.model_validate_json(c.model_dump_json())
    assert again == c and again.model_dump()["flops"] == "25%"
    for bad in ("0%", "150%", "-3", "fast", True):
        with pytest.raises(ValueError):
            Constraints(flops=bad)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        Constraints(flops=1, target={"device": "tpu"})


def test_macs_and_flops_are_both_compute_bounds_in_macs() -> None:
    """``flops`` counts 2 per multiply-add: an absolute bound allows half as many MACs, a
    percentage the same fraction; given both, the search gets both (the tighter holds)."""
    assert Constraints(macs=1000).mac_budgets() == [Budget(value=1000)]
    assert Constraints(flops=1000).mac_budgets() == [Budget(value=500)]
    assert Constraints(flops="40%").mac_budgets() == [Budget(value=0.4, relative=True)]
    both = Constraints(macs="60%", flops=2000).mac_budgets()
    assert [b.limit(10_000) for b in both] == [6000, 1000]
    assert Constraints(params="50%").mac_budgets() == []
    with pytest.raises(ValueError, match="macs, flops, params or latency_ms"):
        Constraints()
    again = Constraints.model_validate_json(Constraints(macs="25%", flops=8).model_dump_json())
    assert again.model_dump()["macs"] == "25%" and again.model_dump()["flops"] == 8


def test_devices_name_a_type_not_a_local_index() -> None:
    # a GPU evaluator on Ray sees its one GPU as cuda:0: an index >= 1 names nothing there
    assert LatencyTarget(device="cuda:0").device == "cuda"
    assert FinetuneSettings(device="cuda:0").device == "cuda"
    for model in (LatencyTarget, FinetuneSettings):
        for bad in ("cuda:1", "cuda:12"):
            with pytest.raises(ValueError, match="sees it as cuda:0; write 'cuda'"):
                model(device=bad)
        with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
            model(device="gpu")


def test_budgets_are_finite_and_survive_storage() -> None:
    for bad in ("inf", "-inf", "nan", "1e400", float("inf"), float("nan"), 10**400):
        with pytest.raises(ValueError, match="finite positive number"):
            Budget.parse(bad)
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        Budget.parse({"value": 5, "relative": True})
    # stored specs are parsed again by the job runner: bit for bit, no exponent forms
    for text in ("12.3456789%", "0.00001%", "7%", "100%"):
        c = Constraints(flops=text)
        dumped = c.model_dump_json()
        assert text in dumped and Constraints.model_validate_json(dumped) == c
