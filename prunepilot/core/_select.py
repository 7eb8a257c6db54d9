"""Choose which channels to remove: data-free importance and per-group counts."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ._graph import ChannelGraph, ChannelGroup
from .errors import PlanError

__all__ = ["IMPORTANCE", "channel_scores", "keep_count", "select"]

IMPORTANCE = ("l1", "l2", "random")


def channel_scores(
    model: nn.Module, group: ChannelGroup, importance: str = "l2", seed: int = 0
) -> np.ndarray:
    """Score every channel of ``group`` (higher = more important).

    ``l1``/``l2`` sum the weight magnitude of each channel's slices over all parameter
    members (producers and consumers); ``random`` draws seeded noise.
    """
    if importance == "random":
        gen = np.random.default_rng(seed + sum(map(ord, group.id)))
        return gen.random(group.channels)
    if importance not in ("l1", "l2"):
        raise PlanError(f"unknown importance {importance!r}; core knows {IMPORTANCE}")
    params = dict(model.named_parameters())
    score = np.zeros(group.channels)
    for m in group.members:
        p = params.get(m.name)
        if p is None:
            continue
        with torch.no_grad():
            t = p.detach().float().movedim(m.dim, 0).reshape(p.shape[m.dim], -1)
            per_pos = (t.abs().sum(1) if importance == "l1" else t.pow(2).sum(1)).cpu().numpy()
        chan = m.channel_of_positions()
        ok = chan >= 0
        score += np.bincount(chan[ok], weights=per_pos[ok], minlength=group.channels)
    return score


def keep_count(group: ChannelGroup, ratio: float, round_to: int = 1, min_channels: int = 1) -> int:
    """How many channels stay when removing ``ratio`` of a group, honouring rounding rules."""
    n = group.channels
    keep = n - math.floor(n * ratio + 1e-9)
    width = keep + group.pinned
    if round_to > 1:
        width = math.ceil(width / round_to) * round_to
    keep = min(
        n, max(width - group.pinned, min_channels - group.pinned, 1 if not group.pinned else 0)
    )
    q = group.quantum
    if q > 1:  # blocks: remove whole quanta (the same fraction of every block)
        keep = n - ((n - keep) // q) * q
    return keep


def removal(remove: float | None, ratio: float | None, caller: str) -> float | None:
    """``remove``, or the deprecated ``ratio`` with a `DeprecationWarning` (never both)."""
    if ratio is None:
        return remove
    if remove is not None:
        raise PlanError("give remove= only (ratio= is its deprecated name)")
    warnings.warn(
        f"{caller}(ratio=) is deprecated; use {caller}(remove=), the fraction of channels removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return ratio


def select(
    model: nn.Module,
    graph: ChannelGraph,
    *,
    remove: float | None = None,
    ratios: Mapping[str, float] | None = None,
    importance: str | Mapping[str, Sequence[float] | np.ndarray] = "l2",
    round_to: int = 1,
    min_channels: int = 1,
    seed: int = 0,
    ratio: float | None = None,
) -> dict[str, list[int]]:
    """Build a plan ``{group_id: [channels to remove]}``.

    Args:
        model: the traced model (for weight-based importance).
        graph: its channel graph.
        remove: fraction of channels to remove from every prunable group.
        ratios: fraction to remove per group id (overrides ``remove`` for those groups).
        importance: ``"l1"``, ``"l2"``, ``"random"``, or precomputed scores per group.
        round_to: keep layer widths multiples of this.
        min_channels: never keep fewer channels than this in a group.
        seed: seed for ``"random"``.
        ratio: deprecated name of ``remove`` (a ``DeprecationWarning``; removed in the next
            release: "ratio" reads as the fraction kept elsewhere).
    """
    ratio = removal(remove, ratio, "select")
    if ratio is None and not ratios:
        raise PlanError("give remove= (for every group) or ratios= ({group_id: fraction})")
    for r in ([ratio] if ratio is not None else []) + list((ratios or {}).values()):
        if not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise PlanError(f"pruning ratios are fractions in [0, 1); got {r!r}")
    if round_to < 1 or min_channels < 1:
        raise PlanError("round_to and min_channels must be at least 1")
    wanted: dict[str, float] = {}
    if ratio is not None:
        wanted = {g.id: float(ratio) for g in graph.prunable}
    for gid, r in (ratios or {}).items():
        g = graph.group(gid)
        if not g.prunable:
            raise PlanError(f"group {gid!r} is not prunable: {g.reason}")
        wanted[gid] = float(r)
    plan: dict[str, list[int]] = {}
    for gid, r in wanted.items():
        g = graph.group(gid)
        keep = keep_count(g, r, round_to, min_channels)
        drop = g.channels - keep
        if drop <= 0:
            continue
        if isinstance(importance, Mapping):
            if gid not in importance:
                raise PlanError(f"importance scores miss group {gid!r}")
            scores = np.asarray(importance[gid], dtype=float)
        else:
            scores = channel_scores(model, g, importance, seed)
        chosen: list[int] = []
        for cell, k in zip(g.cells, g.per_cell(drop // g.quantum), strict=True):
            chosen.extend(sorted(cell, key=lambda c: (scores[c], c))[:k])
        if chosen:
            plan[gid] = sorted(chosen)
    return plan
