"""The search space: one keep ratio per prunable group (or per tied family of groups).

A *config* maps dimension names to keep ratios; `Space.plan` turns it into a pruning plan
with the job's channel scores, so every process holding the same model, graph and scores
derives the same plan from the same config.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

from prunepilot.core import ChannelGraph, ChannelGroup, PlanError
from prunepilot.schemas import SearchSpace

from ..allocation._strategy import Plan, Strategy, ignored_groups, plan_for_ratio
from ..importance._scoring import Scores

__all__ = ["Config", "Dimension", "Space"]

Config = dict[str, float]


@dataclass(frozen=True)
class Dimension:
    """One searched keep ratio and the groups it sets."""

    name: str
    groups: tuple[str, ...]
    channels: int


def _signature(model: nn.Module, group: ChannelGroup) -> tuple[Any, ...]:
    """What makes two groups interchangeable: width and their producing layers' kinds."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    out = []
    for m in group.members:
        if m.role != "out" or m.name not in params:
            continue
        owner = modules.get(m.name.rpartition(".")[0])
        out.append((type(owner).__name__, m.name.rpartition(".")[2], tuple(params[m.name].shape)))
    return (group.channels, group.quantum, tuple(sorted(out)))


class Space:
    """The keep-ratio grid over a model's prunable groups.

    Args:
        model: the model ``graph`` was traced from.
        graph: its channel graph.
        scores: channel scores per group; decide which channels a ratio removes.
        spec: ratio bounds, step, ``round_to``, ignored patterns, tying.
    """

    def __init__(
        self, model: nn.Module, graph: ChannelGraph, scores: Scores, spec: SearchSpace
    ) -> None:
        self.model, self.graph, self.scores, self.spec = model, graph, scores, spec
        self.choices = spec.choices()
        ignored = ignored_groups(model, graph, list(spec.ignore))
        free = [
            g
            for g in graph.prunable
            if g.id not in ignored
            and g.channels > 1
            and not any(fnmatch.fnmatchcase(g.id, p) for p in spec.ignore)
        ]
        dims: list[Dimension] = []
        if spec.tie:
            families: dict[tuple[Any, ...], list[ChannelGroup]] = {}
            for g in free:
                families.setdefault(_signature(model, g), []).append(g)
            for fam in families.values():
                name = fam[0].id if len(fam) == 1 else f"{fam[0].id}+{len(fam) - 1}"
                dims.append(Dimension(name, tuple(g.id for g in fam), fam[0].channels))
        else:
            dims = [Dimension(g.id, (g.id,), g.channels) for g in free]
        if not dims:
            raise PlanError(
                "nothing to search: no prunable group is left after 'ignore' "
                f"({len(graph.prunable)} prunable groups, {len(ignored)} ignored)"
            )
        self.dims = dims
        self.strategy = Strategy(round_to=spec.round_to)

    @property
    def low(self) -> float:
        """The smallest keep ratio on the grid."""
        return self.choices[0]

    @property
    def high(self) -> float:
        """The largest keep ratio on the grid."""
        return self.choices[-1]

    def suggest(self, trial: Any) -> Config:
        """Ask an Optuna trial for one keep ratio per dimension (on the grid)."""
        step = self.spec.step if len(self.choices) > 1 else None
        return {
            d.name: float(trial.suggest_float(d.name, self.low, self.high, step=step))
            for d in self.dims
        }

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The distributions `suggest` asks for, by dimension name."""
        step = self.spec.step if len(self.choices) > 1 else None
        return {
            d.name: optuna.distributions.FloatDistribution(self.low, self.high, step=step)
            for d in self.dims
        }

    def uniform(self, keep: float) -> Config:
        """The same keep ratio for every dimension, snapped down onto the grid."""
        snapped = max((c for c in self.choices if c <= keep + 1e-9), default=self.low)
        return {d.name: snapped for d in self.dims}

    def smallest(self) -> Config:
        """Every dimension at its smallest keep ratio: the most a search can prune."""
        return self.uniform(self.low)

    def check(self, config: Mapping[str, float]) -> Config:
        """``config`` validated against the dimensions (unknown or missing names refused)."""
        names = {d.name for d in self.dims}
        unknown = sorted(set(config) - names)
        missing = sorted(names - set(config))
        if unknown or missing:
            raise PlanError(
                f"config does not match the search space: unknown {unknown[:5]}, "
                f"missing {missing[:5]}"
            )
        out = {}
        for k, v in config.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise PlanError(f"keep ratio for {k!r} must be in (0, 1]; got {v!r}")
            out[k] = float(v)
        return out

    def ratios(self, config: Mapping[str, float]) -> dict[str, float]:
        """Fraction of channels removed per group id."""
        out: dict[str, float] = {}
        for d in self.dims:
            keep = config[d.name]
            for gid in d.groups:
                n = self.graph.group(gid).channels
                out[gid] = (n - max(1, math.ceil(keep * n - 1e-9))) / n
        return out

    def plan(self, config: Mapping[str, float]) -> Plan:
        """The pruning plan of a config: the lowest-scored channels of each group go."""
        ratios = {g: r for g, r in self.ratios(config).items() if r > 0}
        if not ratios:
            return {}
        strategy = Strategy(round_to=self.spec.round_to, config=ratios)
        return plan_for_ratio(self.model, self.graph, self.scores, 0.0, strategy)
