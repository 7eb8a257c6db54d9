"""Physically remove channels: slice tensors, gradients and optimizer state in place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ._graph import ChannelGraph
from ._modules import sync_module_attrs
from .errors import PlanError

__all__ = ["prune_channels", "removals", "set_module_sizes", "zero_channels"]


def removals(
    graph: ChannelGraph, plan: Mapping[str, Sequence[int]]
) -> dict[str, dict[int, list[int]]]:
    """Validate ``plan`` and turn it into ``{tensor name: {dim: positions to remove}}``."""
    graph.check(plan)
    out: dict[str, dict[int, set[int]]] = {}
    for gid, remove in plan.items():
        if not remove:
            continue
        for m in graph.group(gid).members:
            out.setdefault(m.name, {}).setdefault(m.dim, set()).update(m.indices(remove))
    for name, dims in out.items():
        for d, pos in dims.items():
            if len(pos) >= graph.shapes[name][d]:
                raise PlanError(f"the plan removes every position of {name} dim {d}")
    return {n: {d: sorted(p) for d, p in dims.items()} for n, dims in out.items()}


def _tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str, torch.Tensor, bool]]:
    found: dict[str, tuple[nn.Module, str, torch.Tensor, bool]] = {}
    stack: list[tuple[str, nn.Module]] = [("", model)]  # named_modules(remove_duplicate=False)
    while stack:
        mname, mod = stack.pop()
        prefix = mname + "." if mname else ""
        for pname, p in mod._parameters.items():
            if p is not None:
                found.setdefault(prefix + pname, (mod, pname, p, True))
        for bname, b in mod._buffers.items():
            if b is not None:
                found.setdefault(prefix + bname, (mod, bname, b, False))
        stack.extend((prefix + n, c) for n, c in reversed(mod._modules.items()) if c is not None)
    return found


def _check_fresh(
    graph: ChannelGraph,
    found: Mapping[str, tuple[nn.Module, str, torch.Tensor, bool]],
    names: list[str],
) -> None:
    for name in names:
        if name not in found:
            raise PlanError(f"the model has no tensor {name!r}; was the graph traced from it?")
        if tuple(found[name][2].shape) != graph.shapes[name]:
            raise PlanError(
                f"{name} has shape {tuple(found[name][2].shape)} but the graph recorded "
                f"{graph.shapes[name]}: the model changed since tracing; trace it again"
            )


def prune_channels(
    model: nn.Module,
    graph: ChannelGraph,
    plan: Mapping[str, Sequence[int]],
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Remove the planned channels from ``model`` in place and return it.

    Args:
        model: the model ``graph`` was traced from (unchanged since).
        graph: its channel graph.
        plan: ``{group_id: [channel indices to remove]}``.
        optimizer: if given, its per-parameter state (momentum, Adam moments) is sliced too,
            so training continues without rebuilding it.

    Raises:
        PlanError: unknown groups or channels, broken block constraints, or a plan that
            would empty a layer. The model is left unchanged.
    """
    cuts = removals(graph, plan)
    found = _tensors(model)
    _check_fresh(graph, found, list(cuts))
    for name, dims in cuts.items():
        mod, attr, t, is_param = found[name]
        keep_idx = {
            d: torch.tensor(
                sorted(set(range(t.shape[d])) - set(pos)), dtype=torch.long, device=t.device
            )
            for d, pos in dims.items()
        }

        def cut(x: torch.Tensor, keep: dict[int, torch.Tensor] = keep_idx) -> torch.Tensor:
            for d, k in keep.items():
                x = x.index_select(d, k.to(x.device))
            return x.contiguous()

        if is_param:
            assert isinstance(t, nn.Parameter)
            old_shape = t.shape
            with torch.no_grad():
                t.data = cut(t.data)
            if t.grad is not None:
                t.grad = cut(t.grad)
            if optimizer is not None and t in optimizer.state:
                state = optimizer.state[t]
                for key, v in list(state.items()):
                    if isinstance(v, torch.Tensor) and v.shape == old_shape:
                        state[key] = cut(v)
        else:
            mod._buffers[attr] = cut(t)
    sync_module_attrs(model)
    set_module_sizes(model, graph, plan)
    return model


def set_module_sizes(
    model: nn.Module, graph: ChannelGraph, plan: Mapping[str, Sequence[int]]
) -> None:
    """Update the size attributes that follow no tensor (an instance norm without weights
    or statistics: its ``num_features``) to the channels ``plan`` leaves them."""
    for (mname, attr), value in graph._module_sizes(plan).items():
        object.__setattr__(model.get_submodule(mname), attr, value)  # a plain value


def zero_channels(
    model: nn.Module, graph: ChannelGraph, plan: Mapping[str, Sequence[int]]
) -> nn.Module:
    """Zero the producing ("out") slices of the planned channels, without changing shapes.

    The result emulates the pruned model cheaply: for models without normalisation across
    the pruned dimension, its output equals the physically pruned model's output.
    """
    graph.check(plan)
    found = _tensors(model)
    _check_fresh(graph, found, [m.name for gid in plan for m in graph.group(gid).members])
    with torch.no_grad():
        for gid, remove in plan.items():
            if not remove:
                continue
            for m in graph.group(gid).members:
                if m.role != "out":
                    continue
                t = found[m.name][2]
                idx = torch.tensor(m.indices(remove), dtype=torch.long, device=t.device)
                t.index_fill_(m.dim, idx, 0)
    return model
