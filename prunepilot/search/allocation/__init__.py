"""Allocation: how many channels each group loses (strategies), and pruning schedules
(iterative, NetAdapt) that alternate pruning with recovery.

Private modules, re-exported here; `prunepilot.search` re-exports the public names.
"""

from __future__ import annotations

from ._netadapt import NetAdaptResult, NetAdaptStep, netadapt
from ._schedule import SCHEDULES, StepRecord, iterative_prune, sparsity_schedule
from ._strategy import (
    Plan,
    Strategy,
    check_ratio,
    ignored_groups,
    lamp_scores,
    plan_for_macs,
    plan_for_ratio,
    plan_within,
)

__all__ = [
    "SCHEDULES",
    "NetAdaptResult",
    "NetAdaptStep",
    "Plan",
    "StepRecord",
    "Strategy",
    "check_ratio",
    "ignored_groups",
    "iterative_prune",
    "lamp_scores",
    "netadapt",
    "plan_for_macs",
    "plan_for_ratio",
    "plan_within",
    "sparsity_schedule",
]
