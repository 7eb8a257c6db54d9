"""Budgets of one search: analytic and predicted costs of a config, and budget filling.

`Budgets` turns a config into its plan's MACs, parameters and predicted latency, the
constraint values Optuna receives (``value / limit - 1``, feasible when <= 0) and, when a
budget is clearly broken, the reason to reject it unmeasured. `Budgets.fill` scales a
sampled config to the largest that still fits, so no candidate wastes budget.
"""

from __future__ import annotations

from typing import Any

from prunepilot.core import ChannelGraph

from ._latency_model import LatencyModel
from ._space import Config, Space
from ._spec import SearchSettings

__all__ = ["Budgets"]


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
        plan = self.space.plan(config)
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
        est = self.estimate(config)
        cons = dict(est["constraints"])
        if "latency_ms" in cons:
            cons["latency_ms"] = (cons["latency_ms"] + 1) / (1 - self.settings.latency_slack) - 1
        return est["reason"] is None and all(v <= 0 for v in cons.values())

    def fill(self, config: Config) -> Config:
        """Scale a config's keep ratios by one factor to the largest that meets the budgets.

        The sampler then searches the *shape* of the allocation and every candidate uses
        the whole budget instead of wasting it (or breaking it); configs are snapped down
        onto the grid, so the result always fits when any scaling does.
        """
        names = list(config)
        lo, hi = self.space.low, self.space.high
        grid = self.space.choices

        def at(f: float) -> Config:
            out = {}
            for n in names:
                v = min(hi, max(lo, config[n] * f))
                out[n] = max((c for c in grid if c <= v + 1e-9), default=lo)
            return out

        if self.fits(config):
            good, bad = 1.0, hi / min(config.values())
            if self.fits(at(bad)):
                return at(bad)
        else:
            good, bad = lo / max(config.values()), 1.0
            if not self.fits(at(good)):
                return config
        for _ in range(16):
            mid = (good + bad) / 2
            if self.fits(at(mid)):
                good = mid
            else:
                bad = mid
            if bad - good < 1e-3:
                break
        return at(good)

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
