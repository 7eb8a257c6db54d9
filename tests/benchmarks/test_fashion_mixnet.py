"""The search benchmark's model (FashionMixNet) and its search-cost accounting."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import prunepilot as pp
from prunepilot import search as ps

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> tuple[ModuleType, ModuleType]:
    """``benchmarks/_fashion_models.py`` and ``benchmarks/search.py`` (scripts, not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_fashion_models"), importlib.import_module("search")
    finally:
        sys.path.remove(str(BENCH))


def test_mixnet_has_15_prunable_groups_of_every_kind(bench: tuple[ModuleType, ModuleType]) -> None:
    models, _ = bench
    model = models.FashionMixNet().eval()
    x = torch.randn(2, 1, 28, 28)
    graph = pp.trace(model, x[:1])
    ids = {g.id for g in graph.groups if g.prunable}
    assert len(ids) >= 15
    assert {"stem.0.weight:0", "plain.0.weight:0", "head.0.weight:0"} <= ids  # plain
    assert "res.0.conv1.0.weight:0" in ids  # inside a residual basic block
    assert "ir1.0.expand.0.weight:0" in ids  # expansion + depthwise of an inverted residual
    assert "down2.0.weight:0" in ids  # the inverted-residual stage's shared channels
    assert 10e6 < graph.macs() < 100e6
    scores = ps.score_channels(model, graph, "l2")
    plan = ps.plan_for_ratio(model, graph, scores, 0.5, ps.Strategy())
    pp.prune_channels(model, graph, plan)
    assert model(x).shape == (2, 10)
    assert pp.profile(model, x[:1]).macs < 0.4 * graph.macs()


def test_cache_key_follows_config_epochs_and_seed(bench: tuple[ModuleType, ModuleType]) -> None:
    models, _ = bench
    cfg = models.MixConfig()
    paths = {
        models.cache_path(cfg, 15, 0),
        models.cache_path(dataclasses.replace(cfg, head=128), 15, 0),
        models.cache_path(cfg, 1, 0),
        models.cache_path(cfg, 15, 1),
    }
    assert len(paths) == 4
    assert models.cache_path(cfg, 15, 0) == models.cache_path(models.MixConfig(), 15, 0)


def test_rung_steps_follow_the_search_s_halving_schedule(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    # the proxy-tau fidelities are the rungs the search runs: steps / eta**(rungs - r)
    _, search = bench

    def spec(ft_steps: int, **settings: int) -> ps.SearchSpec:
        return ps.SearchSpec(
            constraints=ps.Constraints.model_validate({"flops": "25%"}),
            search=ps.SearchSettings(**settings),
            finetune=ps.FinetuneSettings(steps=ft_steps),
        )

    assert search.rung_steps(spec(300)) == [33, 100]
    assert search.rung_steps(spec(300, rungs=3, eta=2)) == [38, 75, 150]
    assert search.rung_steps(spec(300, rungs=0)) == []
    assert search.rung_steps(spec(0)) == []
