"""The baselines of a search: exact uniform, global and LAMP plans at its budgets.

Each baseline is the least pruning of its allocation that meets every budget (analytic
MACs and parameters, predicted latency), found by bisection like `plan_for_macs`, not
snapped to the ratio grid. It is expressed as a config of exact channel fractions, so the
evaluators build exactly that plan through `Space.plan`.
"""

from __future__ import annotations

import logging

import optuna

from ..allocation._strategy import Allocation, Plan, Strategy, plan_within
from ._budget import Budgets
from ._space import Config, Space

__all__ = ["baseline_config", "grid_params"]

log = logging.getLogger("prunepilot.search")


def baseline_config(
    space: Space, budgets: Budgets, allocation: Allocation, *, latency_scale: float = 1.0
) -> Config | None:
    """The config of ``allocation``'s exact plan at the budgets (``None``: none exists).

    ``latency_scale`` multiplies predicted latency (a plan measured slower than predicted
    is re-sized with the ratio).

    Groups keep at least ``space.min_keep`` of their channels. ``None`` when even the
    most aggressive plan breaks a budget, or when the plan cannot be written as a config
    (a tied dimension whose groups would keep different widths).
    """
    strategy = Strategy(
        allocation=allocation,
        max_remove=1 - space.low,
        round_to=space.spec.round_to,
        ignore=space.spec.ignore,
    )
    plan = plan_within(
        space.model,
        space.graph,
        space.scores,
        lambda p: budgets.fits_predicted_plan(p, latency_scale=latency_scale),
        strategy,
    )
    if plan is None:
        log.info("no %s plan meets the budgets within min_keep %s", allocation, space.low)
        return None
    config: Config = {}
    for d in space.dims:
        kept = {d.channels - len(plan.get(g, [])) for g in d.groups}
        if len(kept) != 1:
            log.info("the %s baseline is not a config of the tied space; skipped", allocation)
            return None
        config[d.name] = kept.pop() / d.channels
    if _canonical(space.plan(config)) != _canonical(plan):
        log.warning("the %s baseline plan is not reachable from the search space", allocation)
        return None
    return config


def _canonical(plan: Plan) -> dict[str, list[int]]:
    return {g: sorted(ch) for g, ch in plan.items() if ch}


def grid_params(
    space: Space, config: Config
) -> tuple[dict[str, float], dict[str, optuna.distributions.BaseDistribution]]:
    """The nearest point of the sampler's grid to ``config``, and the grid's distributions.

    A baseline is told to the sampler there, so that it learns from the baseline's score
    (its exact config lives in the trial's user attributes).
    """
    dists = space.distributions()
    params = {d.name: _nearest(space.choices, config[d.name]) for d in space.dims}
    return params, dists


def _nearest(choices: tuple[float, ...], value: float) -> float:
    return min(choices, key=lambda c: (abs(c - value), c))
