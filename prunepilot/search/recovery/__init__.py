"""Recovery after pruning: fine-tuning (with distillation) and BatchNorm recalibration.

Private modules, re-exported here; `prunepilot.search` re-exports the public names.
"""

from __future__ import annotations

from ._bn import recalibrate_bn
from ._finetune import (
    EvalResult,
    FitResult,
    Progress,
    ProgressCallback,
    Trainer,
    distillation_loss,
    evaluate,
)

__all__ = [
    "EvalResult",
    "FitResult",
    "Progress",
    "ProgressCallback",
    "Trainer",
    "distillation_loss",
    "evaluate",
    "recalibrate_bn",
]
