"""Decide which channels to remove and how many, then recover accuracy.

Built on `prunepilot.core`'s public API only:

* importance criteria (`score_channels`, a registry users extend with `register_criterion`):
  data-free ``l1``, ``l2``, ``fpgm``, ``bn_scale``, ``random``; data-driven ``taylor``,
  ``taylor_weight``, ``apoz``, ``mean_activation``, ``fisher``, ``sensitivity`` from a
  `Calibration` (context manager) or `calibrate` (one call);
* `recalibrate_bn` (adaptive BatchNorm);
* strategies (`Strategy`, `plan_for_ratio`, `plan_for_macs`, `plan_within`): uniform,
  global or LAMP ranking,
  explicit per-group config, ``round_to``, minimum channels, ignored layers;
* schedules (`sparsity_schedule`, `iterative_prune`) and a NetAdapt loop (`netadapt`);
* fine-tuning (`Trainer`, `evaluate`, `distillation_loss`).
"""

from __future__ import annotations

from prunepilot.schemas import (
    Budget,
    Constraints,
    FinetuneSettings,
    LatencyTarget,
    SearchSettings,
    SearchSpace,
    SearchSpec,
)

from ._bn import recalibrate_bn
from ._calibration import Calibration, calibrate
from ._candidate import (
    Evaluation,
    Evaluator,
    Finetuned,
    Limited,
    Metric,
    SearchData,
    Workload,
    top1,
)
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
from ._driver import search
from ._finetune import (
    EvalResult,
    FitResult,
    Progress,
    ProgressCallback,
    Trainer,
    distillation_loss,
    evaluate,
)
from ._latency import LatencyStats, latency_inputs, measure_latency, measure_relative
from ._latency_model import LatencyModel
from ._netadapt import NetAdaptResult, NetAdaptStep, netadapt
from ._pool import LocalPool, Outcome, Pool, Task, run_task
from ._result import (
    Baseline,
    Finalist,
    SearchProgress,
    SearchResult,
    TrialRecord,
    pareto_front,
)
from ._schedule import SCHEDULES, StepRecord, iterative_prune, sparsity_schedule
from ._scoring import AGGREGATES, NORMALIZERS, Scores, normalize_scores, score_channels
from ._space import Config, Dimension, Space
from ._strategy import (
    Plan,
    Strategy,
    ignored_groups,
    lamp_scores,
    plan_for_macs,
    plan_for_ratio,
    plan_within,
)
from ._study import delete_study, open_storage, read_trials
from .errors import (
    CalibrationError,
    InfeasibleError,
    LatencyError,
    SearchCancelled,
    UnknownCriterionError,
)

__all__ = [
    "AGGREGATES",
    "CRITERIA",
    "NORMALIZERS",
    "SCHEDULES",
    "ActivationCriterion",
    "Baseline",
    "Budget",
    "Calibration",
    "CalibrationError",
    "Config",
    "Constraints",
    "Criterion",
    "Dimension",
    "EvalResult",
    "Evaluation",
    "Evaluator",
    "Finalist",
    "FinetuneSettings",
    "Finetuned",
    "FitResult",
    "GradientWeightCriterion",
    "InfeasibleError",
    "LatencyError",
    "LatencyModel",
    "LatencyStats",
    "LatencyTarget",
    "Limited",
    "LocalPool",
    "Metric",
    "NetAdaptResult",
    "NetAdaptStep",
    "Outcome",
    "Plan",
    "Pool",
    "Progress",
    "ProgressCallback",
    "ScoreContext",
    "Scores",
    "SearchCancelled",
    "SearchData",
    "SearchProgress",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "SearchSpec",
    "Space",
    "StepRecord",
    "Strategy",
    "Task",
    "Trainer",
    "TrialRecord",
    "UnknownCriterionError",
    "WeightCriterion",
    "Workload",
    "available_criteria",
    "calibrate",
    "delete_study",
    "distillation_loss",
    "evaluate",
    "get_criterion",
    "ignored_groups",
    "iterative_prune",
    "lamp_scores",
    "latency_inputs",
    "measure_latency",
    "measure_relative",
    "netadapt",
    "normalize_scores",
    "open_storage",
    "pareto_front",
    "plan_for_macs",
    "plan_for_ratio",
    "plan_within",
    "read_trials",
    "recalibrate_bn",
    "register_criterion",
    "run_task",
    "score_channels",
    "search",
    "sparsity_schedule",
    "top1",
]
