"""Successive halving between the cheap score and the finalists (rungs, probes, steps),
and the channel scores a worker computes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunepilot.core import trace
from prunepilot.search import (
    Evaluator,
    FinetuneSettings,
    Limited,
    LocalPool,
    SearchSettings,
    SearchSpace,
    SearchSpec,
    Task,
    Workload,
    calibrate,
    score_channels,
    search,
)

from ._search_fixtures import search_data, trained_resnet

X = torch.randn(1, 3, 8, 8)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_resnet()


def _spec(**search_settings: object) -> SearchSpec:
    return SearchSpec.model_validate(
        {
            "constraints": {"flops": "40%"},
            "space": {"min_keep": 0.25, "step": 0.125},
            "search": {"trials": 8, "uniform_seeds": 2, "bn_batches": 2, **search_settings},
            "finetune": {"steps": 8, "lr": 0.01},
        }
    )


def test_rungs_halve_the_candidates_and_grow_their_steps(model: nn.Module) -> None:
    spec = _spec(top_k=1, rungs=2, eta=2, baselines=["uniform"])
    res = search(model, X, search_data(), spec)
    probed = [t for t in res.trials if t.rungs]
    # top_k * eta**rungs = 4 searched candidates and the baseline enter the first rung
    assert len(probed) == 5
    assert sum(t.baseline is not None for t in probed) == 1
    # the first rung keeps ceil(5 / 2) = 3 by their rung-1 score; the last keeps top_k
    second = [t for t in probed if len(t.rungs) == 2]
    out = [t for t in probed if len(t.rungs) == 1]
    assert len(second) == 3
    assert min(t.rungs[0] for t in second) >= max(t.rungs[0] for t in out)
    # rung r trains finetune.steps / eta**(rungs - r) steps: 2, then 4
    assert all(t.steps == 2 for t in out) and all(t.steps == 6 for t in second)
    # the best of the last rung is a finalist, and the best baseline always is
    best = max(second, key=lambda t: t.rungs[-1])
    assert best.number in {f.number for f in res.finalists}
    assert any(f.baseline == "uniform" for f in res.finalists)
    assert len(res.finalists) <= 2
    assert all(f.steps == 8 and f.rungs for f in res.finalists)
    # the cost: every step the search trained
    assert res.steps == sum(t.steps for t in res.trials) + sum(f.steps for f in res.finalists)
    assert res.report()["steps"] == res.steps


def test_without_rungs_the_cheap_score_picks_the_finalists(model: nn.Module) -> None:
    res = search(model, X, search_data(), _spec(top_k=2, rungs=0))
    assert not any(t.rungs for t in res.trials)
    assert sum(f.baseline is None for f in res.finalists) == 2
    assert sum(f.baseline is not None for f in res.finalists) == 1
    assert res.steps == sum(f.steps for f in res.finalists) == 8 * len(res.finalists)


def test_no_finetune_means_no_rungs(model: nn.Module) -> None:
    spec = _spec(top_k=1, rungs=2).model_copy(update={"finetune": FinetuneSettings(steps=0)})
    res = search(model, X, search_data(), spec)
    assert not any(t.rungs for t in res.trials) and res.steps == 0


def _evaluator(model: nn.Module, distill: bool) -> Evaluator:
    graph = trace(model, X)
    work = Workload(
        model=model,
        example_inputs=X,
        graph=graph,
        scores=score_channels(model, graph, "l2"),
        space=SearchSpace(min_keep=0.25, step=0.125),
        settings=SearchSettings(bn_batches=2),
        finetune=FinetuneSettings(steps=8, lr=0.01, distill=distill),
        data=search_data(),
    )
    return Evaluator(work)


@pytest.mark.parametrize("distill", [False, True])
def test_a_probe_trains_the_steps_asked_and_is_repeatable(model: nn.Module, distill: bool) -> None:
    ev = _evaluator(model, distill)
    config = {d.name: 0.5 for d in ev.space.dims}
    first, again = ev.probe(config, 5), ev.probe(config, 5)
    assert first.steps == again.steps == 5
    assert 0 <= first.score <= 1 and first.score == again.score  # same batches, same seed
    longer = ev.probe(config, 7)
    assert longer.steps == 7 and math.isfinite(longer.score)
    cheap = ev.evaluate(config)
    assert cheap.steps == 0  # the cheap score trains nothing by default


class _RecordingPool(LocalPool):
    """The in-process pool, remembering which kinds of task it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[str] = []

    def submit(self, task: Task) -> None:
        self.kinds.append(task.kind)
        super().submit(task)


def test_data_driven_scores_are_computed_by_a_worker(model: nn.Module) -> None:
    # calibration (forward/backward passes) is heavy: a worker runs it, not the driver,
    # and the scores it returns are exactly those of an in-process calibration
    spec = _spec(top_k=1, rungs=0, criterion="taylor", calib_batches=2)
    pool = _RecordingPool()
    res = search(model, X, search_data(), spec, pool=pool)
    assert pool.kinds.count("scores") == 1 and pool.kinds[0] == "scores"
    graph = trace(model, X)
    cal = calibrate(
        model,
        Limited(search_data().train, 2),
        F.cross_entropy,
        steps=2,
        graph=graph,
        criteria=["taylor"],
    )
    expected = score_channels(model, graph, "taylor", calibration=cal)
    ev = pool._evaluator  # the evaluator the search's workload ended with
    assert ev is not None and set(ev.space.scores) == set(expected)
    assert all(np.allclose(ev.space.scores[g], expected[g]) for g in expected)
    assert res.macs <= res.limits["macs"]
