"""prune_channels(..., optimizer=opt) slices per-parameter optimizer state with the weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunepilot as pp
from prunepilot import ChannelGraph

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "adamw-amsgrad": lambda ps: torch.optim.AdamW(ps, lr=1e-3, amsgrad=True),
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.adaptive_avg_pool2d(F.relu(self.conv2(y)), 2)
        return self.fc(y.flatten(1))


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> float:
    opt.zero_grad()
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    return float(loss.detach())


def _kept(graph: ChannelGraph, plan: dict[str, list[int]], shapes: dict[str, torch.Size]) -> dict:
    """{parameter name: {dim: kept positions}} implied by the plan (buffers left out)."""
    removed: dict[str, dict[int, set[int]]] = {}
    for gid, channels in plan.items():
        for m in graph.group(gid).members:
            removed.setdefault(m.name, {}).setdefault(m.dim, set()).update(m.indices(channels))
    return {
        name: {d: [i for i in range(shapes[name][d]) if i not in pos] for d, pos in dims.items()}
        for name, dims in removed.items()
        if name in shapes
    }


def _slice(t: torch.Tensor, kept: dict[int, list[int]]) -> torch.Tensor:
    for d, idx in kept.items():
        t = t.index_select(d, torch.tensor(idx, dtype=torch.long))
    return t


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_is_sliced(name: str) -> None:
    """State tensors take the new shapes and equal the old state's kept slices."""
    model = Net().train()
    x = torch.randn(4, 3, 8, 8)
    opt = OPTIMIZERS[name](list(model.parameters()))
    for _ in range(2):
        _step(model, opt, x)
    params = dict(model.named_parameters())
    old_state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in params.items()}
    old_shapes = {n: p.shape for n, p in params.items()}

    graph = pp.trace(model, x)
    plan = pp.select(model, graph, remove=0.5)
    assert set(plan) == {"conv1.weight:0", "conv2.weight:0"}
    pp.prune_channels(model, graph, plan, optimizer=opt)
    kept = _kept(graph, plan, old_shapes)
    assert set(kept) >= {"conv1.weight", "bn1.weight", "conv2.weight", "fc.weight"}

    for n, p in model.named_parameters():
        assert p is params[n]  # same Parameter objects: the optimizer still holds them
        state = opt.state[p]
        assert state.keys() == old_state[n].keys()
        for key, v in state.items():
            old = old_state[n][key]
            if old.shape != old_shapes[n]:  # e.g. Adam's scalar step
                assert torch.equal(v, old)
                continue
            assert v.shape == p.shape, f"{n}.{key}: {tuple(v.shape)} vs {tuple(p.shape)}"
            assert torch.equal(v, _slice(old, kept.get(n, {})))
        assert p.grad is not None and p.grad.shape == p.shape

    assert model.fc.weight.shape == (5, 16) and model.fc.bias.shape == (5,)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = _step(model, opt, x)
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    for p in model.parameters():
        for v in opt.state[p].values():
            assert v.shape in (p.shape, torch.Size([]))


def test_optimizer_without_state_is_fine() -> None:
    """An optimizer that never stepped (empty state) is accepted and works afterwards."""
    model = Net()
    x = torch.randn(2, 3, 8, 8)
    opt = torch.optim.Adam(model.parameters())
    graph = pp.trace(model, x)
    pp.prune_channels(model, graph, pp.select(model, graph, remove=0.5), optimizer=opt)
    assert all(len(opt.state[p]) == 0 for p in model.parameters())
    _step(model, opt, x)
    assert opt.state[model.conv1.weight]["exp_avg"].shape == (4, 3, 3, 3)
