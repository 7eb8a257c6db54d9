"""The FastAPI application factory: routers, error bodies, metrics, scheduler lifecycle.

Every error answers ``{"detail": "..."}`` with a sentence saying what is wrong and what
to fix, including request validation (422) and unexpected failures (500).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from prunepilot import __version__
from prunepilot.schemas import ErrorBody

from . import _openapi, _routes_health, _routes_jobs, _routes_ui, _routes_uploads
from ._allow import allow_header
from ._artifacts import ArtifactStore
from ._deps import Service
from ._metrics import Metrics, MetricsMiddleware
from ._scheduler import Scheduler
from ._settings import Settings
from ._store import Database
from .errors import ServiceError, UnauthorizedError

__all__ = ["create_app"]

log = logging.getLogger("prunepilot.service")

_MAX_JSON_BYTES = 1 << 20

_DESCRIPTION = """\
Prune models under FLOPs, parameter and latency budgets as jobs.

Submit a job spec (model, dataset, constraints, search and fine-tune settings) to
`POST /jobs`, follow it with `GET /jobs/{id}` or `GET /jobs/{id}/events`, then download
the pruned checkpoint (`prunepilot.load` rebuilds it), its ONNX export and a JSON report
from `GET /jobs/{id}/artifacts/{name}`. Upload weights and datasets with `POST /uploads`.
Every endpoint but the health probes needs `Authorization: Bearer <token>`. A web UI
at `/ui` shows the token's jobs, live progress and trials.
"""


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "request"


def _validation_message(exc: RequestValidationError) -> str:
    msgs = []
    for err in exc.errors():
        kind = err.get("type", "")
        loc = list(err.get("loc", ()))
        if kind == "json_invalid":
            ctx = err.get("ctx") or {}
            where = f" at position {loc[1]}" if len(loc) > 1 else ""
            msgs.append(
                f"the request body is not valid JSON: {ctx.get('error', 'decode error')}{where}"
            )
            continue
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if kind == "missing" and loc == ["body"]:
            msgs.append("the request needs a JSON body")
            continue
        msgs.append(f"{_loc(loc)}: {msg}")
    return "; ".join(msgs[:10]) + (f" (and {len(msgs) - 10} more)" if len(msgs) > 10 else "")


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, UnauthorizedError) else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint; see /docs for the API"
        elif exc.status_code == 405:
            detail = "method not allowed on this endpoint; see /docs for the API"
            allow = allow_header(request.app, request.url.path)
            headers = {"Allow": allow} if allow else headers
        elif exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's 400 for a JSON body that is not UTF-8: invalid JSON, like any other (422)
            detail = (
                "the request body is not valid JSON: it is not UTF-8 text (byte "
                f"{exc.__cause__.start})"
            )
            return JSONResponse({"detail": detail}, status_code=422)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class _LastResort:
    """Answers an unhandled error with a JSON 500 and keeps the connection usable.

    Starlette's outermost error middleware answers and then re-raises, so the server
    drops the keep-alive connection; this one (inside it) logs the traceback and returns.
    An error after the response has started cannot be answered: it propagates, and the
    server closes the half-sent response.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:
                raise
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            detail = f"internal server error ({type(exc).__name__}); see the server log"
            await JSONResponse({"detail": detail}, status_code=500)(scope, receive, send)


class _BodyLimit:
    """Refuses JSON bodies over 1 MiB (uploads are exempt, they have their own limit).

    A declared ``Content-Length`` over the limit is refused before reading; otherwise the
    bytes are counted as the app reads them, so a chunked body is refused (413) as soon as
    it crosses the limit instead of being read whole.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/uploads"):
            await self.app(scope, receive, send)
            return
        detail = f"request body over {_MAX_JSON_BYTES} bytes; send a smaller JSON body"
        for k, v in scope.get("headers", ()):
            if k == b"content-length" and v.isdigit() and int(v) > _MAX_JSON_BYTES:
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > _MAX_JSON_BYTES:  # FastAPI re-raises HTTP errors from body reads
                raise StarletteHTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service's FastAPI app.

    Creates the data directories and migrates the database to the newest schema at once;
    the scheduler (when ``settings.scheduler``) starts with the app's lifespan and recovers
    jobs a previous process left running.

    Args:
        settings: the operator's settings (default: `Settings.from_env`).
    """
    settings = settings or Settings.from_env()
    settings.ensure_dirs()
    db = Database(settings.db_url)
    db.migrate()
    owners = settings.token_owners() if settings.auth else {}
    scheduler = Scheduler(settings, db) if settings.scheduler else None
    service = Service(
        settings=settings,
        db=db,
        store=ArtifactStore(settings.artifacts_path),
        scheduler=scheduler,
        owners=owners,
        metrics=Metrics(db.count_by_status, db.trials_total),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.optuna_storage)  # creates Optuna's tables once
        if scheduler is not None:
            await run_in_threadpool(scheduler.start)
        log.info("prunepilot service ready (database %s)", _safe_url(settings.db_url))
        try:
            yield
        finally:
            service.stopping.set()
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop)
            db.dispose()

    app = FastAPI(
        title="prunepilot",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        responses={422: {"model": ErrorBody, "description": "the request cannot be processed"}},
    )
    app.state.service = service
    app.include_router(_routes_jobs.router)
    app.include_router(_routes_uploads.router)
    app.include_router(_routes_health.router)
    app.include_router(_routes_ui.router)
    _openapi.install(app)
    _install_error_handlers(app)
    app.add_middleware(_BodyLimit)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    app.add_middleware(_LastResort)  # outermost of ours: covers the two above as well
    return app


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"
