"""Liveness, readiness and Prometheus metrics (no auth: probes and scrapers have no token)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from ._deps import ServiceDep
from ._openapi import errors

__all__ = ["router"]

router = APIRouter(tags=["health"])

_STALE_TICKS = 20


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses=errors((503, "the database, the scheduler or the connection to Ray is not working")),
)
async def readyz(service: ServiceDep) -> JSONResponse:
    """The database answers and (when this process schedules) the scheduler runs and
    Ray can be reached (``ray``: ``ok (N nodes, N CPUs, N GPUs)``, ``not connected yet``
    or ``error: ...``)."""
    checks: dict[str, str] = {}
    ok = True
    try:
        await run_in_threadpool(service.db.ping)
        checks["database"] = "ok"
    except Exception as e:  # report any database failure as not ready
        checks["database"] = f"error: {type(e).__name__}: {e}"
        ok = False
    sched = service.scheduler
    if sched is None:
        checks["scheduler"] = "disabled"
    elif not sched.alive:
        checks["scheduler"] = "not running"
        ok = False
    elif sched.error:
        checks["scheduler"] = f"error: {sched.error}"
        ok = False
    elif time.monotonic() - sched.last_tick > _STALE_TICKS * service.settings.poll_interval_s + 30:
        checks["scheduler"] = "stalled"
        ok = False
    else:
        checks["scheduler"] = "ok"
    if sched is None:
        checks["ray"] = "disabled"
    else:
        ray_ok, checks["ray"] = sched.ray_link.check()
        ok = ok and ray_ok
    if not ok:
        detail = "; ".join(f"{k}: {v}" for k, v in checks.items())
        return JSONResponse({"detail": f"not ready: {detail}", **checks}, status_code=503)
    return JSONResponse({"status": "ok", **checks})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "metrics"}},
)
async def metrics(service: ServiceDep) -> Response:
    """Jobs by status, trials evaluated, requests by route and status, request latency."""
    body = await run_in_threadpool(generate_latest, service.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
