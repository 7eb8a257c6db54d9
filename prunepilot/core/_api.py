"""The core's entry points: trace, prune, profile."""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import gc
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from ._analysis import Analysis, analyze
from ._capture import Capture, capture
from .errors import PlanError, TraceError
from ._fastleaf import install
from ._fastmeta import MetaMode, MetaRunner, meta_empty
from ._graph import ChannelGraph, ChannelGroup, build_graph
from ._guard import ShapeGuard, can_watch, first_difference
from ._modules import all_modules, sync_modules
from ._profile import Profile, count_params
from ._prune import prune_channels, set_module_sizes
from ._select import select

__all__ = ["PruneReport", "profile", "prune", "trace"]

log = logging.getLogger("prunepilot.core")
_META = torch.device("meta")


def _as_inputs(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TraceError(
        "example_inputs must be a tensor or a tuple of positional inputs; got "
        f"{type(example_inputs).__name__} (for a model taking one dict or list, pass (inputs,))"
    )


def _to_meta(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, inputs)


@dataclass
class _Traced:
    """A capture and what verification can reuse from it."""

    inputs: tuple[Any, ...]
    cap: Capture
    meta_model: nn.Module | None = None  # the meta copy the capture ran (meta only)
    meta_inputs: tuple[Any, ...] = ()
    runner: MetaRunner | None = None
    modules: list[nn.Module] = field(default_factory=list)  # the model's, as all_modules


def _run(model: Any, example_inputs: Any, modules: bool = False, watch: bool = False) -> _Traced:
    """Capture the model's ops: on the meta device when it runs there (shapes only, no
    compute), else on real tensors (data-dependent models, e.g. detection). ``modules``:
    note the module running each op (per-module MACs); ``watch``: note whether the
    forward's code reads or passes sizes and the numbers it passes as data
    (`Capture.blind`, `Capture.values`; meta runs only)."""
    if not isinstance(model, nn.Module):
        raise TraceError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    inputs = _as_inputs(example_inputs)
    mods = all_modules(model)
    try:
        runner = MetaRunner()
        meta_model, meta_inputs = _meta_copy(model, mods), _to_meta(inputs)
        cap = capture(meta_model, meta_inputs, runner=runner, modules=modules, watch=watch)
        cap.meta = True
        return _Traced(inputs, cap, meta_model, meta_inputs, runner, mods)
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
    return _Traced(inputs, cap, modules=mods)


def _refuse_lazy(model: nn.Module, mods: list[nn.Module]) -> None:
    """Lazy modules get their sizes from the first forward, which tracing must not run on
    the user's model (it never modifies it): ask for that forward first."""

    def uninitialized(m: nn.Module) -> bool:
        tensors = (*m._parameters.values(), *m._buffers.values())
        return any(isinstance(t, _LAZY) for t in tensors)

    if not any(uninitialized(m) for m in mods):
        return
    found = [(n, type(m).__name__) for n, m in model.named_modules() if uninitialized(m)]
    name, kind = found[0]
    raise TraceError(
        f"{len(found)} lazy module(s) are not initialized yet (e.g. {name or 'the model'!r}, "
        f"a {kind}); run model(*example_inputs) once so they get their sizes, then trace"
    )


_LAZY = nn.parameter.UninitializedTensorMixin  # type: ignore[attr-defined]  # is_lazy's test


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


def _same_structure(ref: Any, out: Any, data_dependent: bool = False) -> bool:
    """Whether ``out`` has the structure, ranks, dtypes and shapes of ``ref``; leading sizes
    are free for outputs of rank 1 and 2, and for all outputs of a ``data_dependent`` model
    (one that ran on real tensors: its detections, keypoints and masks come one per box,
    and how many boxes a random model finds changes with any of its weights)."""
    la, sa = tree_flatten(ref)
    lb, sb = tree_flatten(out)
    if sa != sb:
        return False
    for a, b in zip(la, lb, strict=True):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return False
        if isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor)
            if a.ndim != b.ndim or a.dtype != b.dtype:
                return False
            # Leading sizes of small-rank outputs may be data dependent (detections).
            whole = a.ndim >= 3 and not data_dependent
            if (whole and a.shape != b.shape) or a.shape[1:] != b.shape[1:]:
                return False
    return True


def _probe_plan(groups: Sequence[ChannelGroup]) -> dict[str, list[int]]:
    plan: dict[str, list[int]] = {}
    for g in groups:
        if g._cells:
            remove = [c for cell, k in zip(g.cells, g.per_cell(1), strict=True) for c in cell[:k]]
        else:
            remove = [0]  # one block: the smallest step removes one channel
        try:
            g.check(remove)
        except PlanError:
            continue
        plan[g.id] = remove
    return plan


_make_subclass = torch.Tensor._make_subclass
# A module's hook registries (the mappings of a fresh module's state but its tensor and
# submodule tables), as the read-only empty stand-ins meta copies share. (Its set of
# non-persistent buffer names stays its own: assigning a buffer updates it.)
_EMPTY_REGISTRIES: dict[str, Any] = {
    k: MappingProxyType({})
    for k, v in nn.Module().__dict__.items()
    if isinstance(v, dict) and k not in ("_parameters", "_buffers", "_modules")
}
_REGISTRY_KEYS = frozenset(_EMPTY_REGISTRIES)
# Values deepcopy returns unchanged; module dicts holding tensors or submodules; containers
# copied as new empty ones when empty (module hook registries).
_ATOMIC = frozenset(
    {int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.memory_format}
)
_TENSOR_DICTS = frozenset({"_parameters", "_buffers", "_modules"})
_CONTAINERS = frozenset({dict, OrderedDict, set})
# Classes defining any of these copy themselves their own way (deepcopy is used for them).
_CUSTOM_COPY = ("__deepcopy__", "__reduce_ex__", "__reduce__", "__getstate__", "__slots__")
_PLAIN_MODULE: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
# Module.__setstate__ is ``__dict__.update`` plus adding hook registries that old pickles
# lack (a subset of these keys); a convolution's also adds a missing ``padding_mode``.
_SETSTATE_KEYS = frozenset(nn.Module().__dict__)
_DICT_SETSTATE: dict[Any, frozenset[str]] = {
    nn.Module.__setstate__: _SETSTATE_KEYS,
    nn.modules.conv._ConvNd.__setstate__: _SETSTATE_KEYS | {"padding_mode"},
}


def _plain_module(cls: type) -> bool:
    """Whether ``copy.deepcopy`` copies instances of ``cls`` as it does plain modules:
    ``Module.__getstate__`` (its ``__dict__``) then ``__setstate__``."""
    got = _PLAIN_MODULE.get(cls)
    if got is None:
        got = _PLAIN_MODULE[cls] = not any(
            name in vars(k)
            for k in cls.__mro__
            if k is not object and k is not nn.Module
            for name in _CUSTOM_COPY
        )
    return got


def _meta_copy(model: nn.Module, mods: list[nn.Module] | None = None) -> nn.Module:
    """A copy whose tensors live on the meta device: shapes only, no data, no compute.

    Equivalent to ``copy.deepcopy`` with every parameter and buffer replaced by an empty meta
    tensor, but copies standard modules attribute by attribute (plain values are shared, as
    deepcopy would return them unchanged), which is several times faster. A module's hook
    registries, when all empty, become shared read-only empty ones (`_EMPTY_REGISTRIES`):
    the copies only run forwards, and registering a hook on one fails instead of reaching
    others. Standard leaf modules of the copy get shortcut forwards (`_fastleaf.install`).
    ``mods``: the model's `all_modules` when the caller has them.
    """
    memo: dict[int, Any] = {}
    mods = all_modules(model) if mods is None else mods
    empty_like = torch.empty_like
    for m in mods:
        for p in m._parameters.values():
            if p is not None and id(p) not in memo:
                if type(p) is not nn.Parameter and isinstance(p, _LAZY):
                    _refuse_lazy(model, mods)  # raises: tracing must not initialize them
                # what nn.Parameter(data, requires_grad) returns, without its Python detour
                memo[id(p)] = _make_subclass(
                    nn.Parameter, empty_like(p, device=_META), p.requires_grad
                )
        for b in m._buffers.values():
            if b is not None and id(b) not in memo:
                if type(b) is not torch.Tensor and isinstance(b, _LAZY):
                    _refuse_lazy(model, mods)
                memo[id(b)] = empty_like(b, device=_META)
    if not all(map(_plain_module, set(map(type, mods)))):
        out = copy.deepcopy(model, memo)
        install(all_modules(out))
        return out
    for m in mods:
        memo[id(m)] = object.__new__(type(m))

    def value(k: str, v: Any) -> Any:
        t = type(v)
        if k in _TENSOR_DICTS and isinstance(v, dict):
            if t is dict:
                return {n: None if x is None else memo[id(x)] for n, x in v.items()}
            return t((n, None if x is None else memo[id(x)]) for n, x in v.items())
        return copy.deepcopy(v, memo)

    atomic, containers = _ATOMIC, _CONTAINERS
    registries, empty = _REGISTRY_KEYS, _EMPTY_REGISTRIES
    n_registries = len(registries)
    dict_setstate = _DICT_SETSTATE
    copies = []
    for m in mods:
        own = m.__dict__
        state = own.copy()  # atomic values (and tuples of them) stay shared
        seen = 0  # hook registries found, all empty so far (else -1)
        for k, v in own.items():
            t = type(v)
            if t in atomic or (t is tuple and atomic.issuperset(map(type, v))):
                continue
            if k in registries:
                if v:
                    seen = -1
                    state[k] = copy.deepcopy(v, memo)
                elif seen >= 0:
                    seen += 1
                    state[k] = empty[k]
                else:
                    state[k] = t()
                continue
            state[k] = t() if t in containers and not v else value(k, v)
        if seen != n_registries:  # not all present and empty: each its own container
            for k in registries & own.keys():
                if state[k] is empty[k]:
                    state[k] = type(own[k])()
        state.pop("_compiled_call_impl", None)  # as Module.__getstate__ drops it
        new = memo[id(m)]
        needs = dict_setstate.get(type(new).__setstate__)
        if needs is not None and state.keys() >= needs:
            new.__dict__.update(state)  # what its __setstate__ does given those keys
        else:
            new.__setstate__(state)
        copies.append(new)
    install(copies)
    return memo[id(model)]


def _shrink(
    model: nn.Module, graph: ChannelGraph, plan: Mapping[str, Sequence[int]], shared: bool = True
) -> None:
    """Apply ``plan`` (checked group by group, see `_probe_plan`) to a meta copy by shape
    alone: every cut tensor becomes an empty meta tensor of the pruned shape (what slicing it
    would give), then module attributes follow: of the modules holding cut tensors, or of
    every module when ``shared`` (a tensor registered in several modules)."""
    changed: dict[int, nn.Module] = {}
    at: dict[str, nn.Module] = {"": model}  # module path -> module (tensors come in runs)
    for name, dims in graph._cuts(plan, validate=False).items():
        path, _, attr = name.rpartition(".")
        mod = at.get(path)
        if mod is None:
            mod = model
            for part in path.split("."):
                child = mod._modules[part]
                assert child is not None
                mod = child
            at[path] = mod
        p = mod._parameters.get(attr)
        t = p if p is not None else mod._buffers[attr]
        assert t is not None
        shape = list(t.shape)
        for d, k in dims.items():
            shape[d] -= k
            if shape[d] <= 0:
                raise PlanError(f"the plan removes every position of {name} dim {d}")
        new = meta_empty(shape, t.dtype)
        if p is not None:
            p.data = new
        else:
            mod._buffers[attr] = new
        changed[id(mod)] = mod
    sync_modules(all_modules(model) if shared else changed.values())
    set_module_sizes(model, graph, plan)


def _verify(model: nn.Module, run: _Traced, graph: ChannelGraph) -> dict[str, str]:
    """Prune a copy by one channel per group and run it; bisect to the groups that break it
    or change the numbers its code passes as data (compared with the capture's log).

    Copies run on the meta device (shape propagation only) when the model allows it: the
    first reuses the capture's own meta copy and is pruned by shape alone. Otherwise real
    copies are pruned and run.
    """
    failures: dict[str, str] = {}
    meta = run.cap.meta
    spare = run.meta_model  # the capture's copy serves the first trial
    runner = run.runner or MetaRunner()
    values = run.cap.values  # the capture's log, compared when it has one
    watch = values is not None and can_watch()

    def trial_run(plan: dict[str, list[int]]) -> str | None:
        nonlocal spare
        if meta:
            trial, spare = (spare, None) if spare is not None else (_meta_copy(model), None)
        else:
            trial = copy.deepcopy(model)
        guard = ShapeGuard() if watch else None
        watched = guard if guard is not None else contextlib.nullcontext()
        try:
            if meta:
                _shrink(trial, graph, plan, run.cap.shared)
                with torch.no_grad(), MetaMode(runner), watched:
                    out = trial(*run.meta_inputs)
            else:
                prune_channels(trial, graph, plan)
                with torch.no_grad(), watched:
                    out = trial(*run.inputs)
        except Exception as e:  # any failure of the pruned forward is a finding
            return f"pruning it breaks the model's forward ({type(e).__name__}: {str(e)[:160]})"
        if not _same_structure(run.cap.output, out, data_dependent=not meta):
            return "pruning it changes the shape of a model output"
        if guard is not None and values is not None:
            changed = first_difference(values, guard.values)
            if changed is not None:
                return f"pruning it changes what the model computes: {changed[:200]}"
        return None

    def attempt(groups: Sequence[ChannelGroup]) -> str | None:
        plan = _probe_plan(groups)
        return trial_run(plan) if plan else None

    # Bisect depth first with a worklist (a recursive closure would be a reference cycle
    # holding the capture and its meta copy until the cyclic collector runs): each entry
    # is a set of groups and the failure it is known to give (None: not tried yet).
    todo: list[tuple[Sequence[ChannelGroup], str | None]] = [(graph.prunable, None)]
    passed = 0  # groups found fine so far
    while todo:
        groups, err = todo.pop()
        if err is None:
            err = attempt(groups)
            if err is None:
                passed += len(groups)
                continue
        if len(groups) == 1:
            failures[groups[0].id] = err
            continue
        if _dense(len(failures), passed):
            passed += _one_by_one(groups, err, attempt, failures)
            continue
        half = len(groups) // 2
        first, second = groups[:half], groups[half:]
        e = attempt(first)
        if e is not None:
            todo.append((second, None))
            todo.append((first, e))
        else:  # the whole failed and the first half is fine: the second half fails
            passed += len(first)
            todo.append((second, err))
    return failures


def _dense(failed: int, passed: int) -> bool:
    """Whether failures have been common enough (an estimate of their rate, starting low,
    of at least 0.3) that trying each group of a failing set costs fewer forwards than
    halving it: transformers whose attention groups all fail, one in every two or three."""
    return (failed + 1) / (failed + passed + 5) >= 0.3


def _one_by_one(
    groups: Sequence[ChannelGroup],
    err: str,
    attempt: Callable[[Sequence[ChannelGroup]], str | None],
    failures: dict[str, str],
) -> int:
    """Try each group of a set that fails with ``err`` alone, noting failures; the last is
    not tried when all others passed (then it fails). Returns the number that passed."""
    passed = 0
    for i, g in enumerate(groups):
        if i == len(groups) - 1 and passed == i:
            failures[g.id] = err
            break
        e = attempt([g])
        if e is None:
            passed += 1
        else:
            failures[g.id] = e
    return passed


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
        failures = _verify(model, run, graph)
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
    ratio: float | None = None,
    ratios: Mapping[str, float] | None = None,
    importance: str = "l2",
    round_to: int = 1,
    ignore: Iterable[nn.Module | str] = (),
    min_channels: int = 1,
) -> PruneReport:
    """Trace, choose channels by importance and remove them in place.

    Args:
        model: the model to prune (modified in place).
        example_inputs: a tensor or a tuple of positional inputs.
        ratio: fraction of channels to remove from every prunable group.
        ratios: fraction per group id.
        importance: ``"l1"``, ``"l2"`` or ``"random"``.
        round_to: keep layer widths multiples of this.
        ignore: modules or name patterns never to prune.
        min_channels: the fewest channels any group keeps.
    """
    graph = trace(model, example_inputs, ignore=ignore)
    plan = select(
        model,
        graph,
        ratio=ratio,
        ratios=ratios,
        importance=importance,
        round_to=round_to,
        min_channels=min_channels,
    )
    before_params = count_params(model)
    prune_channels(model, graph, plan)
    after = profile(model, example_inputs)
    return PruneReport(graph, plan, graph.macs_total, after.macs, before_params, after.params)
