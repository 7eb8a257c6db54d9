"""Allocation strategies: how many channels each group loses, for a ratio or a MACs target.

``uniform`` removes the same fraction from every prunable group; ``global`` ranks all
channels by normalised score and removes the lowest, never more than ``max_remove`` of a
group; ``lamp`` ranks them by LAMP score (Lee et al. 2021), which makes scores of
different groups comparable without a normaliser. An explicit ``config`` fixes the
ratio (float) or the kept width (int) of named groups; ``ignore`` (modules or name
patterns) keeps groups whole. ``round_to`` and ``min_channels`` are honoured by
`prunepilot.core.select`, which picks the channels.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from prunepilot.core import ChannelGraph, ChannelGroup, PlanError, channel_scores, select

from ..importance._scoring import NORMALIZERS, Normalize, Scores, normalize_scores

__all__ = [
    "Plan",
    "Strategy",
    "check_ratio",
    "ignored_groups",
    "lamp_scores",
    "plan_for_macs",
    "plan_for_ratio",
    "plan_within",
]

log = logging.getLogger("prunepilot.search")

Plan = dict[str, list[int]]
Allocation = Literal["uniform", "global", "lamp"]
ALLOCATIONS: tuple[Allocation, ...] = ("uniform", "global", "lamp")


def check_ratio(ratio: object, what: str = "ratio") -> float:
    """Return ``ratio`` as a float, or raise `PlanError` unless it lies in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise PlanError(f"{what} must be a fraction in [0, 1) of channels removed; got {ratio!r}")
    return float(ratio)


@dataclass(frozen=True, init=False)
class Strategy:
    """How to turn scores into a plan.

    Attributes:
        allocation: ``uniform`` (same ratio per group), ``global`` (rank all channels by
            normalised score) or ``lamp`` (rank all channels by LAMP score).
        max_remove: global allocation never removes more than this fraction of a group
            (``max_ratio=``, its old name, is deprecated).
        round_to: keep channel counts multiples of this (e.g. 8 for tensor cores).
        min_channels: the fewest channels a group keeps.
        ignore: modules or ``fnmatch`` patterns (parameter, module or group names) whose
            output channels are never removed.
        config: explicit per-group settings, ``{group id or pattern: ratio | width}``; a
            float in [0, 1) is the fraction removed, an int the channels kept. These
            groups are left out of the allocation.
        normalize: per-group score normalisation for global ranking (``lamp`` needs none).
        cost_weight: global and lamp only; divide each channel's score by (its MACs cost relative
            to the mean) ** cost_weight, so cheap channels are kept preferentially
            (0: rank by importance alone).
    """

    allocation: Allocation
    max_remove: float
    round_to: int
    min_channels: int
    ignore: Sequence[nn.Module | str]
    config: Mapping[str, float | int]
    normalize: Normalize
    cost_weight: float

    def __init__(
        self,
        allocation: Allocation = "uniform",
        max_remove: float = 0.9,
        round_to: int = 1,
        min_channels: int = 1,
        ignore: Sequence[nn.Module | str] = (),
        config: Mapping[str, float | int] | None = None,
        normalize: Normalize = "mean",
        cost_weight: float = 0.0,
        *,
        max_ratio: float | None = None,
    ) -> None:
        if max_ratio is not None:
            warnings.warn(
                "Strategy(max_ratio=) is deprecated: it is a fraction removed; use max_remove=",
                DeprecationWarning,
                stacklevel=2,
            )
            max_remove = max_ratio
        values = {
            "allocation": allocation,
            "max_remove": max_remove,
            "round_to": round_to,
            "min_channels": min_channels,
            "ignore": ignore,
            "config": {} if config is None else config,
            "normalize": normalize,
            "cost_weight": cost_weight,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    @property
    def max_ratio(self) -> float:
        """Deprecated name of `max_remove`."""
        warnings.warn(
            "Strategy.max_ratio is deprecated: use max_remove", DeprecationWarning, stacklevel=2
        )
        return self.max_remove

    def _check(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise PlanError(f"allocation must be one of {ALLOCATIONS}; got {self.allocation!r}")
        check_ratio(self.max_remove, "max_remove")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise PlanError(f"round_to must be an integer >= 1; got {self.round_to!r}")
        if not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise PlanError(f"min_channels must be an integer >= 1; got {self.min_channels!r}")
        if self.normalize not in NORMALIZERS:
            raise PlanError(f"normalize must be one of {NORMALIZERS}; got {self.normalize!r}")
        if self.cost_weight < 0:
            raise PlanError(f"cost_weight must be >= 0; got {self.cost_weight!r}")


# ------------------------------------------------------------------ eligibility


def ignored_groups(
    model: nn.Module, graph: ChannelGraph, ignore: Sequence[nn.Module | str]
) -> set[str]:
    """Ids of groups whose channels an ignored module produces (never pruned)."""
    if not ignore:
        return set()
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    names |= {n for n, _ in model.named_modules() if n}
    out: set[str] = set()
    for item in ignore:
        if isinstance(item, nn.Module):
            prefix = next((n for n, m in model.named_modules() if m is item), None)
            if prefix is None:
                raise PlanError(f"ignored module {type(item).__name__} is not part of the model")

            def hit(member: str, p: str = prefix) -> bool:
                return p == "" or member.startswith(p + ".")

        elif isinstance(item, str):
            if not any(fnmatch.fnmatchcase(n, item) for n in names) and not any(
                fnmatch.fnmatchcase(g.id, item) for g in graph.groups
            ):
                raise PlanError(f"ignore pattern {item!r} matches no module, parameter or group")

            def hit(member: str, p: str = item) -> bool:
                return fnmatch.fnmatchcase(member, p) or fnmatch.fnmatchcase(
                    member.rpartition(".")[0], p
                )

        else:
            raise PlanError(f"ignore takes modules or name patterns; got {type(item).__name__}")
        for g in graph.groups:
            if (isinstance(item, str) and fnmatch.fnmatchcase(g.id, item)) or any(
                m.role == "out" and hit(m.name) for m in g.members
            ):
                out.add(g.id)
    return out


def _config_ratios(graph: ChannelGraph, config: Mapping[str, float | int]) -> dict[str, float]:
    ids = [g.id for g in graph.groups]
    out: dict[str, float] = {}
    for key, value in config.items():
        matched = [key] if key in ids else [i for i in ids if fnmatch.fnmatchcase(i, key)]
        if not matched:
            shown = ", ".join(g.id for g in graph.prunable[:8])
            raise PlanError(
                f"pruning config names unknown group {key!r}; prunable groups include: {shown}"
                + (" ..." if len(graph.prunable) > 8 else "")
            )
        for gid in matched:
            g = graph.group(gid)
            if not g.prunable:
                raise PlanError(
                    f"pruning config names group {gid!r}, which is not prunable: {g.reason}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PlanError(f"config for {gid!r} must be a ratio or a width; got {value!r}")
            if isinstance(value, int):
                if not 1 <= value <= g.channels:
                    raise PlanError(
                        f"config keeps {value} channels of {gid!r}, which has {g.channels}"
                    )
                out[gid] = (g.channels - value) / g.channels
            else:
                out[gid] = check_ratio(value, f"config ratio for {gid!r}")
    return out


def _eligible(
    model: nn.Module, graph: ChannelGraph, strategy: Strategy
) -> tuple[list[ChannelGroup], dict[str, float]]:
    fixed = _config_ratios(graph, strategy.config)
    ignored = ignored_groups(model, graph, strategy.ignore)
    for gid in sorted(ignored & set(fixed)):
        log.warning("group %s is both configured and ignored; ignoring wins", gid)
        fixed.pop(gid)
    free = [
        g for g in graph.prunable if g.id not in ignored and g.id not in fixed and g.channels > 0
    ]
    return free, fixed


def _complete(model: nn.Module, graph: ChannelGraph, scores: Scores, gids: Sequence[str]) -> Scores:
    full = dict(scores)
    for gid in gids:
        if gid not in full:
            full[gid] = channel_scores(model, graph.group(gid), "l2")
        elif len(full[gid]) != graph.group(gid).channels:
            raise PlanError(
                f"scores for {gid!r} have {len(full[gid])} entries; the group has "
                f"{graph.group(gid).channels} channels (stale scores? re-score after pruning)"
            )
    return full


def _select(
    model: nn.Module,
    graph: ChannelGraph,
    scores: Scores,
    ratios: Mapping[str, float],
    strategy: Strategy,
) -> Plan:
    ratios = {g: r for g, r in ratios.items() if r > 0}
    if not ratios:
        return {}
    importance: dict[str, Sequence[float]] = {g: list(scores[g]) for g in ratios}
    return select(
        model,
        graph,
        ratios=ratios,
        importance=importance,
        round_to=strategy.round_to,
        min_channels=strategy.min_channels,
    )


# ------------------------------------------------------------------ global ranking


@dataclass
class _Ranking:
    """All eligible channels in global order (least important first)."""

    gids: list[str]
    order_gid: np.ndarray  # group index per ranked channel
    channels: dict[str, int]
    cap: dict[str, int]

    def counts(self, k: int) -> dict[str, int]:
        """Channels each group loses when the ``k`` lowest-ranked go (after the caps)."""
        c = np.bincount(self.order_gid[:k], minlength=len(self.gids))
        return {gid: min(int(c[i]), self.cap[gid]) for i, gid in enumerate(self.gids)}

    def ratios(self, k: int) -> dict[str, float]:
        return {gid: n / self.channels[gid] for gid, n in self.counts(k).items()}

    def smallest_k(self, removed: int) -> int:
        """The fewest ranked channels to take so that ``removed`` go despite the caps."""
        lo, hi = 0, len(self.order_gid)
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(self.counts(mid).values()) >= removed:
                hi = mid
            else:
                lo = mid + 1
        return lo


def lamp_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """LAMP scores of one group's channels (Lee et al. 2021, "Layer-adaptive sparsity for
    the magnitude-based pruning").

    A channel's score is its squared importance over the sum of the squared importances
    of the group's channels that score at least as high (itself and ties included), so
    every group's best channel scores 1 and one global threshold compares groups.
    """
    sq = np.square(np.asarray(scores, dtype=np.float64))
    if sq.size == 0:
        return sq
    ascending = np.sort(sq)
    at_least = np.cumsum(ascending[::-1])[::-1]  # at_least[i]: sum of ascending[i:]
    first = np.searchsorted(ascending, sq, side="left")  # ties share the denominator
    denom = at_least[first]
    return np.divide(sq, denom, out=np.zeros_like(sq), where=denom > 0)


def _ranking(
    graph: ChannelGraph, free: list[ChannelGroup], scores: Scores, strategy: Strategy
) -> _Ranking:
    if strategy.allocation == "lamp":
        norm = {g.id: lamp_scores(scores[g.id]) for g in free}
    else:
        norm = normalize_scores({g.id: scores[g.id] for g in free}, strategy.normalize)
    if strategy.cost_weight > 0:
        base = graph.macs()
        cost = {}
        for g in free:
            take = g.per_cell(1)
            probe = {g.id: [c for cell, k in zip(g.cells, take, strict=True) for c in cell[:k]]}
            try:
                cost[g.id] = max(base - graph.macs(probe), 0) / max(len(probe[g.id]), 1)
            except PlanError:
                cost[g.id] = 0.0
        mean = float(np.mean([c for c in cost.values()])) or 1.0
        for g in free:
            rel = max(cost[g.id] / mean, 1e-6)
            norm[g.id] = norm[g.id] / rel**strategy.cost_weight
    vals, gidx, chan = [], [], []
    for i, g in enumerate(free):
        vals.append(norm[g.id])
        gidx.append(np.full(g.channels, i))
        chan.append(np.arange(g.channels))
    v = np.concatenate(vals) if vals else np.zeros(0)
    gi = np.concatenate(gidx) if gidx else np.zeros(0, np.int64)
    ch = np.concatenate(chan) if chan else np.zeros(0, np.int64)
    order = np.lexsort((ch, gi, v))
    return _Ranking(
        gids=[g.id for g in free],
        order_gid=gi[order].astype(np.int64),
        channels={g.id: g.channels for g in free},
        cap={
            g.id: min(math.floor(g.channels * strategy.max_remove + 1e-9), g.channels - 1)
            for g in free
        },
    )


# ------------------------------------------------------------------ public entry points


def plan_for_ratio(
    model: nn.Module,
    graph: ChannelGraph,
    scores: Scores,
    ratio: float,
    strategy: Strategy | None = None,
) -> Plan:
    """A plan removing ``ratio`` of the channels (per group, or in total for ``global``).

    Global allocation removes the lowest-ranked channels of all eligible groups together
    until ``ratio`` of them are gone (groups at their ``max_remove`` cap are skipped);
    ``round_to`` and ``min_channels`` may then keep a few more.

    Args:
        model: the model ``graph`` was traced from.
        graph: its channel graph.
        scores: ``{group_id: channel scores}`` (from `score_channels`); groups without
            scores fall back to L2 magnitude.
        ratio: fraction in [0, 1) of channels to remove.
        strategy: allocation settings (default: uniform).

    Raises:
        PlanError: ratio outside [0, 1), a config naming unknown groups, bad ignore items.
    """
    strategy = strategy or Strategy()
    r = check_ratio(ratio)
    free, fixed = _eligible(model, graph, strategy)
    scores = _complete(model, graph, scores, [g.id for g in free] + list(fixed))
    if strategy.allocation == "uniform":
        ratios = {g.id: r for g in free}
    else:
        rank = _ranking(graph, free, scores, strategy)
        wanted = math.floor(r * sum(g.channels for g in free) + 1e-9)
        ratios = rank.ratios(rank.smallest_k(wanted))
    ratios.update(fixed)
    return _select(model, graph, scores, ratios, strategy)


def plan_for_macs(
    model: nn.Module,
    graph: ChannelGraph,
    scores: Scores,
    *,
    keep: float | None = None,
    macs: int | None = None,
    strategy: Strategy | None = None,
) -> Plan:
    """The least pruning whose MACs are at most a target, found by bisection.

    Uniform allocation bisects the common ratio; global and LAMP allocation bisect the
    number of globally lowest-ranked channels removed (a threshold on their scores).

    Args:
        model: the model ``graph`` was traced from.
        graph: its channel graph.
        scores: ``{group_id: channel scores}``.
        keep: target as a fraction in (0, 1] of ``graph.macs()`` (the current MACs).
        macs: target as an absolute number of MACs (give ``keep`` or ``macs``).
        strategy: allocation settings.

    Returns:
        The plan. If the target cannot be reached within ``max_remove``/``min_channels``
        the most aggressive allowed plan is returned and a warning is logged.
    """
    if (keep is None) == (macs is None):
        raise PlanError("give exactly one MACs target: keep= (fraction) or macs= (absolute)")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise PlanError(f"keep must be a fraction of MACs in (0, 1]; got {keep!r}")
        target = keep * graph.macs()
    else:
        assert macs is not None
        if macs <= 0:
            raise PlanError(f"the MACs target must be positive; got {macs!r}")
        target = float(macs)
    plan = plan_within(model, graph, scores, lambda p: graph.macs(p) <= target, strategy)
    if plan is None:
        plan = plan_within(model, graph, scores, lambda p: True, strategy, most=True)
        assert plan is not None
        log.warning(
            "MACs target %d unreachable with max_remove=%.2f (got %d)",
            round(target),
            (strategy or Strategy()).max_remove,
            graph.macs(plan),
        )
    return plan


def plan_within(
    model: nn.Module,
    graph: ChannelGraph,
    scores: Scores,
    fits: Callable[[Plan], bool],
    strategy: Strategy | None = None,
    *,
    most: bool = False,
) -> Plan | None:
    """The least pruning of an allocation for which ``fits(plan)`` holds, by bisection.

    Any budget that shrinks as pruning grows (MACs, parameters, predicted latency) works:
    uniform allocation bisects the common ratio, global and LAMP the number of
    lowest-ranked channels removed.

    Args:
        model: the model ``graph`` was traced from.
        graph: its channel graph.
        scores: ``{group_id: channel scores}``.
        fits: whether a plan meets the budgets.
        strategy: allocation settings.
        most: return the most aggressive plan the strategy allows (``fits`` unused).

    Returns:
        The plan, or ``None`` when even the most aggressive plan does not fit.
    """
    strategy = strategy or Strategy()
    free, fixed = _eligible(model, graph, strategy)
    scores = _complete(model, graph, scores, [g.id for g in free] + list(fixed))

    def build(ratios: dict[str, float]) -> Plan:
        ratios.update(fixed)
        return _select(model, graph, scores, ratios, strategy)

    if strategy.allocation == "uniform":
        lo, hi = 0.0, strategy.max_remove
        best = build({g.id: hi for g in free})
        if most:
            return best
        if fits(build({})):
            return build({})
        if not fits(best):
            return None
        for _ in range(40):
            if hi - lo < 1e-5:
                break
            mid = (lo + hi) / 2
            plan = build({g.id: mid for g in free})
            if fits(plan):
                hi, best = mid, plan
            else:
                lo = mid
        return best
    rank = _ranking(graph, free, scores, strategy)
    lo_k, hi_k = 0, len(rank.order_gid)
    best = build(rank.ratios(hi_k))
    if most:
        return best
    if fits(build({})):
        return build({})
    if not fits(best):
        return None
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        plan = build(rank.ratios(mid))
        if fits(plan):
            hi_k, best = mid, plan
        else:
            lo_k = mid
    return best
