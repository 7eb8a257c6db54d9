"""Bad input gets a clear error that subclasses PrunepilotError."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import prunepilot as pp
from prunepilot import search as ps


def test_unknown_criterion_names_the_registered_ones(resnet) -> None:
    model, _, graph = resnet
    with pytest.raises(ps.UnknownCriterionError) as e:
        ps.score_channels(model, graph, "l3")
    msg = str(e.value)
    assert "'l3'" in msg and "l1" in msg and "taylor" in msg and "register_criterion" in msg
    assert isinstance(e.value, pp.PrunepilotError)
    with pytest.raises(ps.UnknownCriterionError):
        ps.Calibration(model, graph, criteria=["nope"])


@pytest.mark.parametrize("criterion", ps.available_criteria(data_driven=True))
def test_data_driven_criterion_without_data(resnet, criterion: str) -> None:
    model, _, graph = resnet
    with pytest.raises(ps.CalibrationError, match="data-driven") as e:
        ps.score_channels(model, graph, criterion)
    assert isinstance(e.value, pp.PrunepilotError)


def test_criterion_missing_from_the_calibration(resnet, images) -> None:
    model, _, graph = resnet
    cal = ps.calibrate(model, images, F.cross_entropy, steps=1, graph=graph, criteria=["apoz"])
    with pytest.raises(ps.CalibrationError, match="not collected"):
        ps.score_channels(model, graph, "fisher", calibration=cal)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_ratio_outside_unit_interval(resnet, ratio: object) -> None:
    model, _, graph = resnet
    scores = ps.score_channels(model, graph)
    with pytest.raises(pp.PlanError, match=r"\[0, 1\)"):
        ps.plan_for_ratio(model, graph, scores, ratio)


@pytest.mark.parametrize("ratio", [-0.5, 1.0])
def test_bad_ratio_in_config_strategy_or_schedule(resnet, ratio: float) -> None:
    model, _x, graph = resnet
    scores = ps.score_channels(model, graph)
    with pytest.raises(pp.PlanError, match=r"\[0, 1\)"):
        ps.plan_for_ratio(model, graph, scores, 0.2, ps.Strategy(config={"conv1.weight:0": ratio}))
    with pytest.raises(pp.PlanError, match=r"\[0, 1\)"):
        ps.Strategy(max_remove=ratio)
    with pytest.raises(pp.PlanError, match=r"\[0, 1\)"):
        ps.sparsity_schedule("agp", ratio, 3)


def test_config_naming_unknown_groups(resnet) -> None:
    model, _, graph = resnet
    scores = ps.score_channels(model, graph)
    with pytest.raises(pp.PlanError, match=r"unknown group 'conv9\.weight:0'") as e:
        ps.plan_for_ratio(model, graph, scores, 0.2, ps.Strategy(config={"conv9.weight:0": 0.5}))
    assert "conv1.weight:0" in str(e.value)  # it lists what exists
    with pytest.raises(pp.PlanError, match="not prunable"):
        ps.plan_for_ratio(model, graph, scores, 0.2, ps.Strategy(config={"fc.weight:0": 0.5}))
    with pytest.raises(pp.PlanError, match="has 8"):
        ps.plan_for_ratio(model, graph, scores, 0.2, ps.Strategy(config={"conv1.weight:0": 9}))


def test_other_bad_settings(resnet) -> None:
    model, _, graph = resnet
    scores = ps.score_channels(model, graph)
    with pytest.raises(pp.PlanError, match="round_to"):
        ps.Strategy(round_to=0)
    with pytest.raises(pp.PlanError, match="min_channels"):
        ps.Strategy(min_channels=0)
    with pytest.raises(pp.PlanError, match="allocation"):
        ps.Strategy(allocation="greedy")
    with pytest.raises(pp.PlanError, match="matches no"):
        ps.plan_for_ratio(model, graph, scores, 0.2, ps.Strategy(ignore=("nothing.*",)))
    with pytest.raises(pp.PlanError, match="exactly one"):
        ps.plan_for_macs(model, graph, scores)
    with pytest.raises(pp.PlanError, match=r"\(0, 1\]"):
        ps.plan_for_macs(model, graph, scores, keep=0.0)
    with pytest.raises(pp.PlanError, match="schedule"):
        ps.sparsity_schedule("cosine", 0.5, 3)
    with pytest.raises(pp.PrunepilotError, match="aggregation"):
        ps.score_channels(model, graph, aggregate="median")
    with pytest.raises(pp.PlanError, match="stale"):
        ps.plan_for_ratio(model, graph, {"conv1.weight:0": [1.0, 2.0]}, 0.5)
    with pytest.raises(pp.PlanError, match="target"):
        ps.netadapt(model, torch.randn(1, 3, 8, 8), target=1.5, evaluate=lambda m: 0.0)
