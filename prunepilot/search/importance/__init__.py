"""Channel importance: criteria and their registry, calibration statistics, per-group scores.

Private modules, re-exported here; `prunepilot.search` re-exports the public names.
"""

from __future__ import annotations

from ._calibration import Calibration, calibrate
from ._channels import Reduce, owner, position_channels, to_channels
from ._criteria import (
    CRITERIA,
    ActivationCriterion,
    Criterion,
    GradientWeightCriterion,
    ScoreContext,
    WeightCriterion,
    available_criteria,
    get_criterion,
    register_criterion,
)
from ._scoring import AGGREGATES, NORMALIZERS, Scores, normalize_scores, score_channels

__all__ = [
    "AGGREGATES",
    "CRITERIA",
    "NORMALIZERS",
    "ActivationCriterion",
    "Calibration",
    "Criterion",
    "GradientWeightCriterion",
    "Reduce",
    "ScoreContext",
    "Scores",
    "WeightCriterion",
    "available_criteria",
    "calibrate",
    "get_criterion",
    "normalize_scores",
    "owner",
    "position_channels",
    "register_criterion",
    "score_channels",
    "to_channels",
]
