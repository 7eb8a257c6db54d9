"""Database rows the service's unit tests build by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from prunepilot.service._rows import UploadRow


def upload_row(upload_id: str, kind: str) -> UploadRow:
    """An upload record of ``kind`` owned by ``t`` whose file is named like its id."""
    return UploadRow(
        id=upload_id,
        owner="t",
        filename="f",
        size=1,
        sha256="0" * 64,
        kind=kind,
        path=upload_id,
        created_at=datetime.now(UTC),
    )
