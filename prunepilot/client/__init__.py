"""Python client and command line for the prunepilot service.

``Client(url, token)`` speaks the service's HTTP API and returns the same pydantic models
the server sends (`prunepilot.schemas`); ``Client.submit`` returns a `Job` to poll,
wait on with a progress bar, and download artifacts from. The ``prunepilot`` command
(`prunepilot.client._cli`) wraps it.
"""

from __future__ import annotations

from ._client import DEFAULT_URL, Client, Event, Job
from ._spec_file import load_spec
from .errors import (
    ApiError,
    BadRequest,
    ChecksumMismatch,
    ClientError,
    Conflict,
    Forbidden,
    JobTimeout,
    NotFound,
    RateLimited,
    ServerError,
    ServerUnavailable,
    SpecError,
    TooLarge,
    Unauthorized,
    ValidationFailed,
)

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Conflict",
    "Event",
    "Forbidden",
    "Job",
    "JobTimeout",
    "NotFound",
    "RateLimited",
    "ServerError",
    "ServerUnavailable",
    "SpecError",
    "TooLarge",
    "Unauthorized",
    "ValidationFailed",
    "load_spec",
]
