"""The wire models: job specs, budgets, search settings and what the API reports.

A leaf package that any layer may import (core excepted, which needs none of it): it
depends on the standard library and pydantic only, so `prunepilot.client` reads and writes
these models without torch or the server, and the search, the workers and the service all
share one definition of each. Every model is a pydantic v2 model, because each crosses a
process boundary (Ray workers) or the network (the service's API).
"""

from __future__ import annotations

from ._budget import Budget, Constraints, LatencyTarget
from ._common import MAX_BATCHES, MAX_SEED, MAX_STEPS, MAX_TRIALS
from ._job import (
    DATASET_SOURCE_PATTERN,
    MODEL_SOURCE_PATTERN,
    UPLOAD_ID_PATTERN,
    ArtifactInfo,
    DatasetSpec,
    ErrorBody,
    JobInfo,
    JobPage,
    JobSpec,
    JobStatus,
    ModelSpec,
    TrialInfo,
    TrialsPage,
    UploadInfo,
    UploadPage,
)
from ._search import FinetuneSettings, SearchSettings, SearchSpace, SearchSpec

__all__ = [
    "DATASET_SOURCE_PATTERN",
    "MAX_BATCHES",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_TRIALS",
    "MODEL_SOURCE_PATTERN",
    "UPLOAD_ID_PATTERN",
    "ArtifactInfo",
    "Budget",
    "Constraints",
    "DatasetSpec",
    "ErrorBody",
    "FinetuneSettings",
    "JobInfo",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "LatencyTarget",
    "ModelSpec",
    "SearchSettings",
    "SearchSpace",
    "SearchSpec",
    "TrialInfo",
    "TrialsPage",
    "UploadInfo",
    "UploadPage",
]
