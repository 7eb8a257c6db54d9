"""Iterative pruning schedules: prune a little, fine-tune, repeat.

`sparsity_schedule` gives the cumulative sparsity after each step; `iterative_prune` walks
it on a real model: re-trace, score, plan (MACs or channel target), prune, fine-tune.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from prunepilot.core import ChannelGraph, PlanError, prune_channels, trace

from ..errors import CalibrationError
from ..importance._calibration import calibrate
from ..importance._criteria import Criterion, get_criterion
from ..importance._scoring import Aggregate, score_channels
from ..recovery._finetune import Progress, ProgressCallback
from ._strategy import (
    Plan,
    Strategy,
    check_ratio,
    ignored_groups,
    plan_for_macs,
    plan_for_ratio,
)

__all__ = ["SCHEDULES", "StepRecord", "iterative_prune", "sparsity_schedule"]

log = logging.getLogger("prunepilot.search")

ScheduleKind = Literal["linear", "agp", "geometric"]
SCHEDULES: tuple[str, ...] = ("linear", "agp", "geometric")


def sparsity_schedule(kind: str, target: float, steps: int) -> list[float]:
    """Cumulative sparsity after each of ``steps`` steps, ending at ``target``.

    * ``linear``: equal increments, ``target * k / n``.
    * ``agp``: automated gradual pruning (Zhu & Gupta 2017), cubic:
      ``target * (1 - (1 - k/n)^3)``; prunes fast early, gently late.
    * ``geometric``: lottery-ticket style; each step removes ``1 - (1 - target)^(1/n)`` of
      what remains, so ``1 - (1 - target)^(k/n)`` is gone after step k.
    """
    if kind not in SCHEDULES:
        raise PlanError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
    t = check_ratio(target, "target sparsity")
    if not isinstance(steps, int) or steps < 1:
        raise PlanError(f"steps must be an integer >= 1; got {steps!r}")
    out: list[float] = []
    for k in range(1, steps + 1):
        f = k / steps
        if kind == "linear":
            out.append(t * f)
        elif kind == "agp":
            out.append(t * (1 - (1 - f) ** 3))
        else:
            out.append(1 - (1 - t) ** f)
    out[-1] = t
    return out


@dataclass(frozen=True)
class StepRecord:
    """The state after one iterative step.

    Attributes:
        step: 1-based step index.
        sparsity: the scheduled cumulative sparsity.
        macs: MACs after the step.
        macs_kept: MACs as a fraction of the original.
        channels_kept: prunable channels as a fraction of the original (per-group sum).
        plan: the plan applied at this step (against that step's graph).
    """

    step: int
    sparsity: float
    macs: int
    macs_kept: float
    channels_kept: float
    plan: Plan


def _widths(graph: ChannelGraph) -> dict[str, int]:
    return {g.id: g.channels for g in graph.prunable}


def iterative_prune(
    model: nn.Module,
    example_inputs: Any,
    *,
    target: float,
    steps: int,
    schedule: ScheduleKind = "agp",
    measure: Literal["macs", "channels"] = "macs",
    criterion: str | Criterion = "l2",
    strategy: Strategy | None = None,
    aggregate: Aggregate = "sum",
    finetune: Callable[[nn.Module, int], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    calibration_data: Iterable[Any] | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    calibration_steps: int = 4,
    callback: ProgressCallback | None = None,
) -> list[StepRecord]:
    """Prune ``model`` in place along a schedule, fine-tuning between steps.

    Args:
        model: the model (pruned in place).
        example_inputs: inputs for `prunepilot.core.trace`.
        target: final sparsity in [0, 1): the fraction of MACs removed (``measure="macs"``)
            or of channels removed (``measure="channels"``), relative to the original.
        steps: number of pruning steps.
        schedule: ``linear``, ``agp`` or ``geometric`` (see `sparsity_schedule`).
        measure: what ``target`` counts.
        criterion: importance criterion; data-driven ones are re-calibrated each step on
            ``calibration_data`` with ``loss_fn``.
        strategy: allocation settings (``config`` is not supported here).
        aggregate: member aggregation for the scores.
        finetune: ``finetune(model, step)`` after each step (e.g. a `Trainer.fit`).
        optimizer: its state is sliced with the model so it keeps working across steps.
        calibration_data: batches for data-driven criteria.
        loss_fn: loss for calibration.
        calibration_steps: batches per calibration.
        callback: receives ``Progress("schedule", step, ...)`` after each step.

    Returns:
        One `StepRecord` per step.
    """
    strategy = strategy or Strategy()
    if strategy.config:
        raise PlanError("iterative_prune does not take a per-group config; use plan_for_ratio")
    if measure not in ("macs", "channels"):
        raise PlanError(f"measure must be 'macs' or 'channels'; got {measure!r}")
    crit = get_criterion(criterion)
    if crit.data_driven and (calibration_data is None or loss_fn is None):
        raise CalibrationError(
            f"criterion {crit.name!r} is data-driven: give calibration_data= and loss_fn="
        )
    sched = sparsity_schedule(schedule, target, steps)
    graph = trace(model, example_inputs, ignore=())
    macs0 = graph.macs()
    widths0 = _widths(graph)
    total0 = sum(widths0.values())
    records: list[StepRecord] = []
    for k, s in enumerate(sched, start=1):
        if k > 1:
            graph = trace(model, example_inputs)
        cal = None
        if crit.data_driven:
            assert calibration_data is not None and loss_fn is not None
            cal = calibrate(
                model, calibration_data, loss_fn, calibration_steps, graph=graph, criteria=[crit]
            )
        scores = score_channels(model, graph, crit, calibration=cal, aggregate=aggregate)
        if measure == "macs":
            plan = plan_for_macs(
                model, graph, scores, macs=max(1, math.floor((1 - s) * macs0)), strategy=strategy
            )
        elif strategy.allocation == "uniform":
            skip = ignored_groups(model, graph, strategy.ignore)
            keep = {
                g.id: min(
                    g.channels,
                    widths0.get(g.id, g.channels)
                    - math.floor(widths0.get(g.id, g.channels) * s + 1e-9),
                )
                for g in graph.prunable
                if g.channels > 0 and g.id not in skip
            }
            step_strategy = dataclasses.replace(
                strategy, config={gid: max(1, w) for gid, w in keep.items()}
            )
            plan = plan_for_ratio(model, graph, scores, 0.0, step_strategy)
        else:
            cur = sum(_widths(graph).values())
            want_removed = math.floor(s * total0 + 1e-9) - (total0 - cur)
            r = min(max(want_removed, 0) / max(cur, 1), 0.99)
            plan = plan_for_ratio(model, graph, scores, r, strategy)
        macs_after = graph.macs(plan)
        prune_channels(model, graph, plan, optimizer=optimizer)
        now = sum(g.channels - len(plan.get(g.id, [])) for g in graph.prunable)
        rec = StepRecord(k, s, macs_after, macs_after / macs0, now / max(total0, 1), plan)
        records.append(rec)
        log.info("step %d/%d: sparsity %.3f, MACs kept %.3f", k, steps, s, rec.macs_kept)
        if finetune is not None:
            finetune(model, k)
        if callback is not None:
            callback(
                Progress(
                    "schedule",
                    k,
                    steps,
                    metric=None,
                    info={
                        "sparsity": s,
                        "macs_kept": rec.macs_kept,
                        "channels_kept": rec.channels_kept,
                    },
                )
            )
    return records
