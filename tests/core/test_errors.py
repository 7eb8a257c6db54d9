"""Bad input raises TraceError / PlanError with a useful message and leaves the model alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunepilot as pp
from prunepilot import ChannelGraph, PlanError, TraceError

from ._helpers import snapshot, state_equal


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 8, 3)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv2(F.relu(self.bn1(self.conv1(x))))))


X = torch.randn(1, 3, 8, 8)


@pytest.fixture
def traced() -> tuple[nn.Module, ChannelGraph]:
    model = Net().eval()
    return model, pp.trace(model, X)


def test_bad_input_is_caught_as_value_error(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """A caller's ``except ValueError`` (or ``except PrunepilotError``) catches bad input."""
    model, graph = traced
    for bad in (
        lambda: pp.trace(model, "not a tensor"),
        lambda: pp.prune_channels(model, graph, {"no such group": [0]}),
    ):
        try:
            bad()
        except ValueError as e:
            assert isinstance(e, (TraceError, PlanError))
        else:
            pytest.fail("bad input was accepted")


def test_model_failing_on_inputs() -> None:
    """A forward that raises becomes a TraceError that says so and keeps the cause."""
    model = Net()
    before = snapshot(model)
    with pytest.raises(TraceError, match="failed on the example inputs") as info:
        pp.trace(model, torch.randn(1, 4, 8, 8))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "channels" in str(info.value)
    assert state_equal(before, snapshot(model))
    with pytest.raises(TraceError, match="failed"):
        pp.profile(model, torch.randn(1, 4, 8, 8))
    with pytest.raises(TraceError, match="failed"):
        pp.prune(model, torch.randn(1, 4, 8, 8), remove=0.5)
    assert state_equal(before, snapshot(model))


@pytest.mark.parametrize("model", [lambda t: t, "resnet18", None, nn.Conv2d], ids=str)
def test_non_module(model: Any) -> None:
    """Anything but an nn.Module instance is a TraceError."""
    with pytest.raises(TraceError, match=r"nn\.Module"):
        pp.trace(model, X)
    with pytest.raises(TraceError):
        pp.profile(model, X)


@pytest.mark.parametrize(
    "inputs", [{"x": X}, 3, None, "image", 1.5], ids=["dict", "int", "None", "str", "float"]
)
def test_wrong_input_types(inputs: Any) -> None:
    """Inputs must be a tensor or a tuple/list of positional inputs."""
    model = Net()
    before = snapshot(model)
    with pytest.raises(TraceError):
        pp.trace(model, inputs)
    with pytest.raises(TraceError):
        pp.prune(model, inputs, remove=0.5)
    assert state_equal(before, snapshot(model))


def test_dict_input_wrapped_in_tuple() -> None:
    """The documented fix for a dict input, wrapping it as a 1-tuple, works."""

    class DictIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.net(batch["x"])

    graph = pp.trace(DictIn(), ({"x": X},))
    assert graph.prunable


BAD_PLANS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-group": ({"nope:0": [0]}, "unknown group"),
    "out-of-range": ({"conv1.weight:0": [8]}, "0..7"),
    "negative": ({"conv1.weight:0": [-1]}, "0..7"),
    "repeated": ({"conv1.weight:0": [1, 1]}, "repeat"),
    "float-index": ({"conv1.weight:0": [1.0]}, "0..7"),
    "every-channel": ({"conv1.weight:0": list(range(8))}, "keep at least one"),
    "unprunable-group": ({"head.weight:0": [0]}, "not prunable"),
    "second-group-bad": ({"conv1.weight:0": [0], "conv2.weight:0": [9]}, "conv2"),
}


@pytest.mark.parametrize("case", list(BAD_PLANS))
@pytest.mark.parametrize("fn", [pp.prune_channels, pp.zero_channels], ids=["prune", "zero"])
def test_bad_plan(
    traced: tuple[nn.Module, ChannelGraph], case: str, fn: Callable[..., Any]
) -> None:
    """Invalid plans raise PlanError naming the problem; the model is left unchanged."""
    model, graph = traced
    plan, words = BAD_PLANS[case]
    before = snapshot(model)
    with pytest.raises(PlanError, match=words):
        fn(model, graph, plan)
    with pytest.raises(PlanError):
        graph.check(plan)
    assert state_equal(before, snapshot(model))
    assert model.conv1.out_channels == 8


def test_plan_must_be_a_mapping(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """A plan that is not a mapping is a PlanError."""
    model, graph = traced
    with pytest.raises(PlanError):
        pp.prune_channels(model, graph, [("conv1.weight:0", [0])])  # type: ignore[arg-type]


def test_unknown_group_lookup(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """graph.group() and select(ratios=...) reject unknown ids, suggesting close ones."""
    model, graph = traced
    with pytest.raises(PlanError, match="did you mean"):
        graph.group("conv1.weight:1")
    with pytest.raises(PlanError):
        pp.select(model, graph, ratios={"nope:0": 0.5})


def test_optimizer_untouched_by_bad_plan(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """A refused plan leaves the optimizer state alone too."""
    model, graph = traced
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(X).sum().backward()
    opt.step()
    shapes = {id(p): s["momentum_buffer"].shape for p, s in opt.state.items()}
    with pytest.raises(PlanError):
        pp.prune_channels(model, graph, {"conv1.weight:0": list(range(8))}, optimizer=opt)
    assert {id(p): s["momentum_buffer"].shape for p, s in opt.state.items()} == shapes
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, float("nan"), float("inf")])
def test_ratio_out_of_range(traced: tuple[nn.Module, ChannelGraph], ratio: float) -> None:
    """Ratios are fractions in [0, 1): select, ratios= and prune() refuse others."""
    model, graph = traced
    before = snapshot(model)
    with pytest.raises(PlanError):
        pp.select(model, graph, remove=ratio)
    with pytest.raises(PlanError):
        pp.select(model, graph, ratios={"conv1.weight:0": ratio})
    with pytest.raises(PlanError):
        pp.prune(model, X, remove=ratio)
    assert state_equal(before, snapshot(model))


def test_select_needs_a_ratio(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """select without ratio or ratios is a PlanError."""
    model, graph = traced
    with pytest.raises(PlanError):
        pp.select(model, graph)


def test_ratios_for_unprunable_group(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """Asking to prune a fixed group names its reason."""
    model, graph = traced
    with pytest.raises(PlanError, match="reaches a model output"):
        pp.select(model, graph, ratios={"head.weight:0": 0.5})


def test_unknown_importance(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """Unknown importance names (or score maps missing a group) are PlanErrors."""
    model, graph = traced
    before = snapshot(model)
    with pytest.raises(PlanError, match="importance"):
        pp.select(model, graph, remove=0.5, importance="l3")
    with pytest.raises(PlanError, match="importance"):
        pp.prune(model, X, remove=0.5, importance="taylor")
    with pytest.raises(PlanError):
        pp.select(model, graph, remove=0.5, importance={"conv1.weight:0": [0.0] * 8})
    assert state_equal(before, snapshot(model))


@pytest.mark.parametrize("kwargs", [{"round_to": 0}, {"min_channels": 0}, {"round_to": -8}])
def test_bad_rounding(traced: tuple[nn.Module, ChannelGraph], kwargs: dict[str, int]) -> None:
    """round_to and min_channels must be at least 1."""
    model, graph = traced
    with pytest.raises(PlanError):
        pp.select(model, graph, remove=0.5, **kwargs)


def test_model_changed_since_tracing(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """Applying a graph to a model whose shapes changed is a PlanError; nothing changes."""
    model, graph = traced
    pp.prune_channels(model, graph, {"conv1.weight:0": [0]})
    before = snapshot(model)
    for plan in ({"conv1.weight:0": [1]}, {"conv2.weight:0": [1]}):
        with pytest.raises(PlanError, match="changed since tracing"):
            pp.prune_channels(model, graph, plan)
        assert state_equal(before, snapshot(model))
    # a different model of the same architecture but other widths
    other = Net(width=6).eval()
    before = snapshot(other)
    with pytest.raises(PlanError):
        pp.prune_channels(other, graph, {"conv1.weight:0": [1]})
    assert state_equal(before, snapshot(other))


def test_graph_of_another_model() -> None:
    """A graph applied to a model without the named tensors is a PlanError."""
    graph = pp.trace(Net().eval(), X)
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    before = snapshot(other)
    with pytest.raises(PlanError):
        pp.prune_channels(other, graph, {"conv1.weight:0": [1]})
    assert state_equal(before, snapshot(other))


def test_zero_channels_on_changed_model(traced: tuple[nn.Module, ChannelGraph]) -> None:
    """zero_channels on a model whose shapes changed since tracing raises PlanError."""
    model, graph = traced
    pp.prune_channels(model, graph, {"conv1.weight:0": [0]})
    before = snapshot(model)
    with pytest.raises(PlanError):
        pp.zero_channels(model, graph, {"conv1.weight:0": [1]})
    assert state_equal(before, snapshot(model))


def test_uninitialized_lazy_modules_are_refused_with_what_to_do() -> None:
    """Lazy layers get their sizes from a first forward that trace must not run: the error
    says which module and what to run; after that forward the model traces."""
    model = nn.Sequential(
        nn.LazyConv2d(8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 4)
    )
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(TraceError, match=r"lazy module.*'0'.*LazyConv2d.*run model"):
        pp.trace(model, x)
    with pytest.raises(TraceError, match="lazy module"):
        pp.prune(model, x, remove=0.5)
    model(x)  # materializes the lazy layer (it becomes a plain Conv2d)
    graph = pp.trace(model, x)
    assert [g.channels for g in graph.prunable] == [8]
