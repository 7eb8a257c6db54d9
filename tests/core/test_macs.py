"""MACs and parameter counts: analytic graph counts vs. real pruned models vs. torch's counter."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import prunepilot as pp
from prunepilot import PlanError

from ._helpers import run


def torch_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates by torch's FlopCounterMode (FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        run(model, x)
    return counter.get_total_flops() // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Toy(nn.Module):
    """Convs (plain, strided, grouped, with and without bias) and linears only."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, groups=2, bias=False)
        self.c3 = nn.Conv2d(16, 12, 1)
        self.fc1 = nn.Linear(12 * 6 * 6, 20)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        return self.fc2(F.relu(self.fc1(y.flatten(1))))


def test_resnet18_macs_match_torch() -> None:
    """resnet18 at 64x64: profile and graph MACs within 1% of FlopCounterMode."""
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = torch_macs(model, x)
    prof = pp.profile(model, x)
    assert abs(prof.macs - ref) <= 0.01 * ref
    assert prof.params == n_params(model)
    assert sum(prof.by_module.values()) == prof.macs
    assert {"conv1", "fc", "layer1.0.conv1"} <= set(prof.by_module)


def test_pruned_resnet18_counts(
    pruned_resnet18: tuple[nn.Module, torch.Tensor, pp.PruneReport],
) -> None:
    """After prune(): the graph's predictions equal the pruned model's real counts."""
    model, x, report = pruned_resnet18
    graph, plan = report.graph, report.plan
    assert graph.params(plan) == n_params(model) == report.params_after
    assert graph.params() == report.params_before
    assert graph.macs() == graph.macs_total == report.macs_before
    assert abs(graph.macs(plan) - report.macs_after) <= 0.01 * report.macs_after
    ref = torch_macs(model, x)
    assert abs(report.macs_after - ref) <= 0.01 * ref


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_toy_counts(ratio: float) -> None:
    """Conv/linear toy: MACs match FlopCounterMode before and after pruning, params exactly."""
    model = Toy().eval()
    x = torch.randn(2, 3, 16, 16)
    graph = pp.trace(model, x)
    assert abs(graph.macs_total - torch_macs(model, x)) <= 0.01 * graph.macs_total
    assert graph.params() == n_params(model)
    plan = pp.select(model, graph, remove=ratio)
    assert bool(plan) == (ratio > 0)
    pruned = copy.deepcopy(model)
    pp.prune_channels(pruned, graph, plan)
    ref = torch_macs(pruned, x)
    assert abs(graph.macs(plan) - ref) <= 0.01 * max(ref, 1)
    assert pp.profile(pruned, x).macs == graph.macs(plan)
    assert graph.params(plan) == n_params(pruned)
    if ratio:
        assert graph.macs(plan) < graph.macs_total


def test_macs_monotone_in_ratio() -> None:
    """Removing more channels never increases the predicted MACs or params."""
    model = Toy().eval()
    graph = pp.trace(model, torch.randn(1, 3, 16, 16))
    macs = [graph.macs(pp.select(model, graph, remove=r)) for r in (0.0, 0.2, 0.4, 0.6, 0.8)]
    params = [graph.params(pp.select(model, graph, remove=r)) for r in (0.0, 0.2, 0.4, 0.6, 0.8)]
    assert macs == sorted(macs, reverse=True) and macs[0] > macs[-1]
    assert params == sorted(params, reverse=True) and params[0] > params[-1]


class Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, 2, 4).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        y = F.scaled_dot_product_attention(q, k, v)
        return y.transpose(1, 2).reshape(b, n, 8) @ x.transpose(1, 2)


def test_attention_and_matmul_macs() -> None:
    """SDPA counts QK^T and AV; activation matmuls count too."""
    x = torch.randn(2, 5, 8)
    b, n, h, d = 2, 5, 2, 4
    expected = b * n * 8 * 24 + 2 * (b * h * n * n * d) + b * n * 8 * n
    assert pp.profile(Attn(), x).macs == expected


def test_empty_plan() -> None:
    """An empty plan changes nothing."""
    model = Toy().eval()
    graph = pp.trace(model, torch.randn(1, 3, 16, 16))
    assert graph.macs({}) == graph.macs() == graph.macs_total
    assert graph.params({}) == graph.params() == n_params(model)


@pytest.mark.parametrize(
    "plan",
    [{"nope:0": [0]}, {"c1.weight:0": [8]}, {"c1.weight:0": [-1]}, {"fc2.weight:0": [0]}],
    ids=["unknown-group", "out-of-range", "negative", "unprunable-group"],
)
def test_macs_of_invalid_plan_raise_plan_error(plan: dict[str, list[int]]) -> None:
    """graph.macs(plan) validates the plan like prune_channels does."""
    model = Toy().eval()
    graph = pp.trace(model, torch.randn(1, 3, 16, 16))
    with pytest.raises(PlanError):
        graph.macs(plan)
    with pytest.raises(PlanError):
        graph.params(plan)


class Unused(nn.Module):
    """A parameterised layer that the traced forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.aux = nn.Linear(8, 100)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


def test_params_count_unused_parameters() -> None:
    """graph.params() agrees with profile().params when a layer is unused."""
    model = Unused().eval()
    x = torch.randn(1, 3, 8, 8)
    assert pp.trace(model, x).params() == pp.profile(model, x).params == n_params(model)
