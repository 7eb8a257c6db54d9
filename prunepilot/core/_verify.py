"""Verification: prune copies of a traced model by one channel per group and run them.

Groups whose removal breaks the forward (sizes fixed by the model's own code) or changes a
number the code derives from a size are found by bisection (`verify_groups`); meta copies are
pruned by shape alone (`shrink`) so most trials cost no compute.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ._capture import Capture
from ._fastmeta import MetaMode, MetaRunner, meta_empty
from ._graph import ChannelGraph, ChannelGroup
from ._guard import ShapeGuard, can_watch, first_difference
from ._metacopy import meta_copy
from ._modules import all_modules, sync_modules
from ._prune import prune_channels, set_module_sizes
from .errors import PlanError

__all__ = ["Traced", "probe_plan", "shrink", "verify_groups"]


@dataclass
class Traced:
    """A capture and what verification can reuse from it."""

    inputs: tuple[Any, ...]
    cap: Capture
    meta_model: nn.Module | None = None  # the meta copy the capture ran (meta only)
    meta_inputs: tuple[Any, ...] = ()
    runner: MetaRunner | None = None
    modules: list[nn.Module] = field(default_factory=list)  # the model's, as all_modules


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


def probe_plan(groups: Sequence[ChannelGroup]) -> dict[str, list[int]]:
    """The smallest removal step of every group that its constraints allow."""
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


def shrink(
    model: nn.Module, graph: ChannelGraph, plan: Mapping[str, Sequence[int]], shared: bool = True
) -> None:
    """Apply ``plan`` (checked group by group, see `probe_plan`) to a meta copy by shape
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


def verify_groups(model: nn.Module, run: Traced, graph: ChannelGraph) -> dict[str, str]:
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
            trial, spare = (spare, None) if spare is not None else (meta_copy(model), None)
        else:
            trial = copy.deepcopy(model)
        guard = ShapeGuard() if watch else None
        watched = guard if guard is not None else contextlib.nullcontext()
        try:
            if meta:
                shrink(trial, graph, plan, run.cap.shared)
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
        plan = probe_plan(groups)
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
