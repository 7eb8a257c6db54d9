"""``/uploads``: weights and datasets, streamed to disk, referenced by jobs as ``upload:ID``."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from python_multipart.exceptions import MultipartParseError
from starlette.concurrency import run_in_threadpool

from ._db import UploadRow, upload_info, utcnow
from ._deps import OWNED_RESOURCE_ERRORS, OwnerDep, ServiceDep
from ._errors import NotFound, ServiceError, TooLarge
from ._openapi import errors
from ._params import UploadId
from ._uploads import (
    UploadError,
    UploadTooLarge,
    detect_kind,
    new_upload_id,
    receive,
    remove_quietly,
)
from .schemas import UploadInfo

__all__ = ["router"]

log = logging.getLogger("prunepilot.service")

router = APIRouter(prefix="/uploads", tags=["uploads"], responses=OWNED_RESOURCE_ERRORS)

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


class BadUpload(ServiceError):
    """The upload request is malformed (400)."""

    status_code = 400


@router.post(
    "",
    status_code=201,
    summary="Upload weights or a dataset",
    openapi_extra={"requestBody": _BODY},
    responses=errors(
        (400, "no file in the request, an empty file, or a malformed multipart body"),
        (413, "the file is over the server's limit"),
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
    ``pickle`` and ``pt2`` (models; refused by jobs unless the operator allows them)."""
    settings = service.settings
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + (1 << 20) * 64:
        raise TooLarge(f"the upload ({declared} bytes) is over the server's limit of {limit} bytes")
    upload_id = new_upload_id()
    dest = settings.uploads_path / upload_id
    try:
        stored = await receive(
            request.headers.get("content-type"),
            request.stream(),
            dest,
            limit=limit,
            filename=filename,
        )
    except UploadTooLarge as e:
        raise TooLarge(str(e)) from None
    except UploadError as e:
        raise BadUpload(str(e)) from None
    except MultipartParseError as e:
        raise BadUpload(f"malformed multipart body: {e}") from None
    if stored.size == 0:
        remove_quietly(dest)
        raise BadUpload("the file is empty: send its bytes as field 'file' or as the raw body")
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
        await run_in_threadpool(service.db.add_upload, row)
    except BaseException:
        remove_quietly(dest)
        raise
    log.info("upload %s (%s, %d bytes) by %s", upload_id, kind, stored.size, owner)
    return upload_info(row)


@router.get("/{upload_id}", summary="An upload's metadata")
def get_upload(
    upload_id: UploadId,
    service: ServiceDep,
    owner: OwnerDep,
) -> UploadInfo:
    """Name, size, sha256 and detected kind of one of this token's uploads."""
    row = service.db.get_upload(upload_id, owner)
    if row is None:
        raise NotFound(f"no upload {upload_id!r} for this token")
    return upload_info(row)
