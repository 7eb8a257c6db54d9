"""Budgets of one search: the limits, the latency model, and every budget decision.

`Budgets` owns the absolute limits (``macs``, ``params``, ``latency_ms``) and the latency
model, and answers each budget question of the search in one place, with these
tolerances (``limit``: the budget; ``slack``/``margin``: `SearchSettings.latency_slack`
and `SearchSettings.latency_margin`):

* `rejection`: why a candidate is rejected without being evaluated (analytic MACs or
  parameters over their limits, or predicted latency over ``limit * (1 + margin)``);
* `fits_predicted`: a plan fits before measuring (analytic limits, predicted latency at
  most ``limit * (1 - slack)``): budget filling and the baselines' sizing aim there;
* `fits_measured`: a measured latency is at most ``limit * (1 - slack)``, which leaves
  headroom for the winner's re-measurement: only such candidates become finalists;
* `fits_final`: the winner's re-measured latency is at most ``limit`` itself;
* `feasible`: a candidate's ``feasible`` flag: analytic limits, and `fits_measured` when
  its latency was measured, else predicted latency at most ``limit``;
* `constraints`: the values Optuna receives (``value / limit - 1``; <= 0 holds).

Only `Budgets` changes its limits (`limit_latency` once the original is measured).
`Budgets.fill` grows a sampled config to the largest that still fits, so no candidate
wastes budget.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from prunepilot.core import ChannelGraph, ChannelGroup
from prunepilot.schemas import SearchSettings

from ..allocation._strategy import Plan
from ..importance._scoring import normalize_scores
from ..latency._model import LatencyModel
from ._space import Config, Dimension, Space

__all__ = ["Budgets"]

# (estimate key, budget name): what filling spends of each budget
_COSTS = (("macs", "macs"), ("params", "params"), ("predicted_ms", "latency_ms"))
_LATENCY = "latency_ms"


class Budgets:
    """The absolute limits of a search and how candidates measure up against them.

    Args:
        space: the search space (configs to plans).
        graph: the model's channel graph (analytic MACs and parameters).
        limits: absolute budgets by name (``macs``, ``params``, ``latency_ms``); copied.
        settings: search settings (latency margin and slack, uniform seeds).

    Attributes:
        latency_model: predicts a plan's latency (``None``: latency is not predicted).
    """

    def __init__(
        self,
        space: Space,
        graph: ChannelGraph,
        limits: Mapping[str, float],
        settings: SearchSettings,
    ) -> None:
        self.space, self.graph, self.settings = space, graph, settings
        self._limits: dict[str, float] = dict(limits)
        self.latency_model: LatencyModel | None = None

    # ------------------------------------------------------------------ limits

    @property
    def limits(self) -> Mapping[str, float]:
        """The absolute budgets by name (read-only)."""
        return MappingProxyType(self._limits)

    @property
    def latency_limit(self) -> float | None:
        """The latency budget in ms (``None``: no latency budget, or not measured yet)."""
        return self._limits.get(_LATENCY)

    def limit_latency(self, limit_ms: float) -> None:
        """Set the absolute latency budget (known once the original model is measured)."""
        self._limits[_LATENCY] = limit_ms

    @property
    def predicts_latency(self) -> bool:
        """Whether candidates' latency is predicted (a latency budget and a model)."""
        return self.latency_limit is not None and self.latency_model is not None

    # ------------------------------------------------------------------ decisions

    def constraints(
        self, macs: int, params: int, latency_ms: float | None = None
    ) -> dict[str, float]:
        """Optuna's constraint values, ``value / limit - 1`` per budget (<= 0: it holds);
        latency only when ``latency_ms`` (measured, else predicted) is given."""
        out: dict[str, float] = {}
        for key, value in (("macs", macs), ("params", params)):
            if key in self._limits:
                out[key] = value / self._limits[key] - 1
        lim = self.latency_limit
        if lim is not None and latency_ms is not None:
            out[_LATENCY] = latency_ms / lim - 1
        return out

    def rejection(self, macs: int, params: int, predicted_ms: float | None) -> str | None:
        """Why a candidate is rejected unevaluated, or ``None``: analytic MACs/parameters
        over their limits, or predicted latency over ``limit * (1 + latency_margin)``."""
        for key, value in (("macs", macs), ("params", params)):
            if key in self._limits and value > self._limits[key]:
                return f"{key} {value:.4g} > budget {self._limits[key]:.4g}"
        lim = self.latency_limit
        margin = 1 + self.settings.latency_margin
        if lim is not None and predicted_ms is not None and predicted_ms > lim * margin:
            return f"predicted latency {predicted_ms:.3g} ms > budget {lim:.3g} ms"
        return None

    def fits_measured(self, measured_ms: float) -> bool:
        """Whether a measured latency is at most ``limit * (1 - latency_slack)``: the
        headroom a finalist needs so that its re-measurement does not break the budget on
        noise alone (``True`` without a latency budget)."""
        lim = self.latency_limit
        return lim is None or measured_ms <= lim * (1 - self.settings.latency_slack)

    def fits_final(self, measured_ms: float) -> bool:
        """Whether the winner's re-measured latency is within the budget itself."""
        lim = self.latency_limit
        return lim is None or measured_ms <= lim

    def feasible(
        self, macs: int, params: int, predicted_ms: float | None, measured_ms: float | None
    ) -> bool:
        """Whether a candidate meets every budget as far as known: analytic MACs and
        parameters within their limits, and its latency `fits_measured` when measured,
        else predicted at most the limit."""
        analytic = self.constraints(macs, params)
        if any(v > 0 for v in analytic.values()):
            return False
        if measured_ms is not None:
            return self.fits_measured(measured_ms)
        lim = self.latency_limit
        return lim is None or predicted_ms is None or predicted_ms <= lim

    def estimate(self, config: Config) -> dict[str, Any]:
        """Analytic MACs/params, predicted latency, constraint values, rejection reason."""
        return self.estimate_plan(self.space.plan(config))

    def estimate_plan(self, plan: Plan) -> dict[str, Any]:
        """`estimate` of a plan: ``macs``, ``params``, ``predicted_ms``, ``constraints``
        (`constraints` with the predicted latency), ``reason`` (`rejection`), ``plan``."""
        macs, params = self.graph.macs(plan), self.graph.params(plan)
        pred = None
        if self.latency_model is not None and self.latency_limit is not None:
            pred = float(self.latency_model.predict(plan))
        return {
            "macs": macs,
            "params": params,
            "predicted_ms": pred,
            "constraints": self.constraints(macs, params, pred),
            "reason": self.rejection(macs, params, pred),
            "plan": plan,
        }

    def fits_predicted(self, config: Config) -> bool:
        """Whether a config fits before measuring: analytic budgets, and predicted latency
        at most ``limit * (1 - latency_slack)``."""
        return self._fits(self.estimate(config))

    def fits_predicted_plan(self, plan: Plan, *, latency_scale: float = 1.0) -> bool:
        """`fits_predicted` of a plan (predicted latency multiplied by ``latency_scale``)."""
        return self._fits(self.estimate_plan(plan), latency_scale)

    def _fits(self, est: dict[str, Any], latency_scale: float = 1.0) -> bool:
        if est["reason"] is not None or any(
            v > 0 for k, v in est["constraints"].items() if k != _LATENCY
        ):
            return False
        pred = est["predicted_ms"]
        return pred is None or self.fits_measured(pred * latency_scale)

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

        if self.fits_predicted(config):
            good, bad = 1.0, hi / min(config.values())
            if self.fits_predicted(at(bad)):
                return at(bad)
        else:
            good, bad = lo / max(config.values()), 1.0
            if not self.fits_predicted(at(good)):
                return config
        for _ in range(24):
            mid = (good + bad) / 2
            if self.fits_predicted(at(mid)):
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
                        (new[k] - est[k]) / self._limits[c]
                        for k, c in _COSTS
                        if c in self._limits and new[k] is not None and est[k] is not None
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
