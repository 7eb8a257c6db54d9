"""The prunepilot service: a FastAPI jobs API that runs pruning searches on Ray.

`create_app` builds the app (job store in SQLite or PostgreSQL, artifacts on disk, a
scheduler running queued jobs on Ray workers); `serve` runs it with uvicorn; `Settings`
is the operator's configuration. The wire models (`JobSpec`, `JobInfo`, ...) are shared
with `prunepilot.client`.
"""

from __future__ import annotations

from ._app import create_app
from ._server import add_server_arguments, serve, settings_from_args
from ._settings import Settings
from .schemas import (
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
)

__all__ = [
    "ArtifactInfo",
    "DatasetSpec",
    "ErrorBody",
    "JobInfo",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "ModelSpec",
    "Settings",
    "TrialInfo",
    "TrialsPage",
    "UploadInfo",
    "add_server_arguments",
    "create_app",
    "serve",
    "settings_from_args",
]
