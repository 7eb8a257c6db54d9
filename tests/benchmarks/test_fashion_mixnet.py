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


def test_search_steps_count_scoring_and_finalists(bench: tuple[ModuleType, ModuleType]) -> None:
    _, search = bench
    spec = ps.SearchSpec(
        constraints=ps.Constraints.model_validate({"flops": "25%"}),
        search=ps.SearchSettings(score_steps=30),
        finetune=ps.FinetuneSettings(steps=300),
    )
    trial = ps.TrialRecord(number=0, config={}, state="complete", macs=1, params=1, score=0.5)
    trials = [
        trial,
        dataclasses.replace(trial, number=1),
        dataclasses.replace(trial, number=2, duplicate_of=0),  # reuses trial 0's score
        dataclasses.replace(trial, number=3, state="rejected", score=None),
    ]
    finalist = ps.Finalist(number=0, config={}, macs=1, params=1, score=0.9)
    res = ps.SearchResult(
        model=torch.nn.Identity(),
        config={},
        plan={},
        macs=1,
        params=1,
        latency=None,
        score=0.9,
        baseline=ps.Baseline(macs=4, params=4),
        limits={"flops": 1.0},
        trials=trials,
        finalists=[finalist, dataclasses.replace(finalist, number=1)],
    )
    assert search.search_steps(spec, res) == 2 * 30 + 2 * 300
