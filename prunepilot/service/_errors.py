"""Errors that carry an HTTP status and a message saying what to fix.

Raised by the resolvers (models, datasets, uploads) both in the API process, where the
app's handler turns them into ``{"detail": ...}`` responses, and in job runners, where
they become the FAILED job's error message.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "NotFound",
    "ServiceError",
    "SpecError",
    "TooLarge",
    "TooMany",
]


class ServiceError(Exception):
    """A client-side problem with a status code and a readable message.

    Args:
        detail: what is wrong and what to do about it.
    """

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SpecError(ServiceError):
    """The job spec names something that does not exist or cannot work (422)."""

    status_code = 422


class Forbidden(ServiceError):
    """The operator's policy refuses it (403)."""

    status_code = 403


class NotFound(ServiceError):
    """No such resource for this token (404)."""

    status_code = 404


class Conflict(ServiceError):
    """The resource is in the wrong state for the request (409)."""

    status_code = 409


class TooLarge(ServiceError):
    """The request body is over the limit (413)."""

    status_code = 413


class TooMany(ServiceError):
    """A per-token limit is reached (429)."""

    status_code = 429
