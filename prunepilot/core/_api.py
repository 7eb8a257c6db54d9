"""The core's entry points: `trace` a model into channel groups, `prune` it, `profile` it.

Verification (pruning copies to find groups the model's code fixes) is in `_verify`; meta
copies in `_metacopy`; calling a model on example inputs in `_inputs`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map

from ._analysis import Analysis, analyze
from ._capture import capture
from ._fastmeta import MetaRunner
from ._graph import ChannelGraph, build_graph
from ._inputs import as_inputs
from ._metacopy import meta_copy
from ._modules import all_modules
from ._profile import Profile, count_params
from ._prune import prune_channels
from ._select import removal, select
from ._verify import Traced, verify_groups
from .errors import TraceError

__all__ = ["PruneReport", "profile", "prune", "trace"]

log = logging.getLogger("prunepilot.core")


def _to_meta(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """The inputs with every tensor moved to the meta device (shapes only)."""
    return tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, inputs)


def _run(model: Any, example_inputs: Any, modules: bool = False, watch: bool = False) -> Traced:
    """Capture the model's ops: on the meta device when it runs there (shapes only, no
    compute), else on real tensors (data-dependent models, e.g. detection). ``modules``:
    note the module running each op (per-module MACs); ``watch``: note whether the
    forward's code reads or passes sizes and the numbers it passes as data
    (`Capture.blind`, `Capture.values`; meta runs only)."""
    if not isinstance(model, nn.Module):
        raise TraceError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    inputs = as_inputs(example_inputs)
    mods = all_modules(model)
    try:
        runner = MetaRunner()
        meta_model, meta_inputs = meta_copy(model, mods), _to_meta(inputs)
        cap = capture(meta_model, meta_inputs, runner=runner, modules=modules, watch=watch)
        cap.meta = True
        return Traced(inputs, cap, meta_model, meta_inputs, runner, mods)
    except TraceError:  # lazy modules (`_refuse_lazy`): no run on real tensors either
        raise
    except Exception as e:  # any failure on meta: fall back to a real run
        log.debug("meta capture failed (%s: %s); running on real tensors", type(e).__name__, e)
    try:  # not watched: on real tensors the code also sees data, which pruning changes
        cap = capture(model, inputs, modules=modules)
    except Exception as e:  # the user's forward failed: say so, keep the cause
        raise TraceError(
            f"the model failed on the example inputs ({type(e).__name__}: {e}); pass inputs "
            "that model(*example_inputs) accepts"
        ) from e
    return Traced(inputs, cap, modules=mods)


def _ignored_names(model: nn.Module, ignore: Iterable[nn.Module | str]) -> set[str]:
    names: set[str] = set()
    ignore = list(ignore)
    if not ignore:
        return names
    mods = dict(model.named_modules())
    tensors = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    for item in ignore:
        if isinstance(item, nn.Module):
            prefix = next((n for n, m in mods.items() if m is item), None)
            if prefix is None:
                raise TraceError(f"ignored module {type(item).__name__} is not part of the model")
            names.update(t for t in tensors if prefix == "" or t.startswith(prefix + "."))
        elif isinstance(item, str):
            hit = {
                t
                for t in tensors
                if fnmatch.fnmatchcase(t, item) or fnmatch.fnmatchcase(t.rsplit(".", 1)[0], item)
            }
            if not hit:
                raise TraceError(f"ignore pattern {item!r} matches no module or parameter")
            names.update(hit)
        else:
            raise TraceError(f"ignore takes modules or name patterns; got {type(item).__name__}")
    return names


def _pin_ignored(an: Analysis, names: set[str]) -> None:
    inward = np.concatenate(an.atoms.inward) if an.atoms.inward else np.zeros(0, np.int64)
    inward_set = set(inward.tolist())
    for node, dims in an.param_atoms.items():
        if an.cap.names[node] not in names:
            continue
        for d, a in enumerate(dims):
            role = an.adopted.get((node, d))  # shared atoms: the role noted on adoption
            consumes = role[0] if role is not None else bool(set(a.tolist()) & inward_set)
            if not consumes:
                an.atoms.pin(a, "its layer is ignored")


_FIXED_MODULES: dict[type[nn.Module], str] = {
    nn.MultiheadAttention: "nn.MultiheadAttention ties its embedding width to its internal width",
}


def _pin_fixed_modules(model: nn.Module, an: Analysis, mods: list[nn.Module] | None = None) -> None:
    """Pin every tensor of modules whose forward checks sizes against fixed attributes
    (``mods``: the model's `all_modules` when the caller has them)."""
    kinds = tuple(_FIXED_MODULES)
    if not any(isinstance(m, kinds) for m in (all_modules(model) if mods is None else mods)):
        return
    fixed = [
        (prefix, mod, reason)
        for prefix, mod in model.named_modules()
        for t, reason in _FIXED_MODULES.items()
        if isinstance(mod, t)
    ]
    by_name = {an.cap.names[n]: dims for n, dims in an.param_atoms.items()}
    for prefix, mod, reason in fixed:
        for pname, _ in mod.named_parameters(prefix=prefix):
            for a in by_name.get(pname, []):
                an.atoms.pin(a, reason)


def trace(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignore: Iterable[nn.Module | str] = (),
    verify: bool = True,
) -> ChannelGraph:
    """Find the coupled channel groups of ``model``; the model is not modified.

    Args:
        model: any ``nn.Module``, in train or eval mode.
        example_inputs: a tensor or a tuple of positional inputs for ``model(*inputs)``.
        ignore: modules or name patterns (``fnmatch`` on parameter or module names) whose
            output channels must never be removed.
        verify: prune a copy by one channel per group and run it; groups that break the
            forward (sizes fixed by the model's own code) or change a number its code
            derives from a size (a scale of ``1 / sqrt(channels)``, a branch on a channel
            count) become unprunable with a reason. Skipped when the forward's own code
            neither reads a tensor's size nor passes one to an op (watched while tracing):
            it then runs unchanged on any pruned copy.

    Returns:
        The `ChannelGraph`: groups, members, constraints and analytic MACs/params.

    Raises:
        TraceError: the model is not a module, the inputs are of the wrong type, or the
            model fails on them.
    """
    with _gc_paused():
        return _trace(model, example_inputs, ignore, verify)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: tracing allocates many small objects (op records,
    refs) that refcounting frees, and collections triggered by them (traversing every live
    object of the process) can cost more than the trace itself."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _trace(
    model: nn.Module, example_inputs: Any, ignore: Iterable[nn.Module | str], verify: bool
) -> ChannelGraph:
    """`trace`'s work (called with the garbage collector paused)."""
    run = _run(model, example_inputs, watch=verify)
    ignored = _ignored_names(model, ignore)
    an = analyze(run.cap)
    if ignored:
        _pin_ignored(an, ignored)
    _pin_fixed_modules(model, an, run.modules)
    params = run.cap.params  # the model's parameter shapes (the capture ran it or its copy)
    graph = build_graph(an, params)
    if an.unknown_ops:
        log.info("ops without a channel rule (their channels are kept): %s", an.unknown_ops)
    if verify and graph.prunable and run.cap.blind:
        log.debug("verification skipped: the forward's code never reads nor passes a size")
    elif verify and graph.prunable:
        failures = verify_groups(model, run, graph)
        if failures:
            for g in graph.groups:
                if g.id in failures:
                    # its producers' dims: they hold its channels alone (a consumer's dim may
                    # also hold other groups', e.g. a convolution reading a concatenation)
                    names = {m.name: m.dim for m in g.members if m.role == "out"}
                    for node, dims in an.param_atoms.items():
                        d = names.get(an.cap.names[node])
                        if d is not None:
                            an.atoms.pin(dims[d], failures[g.id])
            graph = build_graph(an, params)
    return graph


def profile(model: nn.Module, example_inputs: Any) -> Profile:
    """Count MACs (conv, linear, matmul, attention) and parameters of one forward pass."""
    an = analyze(_run(model, example_inputs, modules=True).cap)
    by_module: dict[str, int] = {}
    for t in an.mac_terms:
        by_module[t.module] = by_module.get(t.module, 0) + t.macs
    return Profile(macs=sum(by_module.values()), params=count_params(model), by_module=by_module)


@dataclass
class PruneReport:
    """What `prune` did: the plan applied and MACs/params before and after."""

    graph: ChannelGraph
    plan: dict[str, list[int]]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(self.macs_before, 1)

    def __str__(self) -> str:
        removed = sum(len(v) for v in self.plan.values())
        return (
            f"pruned {removed} channels in {len(self.plan)} groups: MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} ({self.macs_ratio:.1%}), params {self.params_before:,} -> "
            f"{self.params_after:,} ({self.params_after / max(self.params_before, 1):.1%})"
        )


def prune(
    model: nn.Module,
    example_inputs: Any,
    *,
    remove: float | None = None,
    ratios: Mapping[str, float] | None = None,
    importance: str = "l2",
    round_to: int = 1,
    ignore: Iterable[nn.Module | str] = (),
    min_channels: int = 1,
    ratio: float | None = None,
) -> PruneReport:
    """Trace, choose channels by importance and remove them in place.

    Args:
        model: the model to prune (modified in place).
        example_inputs: a tensor or a tuple of positional inputs.
        remove: fraction of channels to remove from every prunable group.
        ratios: fraction to remove per group id.
        importance: ``"l1"``, ``"l2"`` or ``"random"``.
        round_to: keep layer widths multiples of this.
        ignore: modules or name patterns never to prune.
        min_channels: the fewest channels any group keeps.
        ratio: deprecated name of ``remove`` (a ``DeprecationWarning``; removed in the next
            release: "ratio" reads as the fraction kept elsewhere).

    Raises:
        PlanError: both ``remove`` and ``ratio`` given, or a bad fraction or importance.
    """
    remove = removal(remove, ratio, "prune")
    graph = trace(model, example_inputs, ignore=ignore)
    plan = select(
        model,
        graph,
        remove=remove,
        ratios=ratios,
        importance=importance,
        round_to=round_to,
        min_channels=min_channels,
    )
    before_params = count_params(model)
    prune_channels(model, graph, plan)
    after = profile(model, example_inputs)
    return PruneReport(graph, plan, graph.macs_total, after.macs, before_params, after.params)
