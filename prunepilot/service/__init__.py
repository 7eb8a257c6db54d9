"""The prunepilot service: a FastAPI jobs API that runs pruning searches on Ray.

`create_app` builds the app (job store in SQLite or PostgreSQL, artifacts on disk, a
scheduler running queued jobs on Ray workers); `serve` runs it with uvicorn; `Settings`
is the operator's configuration. The wire models (`JobSpec`, `JobInfo`, ...) come from
`prunepilot.schemas`, shared with `prunepilot.client`, and are re-exported here.
"""

from __future__ import annotations

from prunepilot.schemas import (
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

from ._app import create_app
from ._server import add_server_arguments, serve, settings_from_args
from ._settings import Settings

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
