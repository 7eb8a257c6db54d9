"""The client's exceptions: one base class, one subclass per way a call can fail.

Every 4xx answer becomes an `ApiError` subclass chosen by status code and carrying the
server's ``detail`` message, so callers can catch ``NotFound`` or ``Conflict`` without
parsing text. Failures to reach the server at all (after the retries) are
`ServerUnavailable`. The names mirror HTTP statuses; they are the client's own and are
not the service's internal exceptions.

Hierarchy::

    ClientError                     every error the client raises
    ├── SpecError (ValueError)      a job spec that cannot be read or does not validate
    ├── ApiError                    the server answered with an error status
    │   ├── BadRequest              400
    │   ├── Unauthorized            401
    │   ├── Forbidden               403
    │   ├── NotFound                404
    │   ├── Conflict                409
    │   ├── TooLarge                413
    │   ├── ValidationFailed        422
    │   ├── RateLimited             429
    │   └── ServerError             5xx, after the retries
    ├── ServerUnavailable           unreachable (or 502/503/504) after the retries
    ├── ChecksumMismatch            a download's sha256 differs from the announced one
    └── JobTimeout (TimeoutError)   `Job.wait` ran out of time
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BadRequest",
    "ChecksumMismatch",
    "ClientError",
    "Conflict",
    "Forbidden",
    "JobTimeout",
    "NotFound",
    "RateLimited",
    "ServerError",
    "ServerUnavailable",
    "SpecError",
    "TooLarge",
    "Unauthorized",
    "ValidationFailed",
    "error_for_status",
]


class ClientError(Exception):
    """Base class of every error the prunepilot client raises."""


class SpecError(ClientError, ValueError):
    """A job spec could not be read or does not validate (checked before any request)."""


class ApiError(ClientError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        detail: the server's explanation (``ErrorBody.detail``), or the raw body.
        method: the request's HTTP method.
        url: the request's URL.
    """

    def __init__(self, status: int, detail: str, *, method: str = "", url: str = "") -> None:
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        super().__init__(f"{status}: {detail}" if detail else str(status))


class BadRequest(ApiError):
    """400: the request is malformed or names something unusable."""


class Unauthorized(ApiError):
    """401: no token, or a token the server does not know."""


class Forbidden(ApiError):
    """403: the token may not do this."""


class NotFound(ApiError):
    """404: no such job, artifact or upload (for this token)."""


class Conflict(ApiError):
    """409: the job's state forbids this (e.g. deleting a running job)."""


class TooLarge(ApiError):
    """413: the upload exceeds the server's size limit."""


class ValidationFailed(ApiError):
    """422: the server rejected the request body (e.g. an invalid job spec)."""


class RateLimited(ApiError):
    """429: too many jobs or requests for this token."""


class ServerError(ApiError):
    """5xx: the server failed, and kept failing through the retries."""


class ServerUnavailable(ClientError):
    """The server could not be reached (or kept answering 502/503/504) after the retries.

    Attributes:
        attempts: how many times the request was tried.
    """

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        self.attempts = attempts
        super().__init__(message)


class ChecksumMismatch(ClientError):
    """A downloaded file's sha256 differs from the one the server announced."""


class JobTimeout(ClientError, TimeoutError):
    """`Job.wait` ran out of time before the job reached a terminal status."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: ValidationFailed,
    429: RateLimited,
}


def error_for_status(status: int, detail: str, *, method: str = "", url: str = "") -> ApiError:
    """The `ApiError` subclass for an HTTP error status, carrying the server's message."""
    if status >= 500:
        cls: type[ApiError] = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(status, detail, method=method, url=url)
