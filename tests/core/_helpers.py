"""Shared checks for the core test suite: the zero-vs-prune equivalence check and friends."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

import prunepilot as pp
from prunepilot import ChannelGraph, ChannelGroup
from prunepilot.core import call_model

__all__ = [
    "find_group",
    "group_of",
    "hooks_of",
    "member_names",
    "rel_err",
    "run",
    "snapshot",
    "state_equal",
    "zero_check",
    "zero_members",
]


def run(model: nn.Module, x: Any) -> Any:
    """Run ``model`` on ``x`` (tensor or tuple of positional inputs) without autograd."""
    with torch.no_grad():
        return call_model(model, x)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a| (absolute error when ``a`` is all zeros)."""
    diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    scale = a.double().abs().max().item() if a.numel() else 0.0
    return diff / scale if scale > 0 else diff


def _assert_same_outputs(ref: Any, out: Any, tol: float, values: bool) -> None:
    la, sa = tree_flatten(ref)
    lb, sb = tree_flatten(out)
    assert sa == sb, f"output structure changed: {sa} vs {sb}"
    for a, b in zip(la, lb, strict=True):
        assert isinstance(a, torch.Tensor) == isinstance(b, torch.Tensor)
        if not isinstance(a, torch.Tensor):
            continue
        assert a.shape == b.shape, f"output shape changed: {tuple(a.shape)} -> {tuple(b.shape)}"
        assert a.dtype == b.dtype
        if values and a.is_floating_point():
            err = rel_err(a, b)
            assert err <= tol, f"pruned output differs from the zeroed model: rel err {err:.3g}"


def zero_check(
    model: nn.Module,
    x: Any,
    ratio: float = 0.5,
    *,
    tol: float = 1e-4,
    values: bool = True,
    graph: ChannelGraph | None = None,
    plan: dict[str, list[int]] | None = None,
    expect_macs_drop: bool = True,
    zero_inputs: bool = False,
) -> tuple[ChannelGraph, dict[str, list[int]], nn.Module]:
    """Trace (eval mode), select, zero a copy, prune that copy, and compare.

    The physically pruned model must give the zeroed ("masked") model's outputs with the same
    structure and shapes (``values=False`` checks shapes only, for models whose normalisation
    statistics see the zeroed channels), and its MACs must match ``graph.macs(plan)``.

    ``zero_inputs=True`` also zeros the consumers' ("in") slices, for models where a removed
    channel does not read as zero downstream (``sigmoid(0) = 0.5``).

    Returns ``(graph, plan, pruned copy)``; ``model`` is put in eval mode, its tensors untouched.
    """
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if graph is None:
        graph = pp.trace(model, x)
    if plan is None:
        plan = pp.select(model, graph, remove=ratio)
    assert plan, f"nothing selected to prune:\n{graph.summary()}"
    full = run(model, x)

    pruned = copy.deepcopy(model)
    pp.zero_channels(pruned, graph, plan)
    if zero_inputs:
        zero_members(pruned, graph, plan, role="in")
    ref = run(pruned, x)
    _assert_same_outputs(full, ref, tol, values=False)
    pp.prune_channels(pruned, graph, plan)
    out = run(pruned, x)
    _assert_same_outputs(ref, out, tol, values)

    # the pruned tensors really shrank, and the original model is untouched
    prof = pp.profile(pruned, x)
    assert prof.params < sum(p.numel() for p in model.parameters())
    assert state_equal(before, model.state_dict())

    predicted = graph.macs(plan)
    real = prof.macs
    if expect_macs_drop:
        assert predicted < graph.macs_total, "the plan did not reduce MACs"
    assert abs(real - predicted) <= 0.01 * max(predicted, 1), (
        f"graph.macs(plan)={predicted} but the pruned model profiles at {real}"
    )
    n_before = sum(p.numel() for p in model.parameters())
    n_after = sum(p.numel() for p in pruned.parameters())
    assert graph.params() - graph.params(plan) == n_before - n_after
    return graph, plan, pruned


def zero_members(
    model: nn.Module, graph: ChannelGraph, plan: dict[str, list[int]], role: str | None = None
) -> None:
    """Zero the planned channels' slices of every member (of one role, if given), in place."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for gid, remove in plan.items():
            for m in graph.group(gid).members:
                if role is None or m.role == role:
                    idx = torch.tensor(m.indices(remove), dtype=torch.long)
                    tensors[m.name].index_fill_(m.dim, idx, 0)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Cloned state dict, for "was the model left unchanged" checks."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys, shapes and values."""
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


def find_group(graph: ChannelGraph, name: str, dim: int = 0, role: str = "out") -> ChannelGroup:
    """The (unique) group that has member ``name``/``dim`` with ``role``."""
    hits = [
        g
        for g in graph.groups
        if any(m.name == name and m.dim == dim and m.role == role for m in g.members)
    ]
    assert len(hits) == 1, f"{name}:{dim} ({role}) is in {len(hits)} groups:\n{graph.summary()}"
    return hits[0]


def group_of(graph: ChannelGraph, name: str, dim: int = 0) -> ChannelGroup | None:
    """The group producing ``name``/``dim``, or None when the dim is in no group."""
    for g in graph.groups:
        if any(m.name == name and m.dim == dim and m.role == "out" for m in g.members):
            return g
    return None


def member_names(group: ChannelGroup, role: str | None = None) -> set[tuple[str, int]]:
    """``(name, dim)`` of the group's members, optionally of one role."""
    return {(m.name, m.dim) for m in group.members if role is None or m.role == role}


def hooks_of(modules: Iterable[nn.Module]) -> int:
    """Total number of hooks registered on the given modules."""
    n = 0
    for m in modules:
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            n += len(getattr(m, attr, {}))
    return n
