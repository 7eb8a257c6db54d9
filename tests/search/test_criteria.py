"""Every criterion on tiny models: shapes, magnitude semantics, determinism, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunepilot as pp
from prunepilot import search as ps

from ._models import TinyResNet, image_batches

ALL = ps.available_criteria()
DATA_FREE = ps.available_criteria(data_driven=False)
DATA_DRIVEN = ps.available_criteria(data_driven=True)


def _scores(
    model: nn.Module, graph: pp.ChannelGraph, criterion: str, seed: int = 0
) -> dict[str, np.ndarray]:
    cal = None
    if ps.get_criterion(criterion).data_driven:
        cal = ps.calibrate(
            model,
            image_batches(seed=seed),
            F.cross_entropy,
            steps=3,
            graph=graph,
            criteria=[criterion],
            sensitivity_batches=1,
        )
    return ps.score_channels(model, graph, criterion, calibration=cal, seed=seed)


def test_registry_lists_the_issue_criteria() -> None:
    assert set(DATA_FREE) == {"l1", "l2", "fpgm", "bn_scale", "random"}
    assert set(DATA_DRIVEN) == {
        "taylor",
        "taylor_weight",
        "apoz",
        "mean_activation",
        "fisher",
        "sensitivity",
    }


@pytest.mark.parametrize("criterion", ALL)
def test_score_shape_matches_group_channels(resnet, criterion: str) -> None:
    model, _, graph = resnet
    scores = _scores(model, graph, criterion)
    assert set(scores) == {g.id for g in graph.prunable}
    for g in graph.prunable:
        assert scores[g.id].shape == (g.channels,)
        assert np.isfinite(scores[g.id]).all()


@pytest.mark.parametrize("criterion", ALL)
def test_scores_are_deterministic_with_a_seed(criterion: str) -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = TinyResNet().eval()
        graph = pp.trace(model, torch.randn(2, 3, 8, 8))
        runs.append(_scores(model, graph, criterion, seed=3))
    for gid in runs[0]:
        np.testing.assert_allclose(runs[0][gid], runs[1][gid], rtol=1e-6, atol=1e-12)


def test_random_depends_on_the_seed(resnet) -> None:
    model, _, graph = resnet
    a = ps.score_channels(model, graph, "random", seed=0)
    b = ps.score_channels(model, graph, "random", seed=1)
    assert any(not np.allclose(a[g], b[g]) for g in a)


def _zero_channel(model: nn.Module, graph: pp.ChannelGraph, gid: str, channel: int) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for m in graph.group(gid).members:
            if m.name in params:
                idx = torch.tensor(m.indices([channel]))
                params[m.name].index_fill_(m.dim, idx, 0.0)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale"])
@pytest.mark.parametrize("gid", ["conv1.weight:0", "down.weight:0", "stem.weight:0"])
def test_zero_weight_channel_scores_lowest(resnet, criterion: str, gid: str) -> None:
    model, _, graph = resnet
    _zero_channel(model, graph, gid, 3)
    s = ps.score_channels(model, graph, criterion)[gid]
    assert s[3] == 0.0
    assert np.argmin(s) == 3 and (np.delete(s, 3) > 0).all()


def test_zero_weight_channel_scores_lowest_on_linear_layers(mlp) -> None:
    model, _, graph = mlp
    gid = "fc1.weight:0"
    _zero_channel(model, graph, gid, 5)
    for crit in ("l1", "l2"):
        s = ps.score_channels(model, graph, crit)[gid]
        assert np.argmin(s) == 5 and s[5] == 0.0


def test_data_driven_criteria_see_dead_channels(resnet) -> None:
    """A channel whose BatchNorm scale and shift are zero is silent: activations and
    gradients through it vanish, so activation/gradient criteria rank it last."""
    model, _, graph = resnet
    with torch.no_grad():
        model.bn1.weight[2] = 0.0
        model.bn1.bias[2] = 0.0
    cal = ps.calibrate(
        model,
        image_batches(),
        F.cross_entropy,
        steps=3,
        graph=graph,
        criteria=["taylor", "fisher", "mean_activation", "apoz", "sensitivity"],
        sensitivity_batches=1,
    )
    for crit in ("taylor", "fisher", "mean_activation", "sensitivity"):
        s = ps.score_channels(model, graph, crit, calibration=cal, groups=["conv1.weight:0"])
        s = np.abs(s["conv1.weight:0"])  # sensitivity may be negative: removal can help
        assert s[2] == pytest.approx(0.0, abs=1e-12), crit
        assert np.argmin(s) == 2, crit


def test_fpgm_ranks_the_median_filter_lowest(mlp) -> None:
    model, _, graph = mlp
    with torch.no_grad():
        w = model.fc1.weight
        w.copy_(torch.randn_like(w) * 3)
        w[7] = w.median(0).values  # the coordinate-wise median sits near the geometric one
    s = ps.score_channels(model, graph, "fpgm", groups=["fc1.weight:0"])["fc1.weight:0"]
    assert np.argmin(s) == 7


def test_aggregation_sum_mean_max(resnet) -> None:
    model, _, graph = resnet
    gid = "stem.weight:0"  # 2 producing convs, 2 BNs, 3 consumers
    s_sum = ps.score_channels(model, graph, "l1", aggregate="sum")[gid]
    s_mean = ps.score_channels(model, graph, "l1", aggregate="mean")[gid]
    s_max = ps.score_channels(model, graph, "l1", aggregate="max")[gid]
    n_params = sum(1 for m in graph.group(gid).members if m.name.endswith(("weight", "bias")))
    np.testing.assert_allclose(s_mean * n_params, s_sum)
    assert (s_max <= s_sum + 1e-12).all() and (s_max >= s_mean - 1e-12).all()


@pytest.mark.parametrize("how", ["mean", "max", "sum", "l2"])
def test_normalisation_makes_groups_comparable(resnet, how: str) -> None:
    model, _, graph = resnet
    raw = ps.score_channels(model, graph, "l2")
    norm = ps.score_channels(model, graph, "l2", normalize=how)
    for gid, s in norm.items():
        stat = {"mean": s.mean(), "max": s.max(), "sum": s.sum(), "l2": np.linalg.norm(s)}[how]
        assert stat == pytest.approx(1.0)
        # normalisation is a positive scaling: the order within a group is unchanged
        assert (np.argsort(s, kind="stable") == np.argsort(raw[gid], kind="stable")).all()


def test_users_can_register_a_criterion(resnet) -> None:
    model, _, graph = resnet

    class Index(ps.Criterion):
        name = "test_index"

        def member_scores(self, ctx: ps.ScoreContext, group: pp.ChannelGroup) -> list[np.ndarray]:
            return [np.arange(group.channels, dtype=float)]

    ps.register_criterion(Index)
    try:
        assert "test_index" in ps.available_criteria()
        s = ps.score_channels(model, graph, "test_index")
        assert (s["conv1.weight:0"] == np.arange(8)).all()
        with pytest.raises(ps.UnknownCriterionError, match="already registered"):
            ps.register_criterion(Index)
    finally:
        ps.CRITERIA.pop("test_index", None)


def test_custom_weight_and_activation_criteria(resnet, images) -> None:
    model, _, graph = resnet

    class MaxAbs(ps.WeightCriterion):
        name = "test_maxabs"
        roles = ("out",)

        def position_scores(self, weight: torch.Tensor) -> torch.Tensor:
            return weight.abs().amax(1)

    class Peak(ps.ActivationCriterion):
        name = "test_peak"

        def forward_stat(self, act: torch.Tensor) -> torch.Tensor:
            return act.amax(2).sum(0)

    s = ps.score_channels(model, graph, MaxAbs())
    assert s["down.weight:0"].shape == (16,)
    cal = ps.calibrate(model, images, F.cross_entropy, steps=2, graph=graph, criteria=[Peak()])
    p = ps.score_channels(model, graph, Peak(), calibration=cal)
    assert p["down.weight:0"].shape == (16,) and (p["down.weight:0"] != 0).any()


def test_scores_feed_core_select(resnet) -> None:
    model, _, graph = resnet
    scores = ps.score_channels(model, graph, "l1")
    plan = pp.select(model, graph, remove=0.5, importance=scores)
    for gid, removed in plan.items():
        low = np.argsort(scores[gid], kind="stable")[: len(removed)]
        assert sorted(removed) == sorted(low.tolist())
