"""Every exception the service raises on purpose, in one place.

Hierarchy::

    Exception
    ├── ServiceError          a client-side problem: an HTTP status and a message saying
    │   │                     what to fix; the app answers ``{"detail": ...}`` with it, a job
    │   │                     runner makes it the FAILED job's error
    │   ├── BadUploadError        400  malformed upload request
    │   ├── UnauthorizedError     401  no valid bearer token
    │   ├── ForbiddenError        403  the operator's policy refuses it
    │   ├── NotFoundError         404  no such resource for this token
    │   ├── ConflictError         409  the resource is in the wrong state
    │   ├── TooLargeError         413  over a size limit or quota
    │   ├── InvalidSpecError      422  the job spec cannot work
    │   └── TooManyError          429  a per-token limit is reached
    ├── UploadError           the upload body is malformed (routes: `BadUploadError`)
    │   └── UploadTooLarge        over the size limit (routes: `TooLargeError`)
    │       └── UploadOverQuota   over what is left of the owner's quota
    ├── ArchiveError          an unsafe, malformed or too large archive (resolvers:
    │                         `InvalidSpecError`)
    ├── UploadInUse           unfinished jobs use the upload (routes: `ConflictError`)
    └── UploadMissing         uploads a spec names are gone (routes: `InvalidSpecError`)

The lower ones are raised by storage and parsing code that knows nothing of HTTP; the
routes and resolvers turn them into a `ServiceError` with the same message. The names differ
from `prunepilot.client`'s (``NotFound``, ``Conflict``, ``SpecError``, ...), which are what a
client receives, not what the server raises.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "BadUploadError",
    "ConflictError",
    "ForbiddenError",
    "InvalidSpecError",
    "NotFoundError",
    "ServiceError",
    "TooLargeError",
    "TooManyError",
    "UnauthorizedError",
    "UploadError",
    "UploadInUse",
    "UploadMissing",
    "UploadOverQuota",
    "UploadTooLarge",
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


class BadUploadError(ServiceError):
    """The upload request is malformed (400)."""

    status_code = 400


class UnauthorizedError(ServiceError):
    """No valid bearer token (401)."""

    status_code = 401


class ForbiddenError(ServiceError):
    """The operator's policy refuses it (403)."""

    status_code = 403


class NotFoundError(ServiceError):
    """No such resource for this token (404)."""

    status_code = 404


class ConflictError(ServiceError):
    """The resource is in the wrong state for the request (409)."""

    status_code = 409


class TooLargeError(ServiceError):
    """The request body is over the limit (413)."""

    status_code = 413


class InvalidSpecError(ServiceError):
    """The job spec names something that does not exist or cannot work (422)."""

    status_code = 422


class TooManyError(ServiceError):
    """A per-token limit is reached (429)."""

    status_code = 429


class UploadError(Exception):
    """The upload request is malformed (wrong content type, no file part)."""


class UploadTooLarge(UploadError):
    """The upload crosses the operator's size limit."""


class UploadOverQuota(UploadTooLarge):
    """The upload crosses what is left of its owner's quota.

    Attributes:
        size: the bytes received when it was refused.
    """

    def __init__(self, size: int) -> None:
        super().__init__(f"the upload crossed its owner's quota after {size} bytes")
        self.size = size


class ArchiveError(Exception):
    """The archive is unsafe, malformed or too large."""


class UploadInUse(Exception):
    """An upload cannot be removed: unfinished jobs use it.

    Attributes:
        job_ids: those jobs.
    """

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(", ".join(job_ids))
        self.job_ids = job_ids


class UploadMissing(Exception):
    """A job cannot be queued: uploads its spec names are gone (deleted or expired since
    the submit check).

    Attributes:
        upload_ids: those uploads.
    """

    def __init__(self, upload_ids: list[str]) -> None:
        super().__init__(", ".join(upload_ids))
        self.upload_ids = upload_ids
