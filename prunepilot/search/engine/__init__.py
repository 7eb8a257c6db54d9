"""The search engine: space, budgets, baselines, evaluator, pool, Optuna driver, study, results.

Private modules, re-exported here; `prunepilot.search` re-exports the public names.
"""

from __future__ import annotations

from ._baselines import baseline_config, grid_params
from ._budget import Budgets
from ._driver import search
from ._evaluator import (
    Evaluation,
    Evaluator,
    Finetuned,
    Limited,
    Metric,
    SearchData,
    Workload,
    top1,
)
from ._pool import LocalPool, Outcome, Pool, Task, run_task
from ._result import Baseline, Finalist, SearchProgress, SearchResult, TrialRecord, pareto_front
from ._space import Config, Dimension, Space
from ._study import delete_study, open_storage, open_study, read_trials, write_record

__all__ = [
    "Baseline",
    "Budgets",
    "Config",
    "Dimension",
    "Evaluation",
    "Evaluator",
    "Finalist",
    "Finetuned",
    "Limited",
    "LocalPool",
    "Metric",
    "Outcome",
    "Pool",
    "SearchData",
    "SearchProgress",
    "SearchResult",
    "Space",
    "Task",
    "TrialRecord",
    "Workload",
    "baseline_config",
    "delete_study",
    "grid_params",
    "open_storage",
    "open_study",
    "pareto_front",
    "read_trials",
    "run_task",
    "search",
    "top1",
    "write_record",
]
