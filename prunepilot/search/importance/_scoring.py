"""Turn a criterion into per-group channel scores: aggregate members, normalise groups."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
from torch import nn

from prunepilot.core import ChannelGraph, PrunepilotError

from ..errors import CalibrationError
from ._calibration import Calibration
from ._criteria import L2, Criterion, ScoreContext, get_criterion

__all__ = ["AGGREGATES", "NORMALIZERS", "Scores", "normalize_scores", "score_channels"]

log = logging.getLogger("prunepilot.search")

Scores = dict[str, np.ndarray]
Aggregate = Literal["sum", "mean", "max"]
Normalize = Literal["none", "mean", "max", "sum", "l2"]
AGGREGATES: tuple[str, ...] = ("sum", "mean", "max")
NORMALIZERS: tuple[str, ...] = ("none", "mean", "max", "sum", "l2")


def _aggregate(parts: list[np.ndarray], how: str, channels: int) -> np.ndarray:
    stack = np.vstack([np.asarray(p, dtype=np.float64).reshape(1, channels) for p in parts])
    valid = ~np.isnan(stack)
    has = valid.any(0)
    filled = np.where(valid, stack, 0.0)
    if how == "sum":
        out = filled.sum(0)
    elif how == "mean":
        out = filled.sum(0) / np.maximum(valid.sum(0), 1)
    else:
        out = np.where(valid, stack, -np.inf).max(0)
    return np.where(has, out, 0.0)


def normalize_scores(scores: Mapping[str, np.ndarray], how: str = "mean") -> Scores:
    """Scale each group's scores so that channels of different groups compare.

    ``mean``/``max``/``sum``/``l2`` divide by that statistic of the group's absolute
    scores (so a group's typical channel scores about 1 with ``mean``); ``none`` copies.
    """
    if how not in NORMALIZERS:
        raise PrunepilotError(f"unknown normalisation {how!r}; choose from {NORMALIZERS}")
    out: Scores = {}
    for gid, s in scores.items():
        a = np.asarray(s, dtype=np.float64)
        mag = np.abs(a)
        if how == "none" or a.size == 0:
            out[gid] = a.copy()
            continue
        denom = {
            "mean": mag.mean(),
            "max": mag.max(),
            "sum": mag.sum(),
            "l2": float(np.sqrt((a * a).sum())),
        }[how]
        out[gid] = a / denom if denom > 0 else np.zeros_like(a)
    return out


def score_channels(
    model: nn.Module,
    graph: ChannelGraph,
    criterion: str | Criterion = "l2",
    *,
    calibration: Calibration | None = None,
    aggregate: Aggregate = "sum",
    normalize: Normalize = "none",
    groups: Iterable[str] | None = None,
    seed: int = 0,
) -> Scores:
    """Score every channel of every prunable group (higher = more important).

    Args:
        model: the model ``graph`` was traced from.
        graph: its channel graph.
        criterion: a registered name (see `available_criteria`) or a `Criterion`.
        calibration: the finished `Calibration` of this model; required by data-driven
            criteria.
        aggregate: how member scores combine into a channel score: ``sum``, ``mean``, ``max``.
        normalize: per-group normalisation for global ranking (see `normalize_scores`).
        groups: restrict to these group ids (default: all prunable groups).
        seed: seed for stochastic criteria (``random``).

    Returns:
        ``{group_id: array of group.channels scores}``, ready for `prunepilot.core.select`.

    Raises:
        UnknownCriterionError: the criterion is not registered.
        CalibrationError: a data-driven criterion without (matching) calibration data.
        PlanError: an unknown group id.
    """
    crit = get_criterion(criterion)
    if aggregate not in AGGREGATES:
        raise PrunepilotError(f"unknown aggregation {aggregate!r}; choose from {AGGREGATES}")
    if normalize not in NORMALIZERS:
        raise PrunepilotError(f"unknown normalisation {normalize!r}; choose from {NORMALIZERS}")
    if calibration is not None and calibration.model is not model:
        raise CalibrationError("the calibration was collected on a different model object")
    if crit.data_driven and calibration is None:
        raise CalibrationError(
            f"criterion {crit.name!r} is data-driven and needs calibration data: pass "
            "calibration=calibrate(model, loader, loss_fn) (or a Calibration you ran)"
        )
    chosen = graph.prunable if groups is None else [graph.group(g) for g in groups]
    ctx = ScoreContext(model, graph, calibration, seed)
    fallback = L2()
    out: Scores = {}
    for g in chosen:
        if g.channels == 0:
            continue
        parts = crit.member_scores(ctx, g)
        if not parts:
            log.info("criterion %s has nothing to read in group %s; using l2", crit.name, g.id)
            parts = fallback.member_scores(ctx, g)
        if not parts:
            out[g.id] = np.zeros(g.channels)
            continue
        out[g.id] = _aggregate(parts, aggregate, g.channels)
    return normalize_scores(out, normalize)
