"""A NetAdapt-style greedy loop (Yang et al. 2018) with crash-safe checkpoints.

Each iteration asks every group (or block of groups) for the smallest shrink that cuts
the model's MACs by a step, prunes a copy, fine-tunes it briefly, scores it, and keeps
the best proposal; it repeats until the MACs target is met. After each iteration a
checkpoint records the plans applied so far and the current weights; a later call with
the same (original) model and checkpoint path replays the plans, loads the weights and
continues with the next iteration.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.core import ChannelGraph, ChannelGroup, PlanError, prune_channels, trace

from ..errors import CalibrationError
from ..importance._criteria import Criterion, get_criterion
from ..importance._scoring import Aggregate, Scores, score_channels
from ..recovery._finetune import Progress, ProgressCallback
from ._strategy import Plan, Strategy, ignored_groups, plan_for_ratio

__all__ = ["NetAdaptResult", "NetAdaptStep", "netadapt"]

log = logging.getLogger("prunepilot.search")

_FORMAT = "prunepilot-netadapt/1"


@dataclass
class NetAdaptStep:
    """One finished iteration: the chosen unit, its score and the MACs after it."""

    iteration: int
    unit: str
    score: float
    macs: int
    macs_kept: float
    plan: Plan
    proposals: dict[str, float] = field(default_factory=dict)


@dataclass
class NetAdaptResult:
    """The outcome: the (in place) pruned model, every iteration, and where it resumed."""

    model: nn.Module
    history: list[NetAdaptStep]
    macs: int
    macs_kept: float
    resumed_from: int = 0
    reached: bool = False


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _shapes_match(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return all(k in own and own[k].shape == v.shape for k, v in state.items())


def _unit_plan(
    model: nn.Module,
    graph: ChannelGraph,
    scores: Scores,
    unit: list[str],
    want: float,
    strategy: Strategy,
) -> tuple[Plan, bool]:
    """The smallest common ratio on ``unit``'s groups reaching ``want`` MACs (or the max)."""

    def plan_at(r: float) -> Plan:
        cfg = dataclasses.replace(strategy, config=dict.fromkeys(unit, r))
        return plan_for_ratio(model, graph, scores, 0.0, cfg)

    hi_plan = plan_at(strategy.max_remove)
    if graph.macs(hi_plan) > want:
        return hi_plan, False
    lo, hi = 0.0, strategy.max_remove
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        p = plan_at(mid)
        if graph.macs(p) <= want:
            hi, hi_plan = mid, p
        else:
            lo = mid
    return hi_plan, True


def netadapt(
    model: nn.Module,
    example_inputs: Any,
    *,
    target: float,
    evaluate: Callable[[nn.Module], float],
    finetune: Callable[[nn.Module], None] | None = None,
    step: float = 0.05,
    decay: float = 1.0,
    criterion: str | Criterion = "l2",
    scorer: Callable[[nn.Module, ChannelGraph], Scores] | None = None,
    aggregate: Aggregate = "sum",
    strategy: Strategy | None = None,
    blocks: Callable[[ChannelGroup], str] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    max_iterations: int = 100,
    callback: ProgressCallback | None = None,
) -> NetAdaptResult:
    """Greedily shrink ``model`` (in place) until its MACs are at most ``target`` of the original.

    Args:
        model: the original model (on resume: the same unpruned model, or one already
            pruned to the checkpoint's shapes).
        example_inputs: inputs for `prunepilot.core.trace`.
        target: fraction of the original MACs to keep, in (0, 1).
        evaluate: ``evaluate(model) -> score`` (higher is better), e.g. validation top-1.
        finetune: ``finetune(model)``: a short fine-tune of each proposal before scoring;
            ``lambda m: recalibrate_bn(m, loader)`` is a cheap alternative.
        step: MACs removed per iteration, as a fraction of the original MACs.
        decay: the step is multiplied by this after every iteration (NetAdapt's schedule).
        criterion: data-free criterion choosing which channels a proposal removes.
        scorer: ``scorer(model, graph) -> scores`` replacing ``criterion`` (e.g. to use a
            data-driven criterion through `calibrate`).
        aggregate: member aggregation for ``criterion``.
        strategy: ``round_to``, ``min_channels``, ``max_remove`` and ``ignore`` per proposal.
        blocks: maps a group to a block name; groups of one block shrink together
            (default: every group on its own).
        checkpoint: file written after every iteration; resumed from when it exists.
        resume: continue from ``checkpoint`` when present (False: start over).
        max_iterations: stop after this many iterations in total.
        callback: receives ``Progress("netadapt", iteration, ...)`` after each iteration,
            after the checkpoint is written.

    Returns:
        A `NetAdaptResult`.
    """
    strategy = strategy or Strategy()
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise PlanError(f"target must be a fraction of MACs to keep in (0, 1); got {target!r}")
    if not 0 < step < 1:
        raise PlanError(f"step must be a fraction of MACs in (0, 1); got {step!r}")
    if strategy.config:
        raise PlanError("netadapt chooses per-group widths itself; drop strategy.config")
    crit = get_criterion(criterion)
    if scorer is None and crit.data_driven:
        raise CalibrationError(
            f"netadapt scores with a data-free criterion; for {crit.name!r} pass "
            "scorer=lambda m, g: score_channels(m, g, ..., calibration=calibrate(...))"
        )
    path = Path(checkpoint) if checkpoint is not None else None
    history: list[NetAdaptStep] = []
    plans: list[Plan] = []
    start = 1
    macs0: int | None = None
    if path is not None and path.exists() and resume:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != _FORMAT:
            raise PlanError(f"{path} is not a netadapt checkpoint")
        if abs(float(ck["target"]) - float(target)) > 1e-12:
            raise PlanError(
                f"{path} was written for target {ck['target']}, not {target}; use another "
                "checkpoint path or resume=False"
            )
        plans = list(ck["plans"])
        if not _shapes_match(model, ck["state_dict"]):
            for p in plans:
                prune_channels(model, trace(model, example_inputs), p)
        model.load_state_dict(ck["state_dict"])
        history = [NetAdaptStep(**h) for h in ck["history"]]
        macs0 = int(ck["macs0"])
        start = int(ck["iteration"]) + 1
        log.info("netadapt: resumed from %s after iteration %d", path, start - 1)
    resumed_from = start - 1
    graph = trace(model, example_inputs)
    if macs0 is None:
        macs0 = graph.macs()
    goal = target * macs0
    it = start
    while graph.macs() > goal and it <= max_iterations:
        cur = graph.macs()
        want = max(goal, cur - step * decay ** (it - 1) * macs0)
        scores = (
            scorer(model, graph)
            if scorer is not None
            else score_channels(model, graph, crit, aggregate=aggregate)
        )
        skip = ignored_groups(model, graph, strategy.ignore)
        units: dict[str, list[str]] = {}
        for g in graph.prunable:
            if g.id not in skip and g.channels > 0:
                units.setdefault(blocks(g) if blocks else g.id, []).append(g.id)
        meeting: dict[str, Plan] = {}
        partial: dict[str, Plan] = {}
        for name, gids in units.items():
            p, ok = _unit_plan(model, graph, scores, gids, want, strategy)
            if p and graph.macs(p) < cur:
                (meeting if ok else partial)[name] = p
        proposals = meeting or partial
        if not proposals:
            log.warning("netadapt: no group can shrink further; stopping at %d MACs", cur)
            break
        results: dict[str, float] = {}
        best: tuple[float, int, str, nn.Module] | None = None
        for name, p in proposals.items():
            cand = copy.deepcopy(model)
            prune_channels(cand, graph, p)
            if finetune is not None:
                finetune(cand)
            score = float(evaluate(cand))
            results[name] = score
            key = (score, -graph.macs(p))
            if best is None or key > (best[0], best[1]):
                best = (score, -graph.macs(p), name, cand)
        assert best is not None
        score, _, name, cand = best
        plan = proposals[name]
        prune_channels(model, graph, plan)
        model.load_state_dict(cand.state_dict())
        plans.append(plan)
        graph = trace(model, example_inputs)
        rec = NetAdaptStep(it, name, score, graph.macs(), graph.macs() / macs0, plan, results)
        history.append(rec)
        log.info(
            "netadapt %d: shrink %s -> score %.4f, MACs kept %.3f", it, name, score, rec.macs_kept
        )
        if path is not None:
            _save(
                path,
                {
                    "format": _FORMAT,
                    "iteration": it,
                    "target": float(target),
                    "step": float(step),
                    "macs0": int(macs0),
                    "plans": plans,
                    "history": [dataclasses.asdict(h) for h in history],
                    "state_dict": model.state_dict(),
                },
            )
        if callback is not None:
            callback(
                Progress(
                    "netadapt",
                    it,
                    None,
                    metric=score,
                    info={"unit": name, "macs": rec.macs, "macs_kept": rec.macs_kept},
                )
            )
        it += 1
    macs = graph.macs()
    return NetAdaptResult(model, history, macs, macs / macs0, resumed_from, macs <= goal)
