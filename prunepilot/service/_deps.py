"""The per-app service state and the typed FastAPI dependencies the routers use."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prunepilot.schemas import ErrorBody

from ._artifacts import ArtifactStore
from ._metrics import Metrics
from ._scheduler import Scheduler
from ._settings import Settings
from ._store import Database
from ._streams import StreamSlots
from ._upload_quota import InFlight
from .errors import UnauthorizedError

__all__ = [
    "OWNED_RESOURCE_ERRORS",
    "OwnerDep",
    "Service",
    "ServiceDep",
    "get_owner",
    "get_service",
]

_OPEN_OWNER = "local"

# The errors every route on a token's own resources can answer (OpenAPI documentation).
OWNED_RESOURCE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid bearer token"},
    404: {"model": ErrorBody, "description": "no such resource for this token"},
}


@dataclass
class Service:
    """Everything one app instance shares between requests.

    Attributes:
        settings: the operator's settings.
        db: the job store.
        store: the artifact store.
        scheduler: runs jobs (``None`` when this process does not schedule).
        owners: bearer token -> owner (empty when auth is off).
        metrics: Prometheus collectors of this app.
        stopping: set when the app shuts down (ends event streams).
        uploads_in_flight: bytes of uploads in progress, per owner (quota checks).
        event_streams: open event streams, per owner (bounded).
    """

    settings: Settings
    db: Database
    store: ArtifactStore
    scheduler: Scheduler | None
    owners: dict[str, str]
    metrics: Metrics
    stopping: threading.Event = field(default_factory=threading.Event)
    _optuna: Any = None
    _optuna_lock: threading.Lock = field(default_factory=threading.Lock)
    uploads_in_flight: InFlight = field(default_factory=InFlight)
    event_streams: StreamSlots = field(default_factory=StreamSlots)

    def optuna_storage(self) -> Any:
        """The Optuna storage of the job studies (created once, on first use)."""
        with self._optuna_lock:
            if self._optuna is None:
                from prunepilot.search import open_storage

                self._optuna = open_storage(self.settings.db_url)
            return self._optuna

    def owner_of(self, token: str) -> str | None:
        """The owner a token belongs to (constant-time comparison)."""
        found = None
        for known, owner in self.owners.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = owner
        return found


async def get_service(request: Request) -> Service:
    """The app's `Service`."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


_bearer = HTTPBearer(
    auto_error=False,
    description="a token the operator configured (PRUNEPILOT_TOKENS, or DATA_DIR/token)",
)


async def get_owner(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The owner of the request's bearer token (async: no thread hop per request).

    Raises:
        UnauthorizedError: no ``Authorization: Bearer`` header, or an unknown token.
    """
    if not service.settings.auth:
        return _OPEN_OWNER
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <token>'")
    owner = service.owner_of(credentials.credentials)
    if owner is None:
        raise UnauthorizedError("invalid bearer token")
    return owner


OwnerDep = Annotated[str, Depends(get_owner)]
