"""The guard on the forward's own code: verification is skipped only when that code never
reads or passes a size, and catches sizes the code turns into data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import prunepilot as pp
from prunepilot.core import _api, _capture
from prunepilot.core._guard import ShapeGuard, first_difference

from ._helpers import zero_check


def _blind(fn: Callable[[], Any]) -> bool:
    with ShapeGuard() as guard:
        fn()
    return guard.blind


def test_size_free_calls_leave_the_guard_blind() -> None:
    x, w = torch.randn(2, 4, 6, 6), torch.randn(4, 4, 3, 3)
    calls: list[Callable[[], Any]] = [
        lambda: F.relu(x + 1) * x.sigmoid() - 2 * x,
        lambda: torch.flatten(F.adaptive_avg_pool2d(x, 1), 1),
        lambda: torch.cat([x, x], 1).mean((2, 3), keepdim=True),
        lambda: F.conv2d(x, w, padding=1),
        lambda: F.max_pool2d(x, 3, stride=2, padding=1),
        lambda: F.dropout(x, 0.1, training=False),
        lambda: (x.dtype, x.device, x.ndim, x.dim(), x.requires_grad),
    ]
    for call in calls:
        assert _blind(call)


def test_reading_or_passing_a_size_is_seen() -> None:
    x, w = torch.randn(2, 4, 6, 6), torch.randn(4, 2, 3, 3)
    calls: list[Callable[[], Any]] = [
        lambda: x.shape,
        lambda: x.size(1),
        lambda: len(x),
        lambda: x.numel(),
        lambda: x.view(2, -1),
        lambda: x.reshape(2, 4, 36),
        lambda: x[:, :2],
        lambda: torch.zeros(4),
        lambda: F.conv2d(x, w, padding=1, groups=2),
        lambda: F.layer_norm(x, (6,)),
        lambda: x.chunk(2, 1),
    ]
    for call in calls:
        with ShapeGuard() as guard:
            call()
        assert not guard.blind and guard.culprit


class _SEResidual(nn.Module):
    """Residual blocks with squeeze-excitation and a concatenation: no size in its code."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.se1, self.se2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.side = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(14, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = F.silu(self.bn(self.dw(x)))
        y = y * torch.sigmoid(self.se2(F.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = y + x
        z = torch.cat([y, F.relu(self.side(y))], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(z, 1), 1))


class _ReadsShape(_SEResidual):
    """The same model, but its code reads a size (for nothing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3
        return super().forward(x)


def _groups(graph: pp.ChannelGraph) -> list[tuple[Any, ...]]:
    return [
        (g.id, g.channels, g.prunable, g.reason, g.blocks, [(m.name, m.dim) for m in g.members])
        for g in graph.groups
    ]


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the verification forwards `trace` runs."""
    calls: list[int] = []
    real = _api.verify_groups

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(_api, "verify_groups", counted)
    return calls


class _NeverBlind(ShapeGuard):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.blind = False
        return super().__torch_function__(func, types, args, kwargs)


@pytest.mark.parametrize(
    "make",
    [
        _SEResidual,
        lambda: torchvision.models.resnet18(),
        lambda: torchvision.models.mobilenet_v3_small(),
        lambda: torchvision.models.densenet121(),
    ],
    ids=["se_residual", "resnet18", "mobilenet_v3_small", "densenet121"],
)
def test_a_size_blind_model_skips_verification_with_the_same_groups(
    make: Callable[[], nn.Module], verify_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(1, 3, 32, 32) if isinstance(model, _SEResidual) else torch.randn(1, 3, 64, 64)
    skipped = pp.trace(model, x)
    assert verify_calls == []
    monkeypatch.setattr(_capture, "ShapeGuard", _NeverBlind)
    verified = pp.trace(model, x)
    assert verify_calls == [1]
    assert _groups(skipped) == _groups(verified)
    if isinstance(model, _SEResidual):
        zero_check(model, x, graph=skipped)


def test_a_model_reading_a_size_is_verified(verify_calls: list[int]) -> None:
    pp.trace(_ReadsShape().eval(), torch.randn(1, 3, 16, 16))
    assert verify_calls == [1]


def test_no_guard_under_another_torch_function_mode(verify_calls: list[int]) -> None:
    """A user's torch-function mode (here a default device) could hide calls: verify."""
    model = _SEResidual().eval()
    with torch.device("cpu"):
        graph = pp.trace(model, torch.randn(1, 3, 16, 16))
    assert verify_calls == [1]
    assert graph.prunable


# ---------------------------------------------------------------------------------------------
# verification compares the numbers the code passes as data
class _ScaledBySize(nn.Module):
    """A size read turned into data (RAFT's correlation scaling): pruning changes the output."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(14, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x))
        if self.how == "tensor":
            y = y / torch.sqrt(torch.tensor(y.shape[1]))
        elif self.how == "scalar":
            y = y * y.shape[1] ** -0.5
        elif self.how == "branch":
            y = y * 2 if y.shape[1] >= 8 else y + 1
        else:  # only shapes: nothing changes meaning
            y = y.view(y.shape[0], y.shape[1], -1).view_as(y)
        return self.head(torch.cat([y, F.relu(self.b(x))], 1))


@pytest.mark.parametrize("how", ["tensor", "scalar", "branch"])
def test_channels_whose_count_the_code_uses_as_data_are_pinned(how: str) -> None:
    model = _ScaledBySize(how).eval()
    x = torch.randn(2, 3, 8, 8)
    graph = pp.trace(model, x)
    g = graph.group("a.weight:0")
    assert not g.prunable and g.reason and "changes what the model computes" in g.reason
    assert ("another path" in g.reason) == (how == "branch")
    assert graph.group("b.weight:0").prunable
    zero_check(model, x, graph=graph)  # the pruned model computes what the zeroed one does


def test_sizes_used_only_as_sizes_keep_their_channels() -> None:
    model = _ScaledBySize("shape").eval()
    x = torch.randn(2, 3, 8, 8)
    graph = pp.trace(model, x)
    assert graph.group("a.weight:0").prunable
    zero_check(model, x, graph=graph)


def test_first_difference_names_the_call() -> None:
    div = torch.Tensor.div
    assert first_difference([(div, (8.0,))], [(div, (8.0,))]) is None
    assert first_difference([(div, (float("nan"),))], [(div, (float("nan"),))]) is None
    changed = first_difference([(div, (8.0,))], [(div, (7.0,))])
    assert changed and "Tensor.div: (8.0,) becomes (7.0,)" in changed
    assert "another path" in (first_difference([(div, (1,))], [(torch.add, (1,))]) or "")
    assert "another path" in (first_difference([(div, (1,))], []) or "")


class _DataDependent(nn.Module):
    """Runs on real tensors only (it reads a value): its numbers follow the data."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x))
        k = int((y > 0).sum().item()) % 3 + 1  # a count of the data: pruning changes it
        return self.head(y * k)


def test_numbers_from_data_are_not_compared() -> None:
    """On real tensors pruning changes the data and every number drawn from it: only
    meta-device traces (which see no data) compare numbers."""
    torch.manual_seed(0)
    graph = pp.trace(_DataDependent().eval(), torch.randn(2, 3, 8, 8))
    assert graph.group("a.weight:0").prunable
