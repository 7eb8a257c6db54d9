"""Budgets of one search: analytic and predicted costs of a config, and budget filling.

`Budgets` turns a config into its plan's MACs, parameters and predicted latency, the
constraint values Optuna receives (``value / limit - 1``, feasible when <= 0) and, when a
budget is clearly broken, the reason to reject it unmeasured. `Budgets.fill` grows a
sampled config to the largest that still fits, so no candidate wastes budget.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from prunepilot.core import ChannelGraph, ChannelGroup
from prunepilot.schemas import SearchSettings

from ._latency_model import LatencyModel
from ._scoring import normalize_scores
from ._space import Config, Dimension, Space
from ._strategy import Plan

__all__ = ["Budgets"]

# (estimate key, budget name): what filling spends of each budget
_COSTS = (("macs", "flops"), ("params", "params"), ("predicted_ms", "latency_ms"))


class Budgets:
    """The absolute limits of a search and how configs measure up against them.

    Args:
        space: the search space (configs to plans).
        graph: the model's channel graph (analytic MACs and parameters).
        limits: absolute budgets by name (``flops``, ``params``, ``latency_ms``); the
            dict is shared with the driver, which adds the latency limit once measured.
        settings: search settings (latency margin and slack, uniform seeds).
    """

    def __init__(
        self, space: Space, graph: ChannelGraph, limits: dict[str, float], settings: SearchSettings
    ) -> None:
        self.space, self.graph, self.limits, self.settings = space, graph, limits, settings
        self.latency_model: LatencyModel | None = None

    def estimate(self, config: Config) -> dict[str, Any]:
        """Analytic MACs/params, predicted latency, constraint values, rejection reason."""
        return self.estimate_plan(self.space.plan(config))

    def estimate_plan(self, plan: Plan) -> dict[str, Any]:
        """`estimate` of a plan."""
        macs, params = self.graph.macs(plan), self.graph.params(plan)
        out: dict[str, Any] = {"macs": macs, "params": params, "predicted_ms": None}
        cons: dict[str, float] = {}
        reason = None
        for key, value in (("flops", macs), ("params", params)):
            if key in self.limits:
                cons[key] = value / self.limits[key] - 1
                if value > self.limits[key]:
                    reason = reason or f"{key} {value:.4g} > budget {self.limits[key]:.4g}"
        if "latency_ms" in self.limits:
            lim = self.limits["latency_ms"]
            if self.latency_model is not None:
                pred = float(self.latency_model.predict(plan))
                out["predicted_ms"] = pred
                cons["latency_ms"] = pred / lim - 1
                if pred > lim * (1 + self.settings.latency_margin):
                    reason = reason or f"predicted latency {pred:.3g} ms > budget {lim:.3g} ms"
        out["constraints"] = cons
        out["reason"] = reason
        out["plan"] = plan
        return out

    def fits(self, config: Config) -> bool:
        """Whether a config meets every budget (analytic, and predicted latency with the
        ``latency_slack`` safety margin)."""
        return self._fits(self.estimate(config))

    def fits_plan(self, plan: Plan, *, latency_scale: float = 1.0) -> bool:
        """`fits` of a plan (predicted latency multiplied by ``latency_scale``)."""
        return self._fits(self.estimate_plan(plan), latency_scale)

    def _fits(self, est: dict[str, Any], latency_scale: float = 1.0) -> bool:
        cons = dict(est["constraints"])
        if "latency_ms" in cons:
            ratio = (cons["latency_ms"] + 1) * latency_scale
            cons["latency_ms"] = ratio / (1 - self.settings.latency_slack) - 1
        return est["reason"] is None and all(v <= 0 for v in cons.values())

    def fill(self, config: Config) -> Config:
        """The config grown (or shrunk) to use the budgets as fully as they allow.

        The sampler then searches the *shape* of the allocation and every candidate uses
        the whole budget instead of wasting it (or breaking it): the keep ratios are
        scaled by the largest common factor that fits (continuously, not on the grid),
        then single groups take more channels, most importance per unit of the tightest
        budget first, until no group can grow without breaking a budget. Ratios are
        exact channel fractions (``kept / channels``); a config that does not fit even
        at the smallest ratios comes back unchanged.
        """
        lo, hi = self.space.low, self.space.high

        def at(f: float) -> Config:
            return self._exact({n: min(hi, max(lo, v * f)) for n, v in config.items()})

        if self.fits(config):
            good, bad = 1.0, hi / min(config.values())
            if self.fits(at(bad)):
                return at(bad)
        else:
            good, bad = lo / max(config.values()), 1.0
            if not self.fits(at(good)):
                return config
        for _ in range(24):
            mid = (good + bad) / 2
            if self.fits(at(mid)):
                good = mid
            else:
                bad = mid
            if bad - good < 1e-4:
                break
        return self._top_up(at(good))

    def _exact(self, config: Config) -> Config:
        """Keep ratios as the exact fractions of channels `Space.plan` keeps for them."""
        out = {}
        for d in self.space.dims:
            n = d.channels
            out[d.name] = max(1, math.ceil(config[d.name] * n - 1e-9)) / n
        return out

    def _top_up(self, config: Config) -> Config:
        """Grow single dimensions greedily (importance per budget used) while they fit."""
        hi = self.space.high
        dims = {d.name: d for d in self.space.dims}
        step = {
            d.name: max([self.space.spec.round_to] + [g.quantum for g in self._groups(d)])
            for d in self.space.dims
        }
        cur, est = config, self.estimate(config)
        open_dims = set(dims)
        while open_dims:
            best: tuple[float, Config, dict[str, Any]] | None = None
            for name in sorted(open_dims):
                d = dims[name]
                kept = round(cur[name] * d.channels)
                grown = min(kept + step[name], math.floor(hi * d.channels + 1e-9))
                if grown <= kept:
                    open_dims.discard(name)
                    continue
                cand = {**cur, name: grown / d.channels}
                new = self.estimate(cand)
                if not self._fits(new):  # budgets only tighten as others grow: done
                    open_dims.discard(name)
                    continue
                gain = self._gain(d, est["plan"], new["plan"])
                used = max(
                    [
                        (new[k] - est[k]) / self.limits[c]
                        for k, c in _COSTS
                        if c in self.limits and new[k] is not None and est[k] is not None
                    ]
                    + [1e-12]
                )
                if best is None or gain / used > best[0]:
                    best = (gain / used, cand, new)
            if best is None:
                break
            _, cur, est = best
        return cur

    def _groups(self, d: Dimension) -> list[ChannelGroup]:
        return [self.graph.group(g) for g in d.groups]

    def _gain(self, d: Dimension, before: Plan, after: Plan) -> float:
        """Normalised importance of the channels ``after`` keeps and ``before`` removes."""
        total = 0.0
        for gid in d.groups:
            back = set(before.get(gid, ())) - set(after.get(gid, ()))
            if back:
                total += float(self._importance[gid][sorted(back)].sum())
        return total

    @functools.cached_property
    def _importance(self) -> dict[str, np.ndarray]:
        """Channel scores normalised per group, so that groups compare."""
        gids = [g for d in self.space.dims for g in d.groups]
        return normalize_scores({g: self.space.scores[g] for g in gids}, "mean")

    def seeds(self) -> list[Config]:
        """Uniform configs around the largest feasible uniform keep ratio."""
        n = self.settings.uniform_seeds
        if n == 0:
            return []
        choices = list(self.space.choices)
        feasible = [k for k in choices if self.estimate(self.space.uniform(k))["reason"] is None]
        top = max(feasible) if feasible else choices[0]
        i = choices.index(top)
        order = [i, i + 1, i - 1, i - 2, i + 2, i - 3, i - 4, i - 5]
        picked: list[Config] = []
        for j in order:
            if 0 <= j < len(choices) and len(picked) < n:
                picked.append(self.space.uniform(choices[j]))
        return picked
