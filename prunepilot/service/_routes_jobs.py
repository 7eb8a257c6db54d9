"""``/jobs``: submit, list, inspect, cancel and delete jobs; trials, events, logs, artifacts.

A token sees only its own jobs: another owner's job id answers 404 exactly like an
unknown one, so ids leak nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from prunepilot.schemas import ArtifactInfo, JobInfo, JobPage, JobSpec, JobStatus, TrialsPage

from . import _trials
from ._deps import OWNED_RESOURCE_ERRORS, OwnerDep, Service, ServiceDep
from ._openapi import errors
from ._params import ArtifactName, Cursor, JobId, LastEventId
from ._rows import JobRow
from ._store import ACTIVE, IntegrityError, job_info
from ._validation import validate_job
from .errors import (
    ConflictError,
    InvalidSpecError,
    NotFoundError,
    TooManyError,
    UploadMissing,
)

__all__ = ["router"]

log = logging.getLogger("prunepilot.service")

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=OWNED_RESOURCE_ERRORS)

_HEARTBEAT_S = 15.0
_CURSOR = re.compile(r"s([1-9][0-9]{0,17})")  # a row sequence number, well inside int64


def _job(service: Service, job_id: str, owner: str) -> JobRow:
    row = service.db.get_job(job_id, owner)
    if row is None:
        raise NotFoundError(f"no job {job_id!r} for this token")
    return row


def _fingerprint(spec: JobSpec) -> str:
    """The sha256 of the spec as it will be stored, once it is known to parse back as is."""
    stored = spec.model_dump_json()
    try:
        same = JobSpec.model_validate_json(stored) == spec
    except ValidationError as e:
        raise InvalidSpecError(
            f"the spec does not survive storage: {e.errors()[0]['msg']}"
        ) from None
    if not same:
        raise InvalidSpecError(
            "the spec changes when stored; give plain finite numbers and strings"
        )
    return hashlib.sha256(stored.encode()).hexdigest()


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    m = _CURSOR.fullmatch(raw)
    if m is None:
        raise InvalidSpecError(
            "invalid cursor: pass the next_cursor value of a previous page unchanged"
        )
    return int(m.group(1))


@router.post(
    "",
    status_code=201,
    summary="Submit a job",
    responses={
        200: {"model": JobInfo, "description": "an idempotent replay: the existing job"},
        **errors(
            (403, "the operator's policy refuses the model or data"),
            (409, "Idempotency-Key reused with another spec"),
            (413, "the JSON body is over the server's limit"),
            (422, "the spec is invalid, or names something that does not exist or fit"),
            (429, "too many unfinished jobs for this token"),
        ),
    },
)
def submit_job(
    spec: JobSpec,
    service: ServiceDep,
    owner: OwnerDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="the same key (per token) returns the same job instead of a new one",
        ),
    ] = None,
) -> JobInfo:
    """Validate the spec (everything it names must exist and fit), then queue the job."""
    db = service.db
    fingerprint = _fingerprint(spec)
    if idempotency_key is not None:
        hit = db.idempotent_job(owner, idempotency_key)
        if hit is not None:
            return _replay(service, owner, hit, fingerprint, response)
    validate_job(spec, owner, service.settings, db)
    active = db.count_active(owner)
    if active >= service.settings.max_jobs_per_token:
        raise TooManyError(
            f"this token has {active} unfinished jobs (limit "
            f"{service.settings.max_jobs_per_token}); wait for one to finish or cancel one"
        )
    job_id = secrets.token_hex(8)
    try:
        row = db.add_job(
            job_id,
            owner,
            spec,
            idempotency=(idempotency_key, fingerprint) if idempotency_key else None,
        )
    except IntegrityError:
        hit = db.idempotent_job(owner, idempotency_key or "")
        if hit is None:
            raise
        return _replay(service, owner, hit, fingerprint, response)
    except UploadMissing as e:
        raise InvalidSpecError(
            f"upload {', '.join(e.upload_ids)} was deleted or expired while the job was being "
            "submitted; upload it again (GET /uploads lists yours)"
        ) from None
    log.info("job %s submitted by %s", job_id, owner)
    if service.scheduler is not None:
        service.scheduler.wake()
    return job_info(row)


def _replay(
    service: Service, owner: str, hit: tuple[str, str], fingerprint: str, response: Response
) -> JobInfo:
    job_id, known = hit
    if known != fingerprint:
        raise ConflictError(
            "this Idempotency-Key was already used for a different job spec; use a new key "
            "for a new job"
        )
    response.status_code = 200
    return job_info(_job(service, job_id, owner))


@router.get("", summary="List jobs, newest first")
def list_jobs(
    service: ServiceDep,
    owner: OwnerDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="jobs per page")] = 20,
    cursor: Cursor = None,
) -> JobPage:
    """One page of this token's jobs; follow ``next_cursor`` for older ones."""
    before = _decode_cursor(cursor) if cursor else None
    rows = service.db.list_jobs(owner, status, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(
        items=[job_info(r) for r in rows],
        next_cursor=_encode_cursor(rows[-1].seq) if more and rows else None,
    )


@router.get("/{job_id}", summary="A job's status, progress and result")
async def get_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobInfo:
    """The job: status, phase, trials done and planned, best score, error, result."""
    # clients poll this: one indexed read of a WAL database (readers never wait for
    # writers) is cheaper inline than a hop to the thread pool
    return job_info(_job(service, job_id, owner))


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job",
    responses=errors((409, "the job already finished")),
)
def cancel_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobInfo:
    """Queued jobs are cancelled at once; running ones stop within seconds (CANCELLING)."""
    row = _job(service, job_id, owner)
    if JobStatus(row.status).terminal:
        raise ConflictError(f"job {job_id} already finished ({row.status}); nothing to cancel")
    new = service.db.request_cancel(job_id)
    if new is None:
        row = _job(service, job_id, owner)
        raise ConflictError(f"job {job_id} already finished ({row.status}); nothing to cancel")
    log.info("job %s: cancel requested (%s)", job_id, new)
    if service.scheduler is not None:
        service.scheduler.wake()
    return job_info(_job(service, job_id, owner))


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished job and its files",
    responses=errors((409, "the job has not finished")),
)
def delete_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> Response:
    """Remove a finished job: its record, artifacts, logs and Optuna study."""
    status = job_info(_job(service, job_id, owner)).status  # an unreadable spec: FAILED
    if status in ACTIVE:
        raise ConflictError(
            f"job {job_id} is {status.value}; cancel it and wait until it is CANCELLED first"
        )
    service.store.remove(job_id)
    shutil.rmtree(service.settings.jobs_path / job_id, ignore_errors=True)
    _trials.delete(service.optuna_storage(), job_id)
    service.db.delete_job(job_id)
    log.info("job %s deleted", job_id)
    return Response(status_code=204)


@router.get("/{job_id}/trials", summary="Every trial of the job's search")
def get_trials(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> TrialsPage:
    """Trials (config, MACs, latency, score, feasible) and the Pareto front; live while running."""
    row = _job(service, job_id, owner)
    if row.status == JobStatus.SUCCEEDED.value:
        path = service.store.path(job_id, "report.json")
        page = _trials.from_report(path) if path is not None else None
        if page is not None:
            return page
    return _trials.from_study(service.optuna_storage(), _trials.study_name(job_id))


# ---------------------------------------------------------------------------- events / logs


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _snapshot(row: JobRow) -> dict[str, Any]:
    return {
        "status": row.status,
        "phase": row.phase,
        "trials_done": row.trials_done,
        "trials_planned": row.trials_planned,
        "best_score": row.best_score,
    }


@router.get(
    "/{job_id}/events",
    summary="Server-sent events of the job's progress",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "an event stream"},
        **errors((429, "this token has as many event streams open as allowed")),
    },
)
async def job_events(
    job_id: JobId,
    service: ServiceDep,
    owner: OwnerDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """``status`` and ``progress`` events (each with status, phase, trials_done,
    trials_planned, best_score, message, time) until the job finishes, then one ``end``
    event with the final job. Resume with ``Last-Event-ID``."""
    row = await run_in_threadpool(_job, service, job_id, owner)
    slot = service.event_streams.acquire(owner, service.settings.max_event_streams_per_token)
    return StreamingResponse(
        slot.guard(_event_stream(service, row, last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(
    service: Service, row: JobRow, last_event_id: int | None
) -> AsyncIterator[str]:
    db = service.db
    job_id = row.id
    after = last_event_id or 0
    state: dict[str, Any] = (
        _snapshot(row)
        if after
        else {
            "status": JobStatus.QUEUED.value,
            "phase": "queued",
            "trials_done": 0,
            "trials_planned": row.trials_planned,
            "best_score": None,
        }
    )
    beat = time.monotonic()
    while True:
        events = await run_in_threadpool(
            db.events, job_id, after=after, kinds=("status", "progress"), limit=500
        )
        for e in events:
            after = e.id
            data = json.loads(e.data) if e.data else {}
            if e.kind == "status":
                state["status"] = e.message
                if e.message in (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value):
                    state["phase"] = "done" if e.message == JobStatus.SUCCEEDED.value else "failed"
            else:
                for k in ("phase", "trials_done", "trials_planned", "best_score"):
                    if data.get(k) is not None:
                        state[k] = data[k]
            payload = dict(state, message=data.get("message") or e.message, time=e.at.isoformat())
            yield _sse(e.kind, payload, e.id)
        if events:
            beat = time.monotonic()
            if len(events) == 500:
                continue
        current = await run_in_threadpool(db.get_job, job_id)
        if current is None:
            yield _sse("end", {"status": "DELETED", "message": "the job was deleted"})
            return
        if JobStatus(current.status).terminal:
            # drain what was written between the two reads, then close
            tail = await run_in_threadpool(
                db.events, job_id, after=after, kinds=("status", "progress"), limit=500
            )
            if tail:
                continue
            yield _sse("end", job_info(current).model_dump(mode="json"))
            return
        if service.stopping.is_set():
            return
        if time.monotonic() - beat > _HEARTBEAT_S:
            beat = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(service.settings.poll_interval_s)


@router.get(
    "/{job_id}/logs",
    summary="The job's log lines",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "log lines"}},
)
def job_logs(
    job_id: JobId,
    service: ServiceDep,
    owner: OwnerDep,
    tail: Annotated[int | None, Query(ge=1, le=100_000, description="only the last lines")] = None,
) -> PlainTextResponse:
    """Timestamped log lines of the job, status changes included, oldest first."""
    row = _job(service, job_id, owner)
    lines = []
    after = 0
    while True:
        batch = service.db.events(job_id, after=after, kinds=("log", "status"), limit=5000)
        for e in batch:
            stamp = e.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if e.kind == "status":
                lines.append(f"{stamp} STATUS {e.message}")
            else:
                lines.append(f"{stamp} {e.level or 'INFO'} {e.message}")
        if len(batch) < 5000:
            break
        after = batch[-1].id
    if row.error and row.status == JobStatus.FAILED.value:
        lines.append(f"error: {row.error}")
    if tail is not None:
        lines = lines[-tail:]
    return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""))


# ---------------------------------------------------------------------------- artifacts


@router.get("/{job_id}/artifacts", summary="Files the job produced")
def list_artifacts(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> list[ArtifactInfo]:
    """The pruned checkpoint, ONNX file and report, with sizes and sha256 checksums."""
    _job(service, job_id, owner)
    return service.db.artifacts(job_id)


@router.get(
    "/{job_id}/artifacts/{name}",
    summary="Download one artifact",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "application/json": {}, "text/plain": {}},
            "description": "the file, with its sha256 as ETag and X-Checksum-Sha256",
            "headers": {
                "ETag": {"required": True, "schema": {"type": "string"}},
                "X-Checksum-Sha256": {
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
            },
        }
    },
)
def get_artifact(
    job_id: JobId,
    name: ArtifactName,
    service: ServiceDep,
    owner: OwnerDep,
) -> FileResponse:
    """Stream one artifact; ``ETag`` and ``X-Checksum-Sha256`` carry its sha256."""
    _job(service, job_id, owner)
    items = {a.name: a for a in service.db.artifacts(job_id)}
    info = items.get(name)
    path = service.store.path(job_id, name)
    if info is None or path is None or not path.is_file():
        raise NotFoundError(
            f"job {job_id} has no artifact {name!r}; available: {', '.join(items) or 'none'}"
        )
    return FileResponse(
        path,
        media_type=info.media_type,
        filename=name,
        headers={"ETag": f'"{info.sha256}"', "X-Checksum-Sha256": info.sha256},
    )
