"""``/uploads``: weights and datasets, streamed to disk, referenced by jobs as ``upload:ID``.

Uploads are bounded per token (a byte and a count quota), listed and deleted by their
owner, and expire ``upload_ttl_s`` after they were made unless a job uses them. Another
owner's upload id answers 404 exactly like an unknown one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from prunepilot.schemas import UploadInfo, UploadPage

from ._deps import OWNED_RESOURCE_ERRORS, OwnerDep, Service, ServiceDep
from ._openapi import errors
from ._params import UploadCursor, UploadId
from ._rows import UploadRow, utcnow
from ._store import ACTIVE, upload_info
from ._upload_quota import over_bytes, over_count
from ._uploads import (
    detect_kind,
    new_upload_id,
    receive,
    remove_quietly,
)
from .errors import (
    BadUploadError,
    ConflictError,
    NotFoundError,
    TooLargeError,
    TooManyError,
    UploadError,
    UploadInUse,
    UploadOverQuota,
    UploadTooLarge,
)

__all__ = ["router"]

log = logging.getLogger("prunepilot.service")

router = APIRouter(prefix="/uploads", tags=["uploads"], responses=OWNED_RESOURCE_ERRORS)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FILE = {"type": "string", "format": "binary", "minLength": 1, "description": "not empty"}
_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": _FILE}, "required": ["file"]}
        },
        "application/octet-stream": {"schema": _FILE},
    },
}


def _encode_cursor(row: UploadRow) -> str:
    micros = (row.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row.id}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    micros, _, last = cursor.partition(".")  # its form is checked by UploadCursor
    return _EPOCH + timedelta(microseconds=int(micros)), last


def _describe(service: Service, owner: str, rows: Sequence[UploadRow]) -> list[UploadInfo]:
    """Upload rows with the owner's live jobs that use them and when they expire."""
    refs = service.db.upload_jobs(owner, [r.id for r in rows])
    out = []
    for r in rows:
        jobs = refs.get(r.id, [])
        out.append(
            upload_info(
                r,
                live_jobs=[job_id for job_id, status in jobs if status in ACTIVE],
                expires_at=None if jobs else _expiry(service, r),
            )
        )
    return out


def _expiry(service: Service, row: UploadRow) -> datetime | None:
    """When an upload no job uses expires (``None``: the server keeps uploads)."""
    ttl = service.settings.upload_ttl_s
    return row.created_at + timedelta(seconds=ttl) if ttl else None


@router.post(
    "",
    status_code=201,
    summary="Upload weights or a dataset",
    openapi_extra={"requestBody": _BODY},
    responses=errors(
        (400, "no file in the request, an empty file, or a malformed multipart body"),
        (413, "the file is over the server's limit or this token's byte quota"),
        (429, "this token has as many uploads as allowed"),
    ),
)
async def create_upload(
    request: Request,
    service: ServiceDep,
    owner: OwnerDep,
    filename: Annotated[
        str | None, Query(max_length=300, description="file name of a raw octet-stream body")
    ] = None,
) -> UploadInfo:
    """Store a file (multipart field ``file``, or a raw body). Kinds: ``safetensors``
    (weights, or a dataset with ``inputs``/``labels``), ``archive`` (zip/tar ImageFolder),
    ``pickle`` and ``pt2`` (models; refused by jobs unless the operator allows them).
    Each token's uploads are bounded by a byte quota (413) and a count quota (429)."""
    settings = service.settings
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + (1 << 20) * 64:
        raise TooLargeError(
            f"the upload ({declared} bytes) is over the server's limit of {limit} bytes"
        )
    quota_n, quota_b = settings.upload_quota_count, settings.upload_quota_bytes
    count, used = await run_in_threadpool(service.db.upload_usage, owner)
    if count >= quota_n:
        raise TooManyError(over_count(quota_n, count))
    upload_id = new_upload_id()
    dest = settings.uploads_path / upload_id
    flight = service.uploads_in_flight
    with flight.reserve(owner, quota_b - used) as reservation:
        try:
            stored = await receive(
                request.headers.get("content-type"),
                request.stream(),
                dest,
                limit=limit,
                filename=filename,
                reserve=reservation,
            )
        except UploadOverQuota as e:
            others = flight.held(owner) - reservation.taken
            raise TooLargeError(
                over_bytes(quota_b, used, count, e.size, partial=True, in_flight=others)
            ) from None
        except UploadTooLarge as e:
            raise TooLargeError(str(e)) from None
        except UploadError as e:
            raise BadUploadError(str(e)) from None
        try:
            kind = await run_in_threadpool(detect_kind, dest)
            row = UploadRow(
                id=upload_id,
                owner=owner,
                filename=stored.filename,
                size=stored.size,
                sha256=stored.sha256,
                kind=kind,
                path=upload_id,
                created_at=utcnow(),
            )
            refused = await run_in_threadpool(service.db.add_upload_within, row, quota_n, quota_b)
        except BaseException:
            remove_quietly(dest)
            raise
    if refused is not None:
        remove_quietly(dest)
        count, used = refused
        if count >= quota_n:
            raise TooManyError(over_count(quota_n, count))
        raise TooLargeError(over_bytes(quota_b, used, count, stored.size))
    log.info("upload %s (%s, %d bytes) by %s", upload_id, kind, stored.size, owner)
    return upload_info(row, expires_at=_expiry(service, row))


@router.get("", summary="List uploads, newest first")
def list_uploads(
    service: ServiceDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=200, description="uploads per page")] = 20,
    cursor: UploadCursor = None,
) -> UploadPage:
    """One page of this token's uploads, with the unfinished jobs that use each and when
    it expires; follow ``next_cursor`` for older ones."""
    before = _decode_cursor(cursor) if cursor is not None else None
    rows = service.db.list_uploads(owner, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return UploadPage(
        items=_describe(service, owner, rows),
        next_cursor=_encode_cursor(rows[-1]) if more and rows else None,
    )


@router.get("/{upload_id}", summary="An upload's metadata")
def get_upload(upload_id: UploadId, service: ServiceDep, owner: OwnerDep) -> UploadInfo:
    """Name, size, sha256, detected kind, the unfinished jobs that use it, expiry."""
    row = service.db.get_upload(upload_id, owner)
    if row is None:
        raise NotFoundError(f"no upload {upload_id!r} for this token")
    return _describe(service, owner, [row])[0]


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="Delete an upload",
    responses=errors((409, "an unfinished job uses it")),
)
def delete_upload(upload_id: UploadId, service: ServiceDep, owner: OwnerDep) -> Response:
    """Remove the file and its record; refused while a queued or running job uses it."""
    try:
        row = service.db.delete_upload(upload_id, owner)
    except UploadInUse as e:
        raise ConflictError(
            f"upload {upload_id} is used by unfinished job(s) {', '.join(e.job_ids)}; cancel "
            "them (POST /jobs/{id}/cancel) or wait until they finish, then delete it"
        ) from None
    if row is None:
        raise NotFoundError(f"no upload {upload_id!r} for this token")
    remove_quietly(service.settings.uploads_path / row.path)
    log.info("upload %s deleted by %s", upload_id, owner)
    return Response(status_code=204)
