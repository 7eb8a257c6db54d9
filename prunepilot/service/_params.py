"""Typed path, query and header parameters whose published schema is exactly what the
server accepts: ids, page cursors and ``Last-Event-ID``.

Ids are documented with the form the server issues; any other id simply names nothing
(404), so lookups stay uniform. Cursors and event ids are checked against the same
pattern and bounds the schema states, so a value the schema allows is never refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, Path, Query
from pydantic import AfterValidator

from prunepilot.schemas import UPLOAD_ID_PATTERN

__all__ = [
    "CURSOR_PATTERN",
    "ArtifactName",
    "Cursor",
    "JobId",
    "LastEventId",
    "UploadCursor",
    "UploadId",
]

JOB_ID_PATTERN = r"^[0-9a-f]{16}$"
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
MAX_EVENT_ID = 2**62


def _cursor_pattern(max_digits: int) -> str:
    """Unpadded base64url of ``"s"`` + a positive number of 1..``max_digits`` digits.

    ``s`` and the first digit (1-9) encode as ``cz`` + one of ``[EIMQUYcgk]``; every
    further three digits are four characters, the first two carrying a digit's top bits
    and the next digit's high nibble. Spelling the encoding out (not just the base64url
    alphabet) makes every string the schema allows one the server decodes, and only the
    form the server issues (no leading zero). Needs ``max_digits >= 5``.
    """
    third = "[AEIMQUYcgk]"  # (digit & 15) << 2
    fourth = "[w-z0-5]"  # 0x30 | digit
    lead = "(?:[MN][DTjz]|O[DT])"  # a digit's top bits, then the next digit's high nibble
    group = f"{lead}{third}{fourth}"  # three digits
    one = "(?:[MN][AQgw]|O[AQ])"  # one trailing digit
    tail = f"(?:{one}|{lead}{third})"  # one or two trailing digits
    groups, left = divmod(max_digits - 2, 3)
    last = ("", f"{one}?", f"{tail}?")[left]
    body = f"(?:{group}){{0,{groups - 1}}}{tail}?|(?:{group}){{{groups}}}{last}"
    return f"^cz[EIMQUYcgk](?:{fourth}(?:{body}))?$"


# next_cursor values: base64url("s" + the row's sequence number, from 1), up to 18 digits
# (far beyond any row count, and within a 64-bit integer)
CURSOR_PATTERN = _cursor_pattern(18)
_CURSOR = re.compile(CURSOR_PATTERN, re.ASCII)


# upload pages: the last row's creation time (microseconds since 1970) and id; up to 17
# digits (year 5138), so every value the pattern allows is a valid time
UPLOAD_CURSOR_PATTERN = rf"^(0|[1-9][0-9]{{0,16}})\.{UPLOAD_ID_PATTERN[1:-1]}$"
_UPLOAD_CURSOR = re.compile(UPLOAD_CURSOR_PATTERN, re.ASCII)


def _matching(pattern: re.Pattern[str]) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(
                "invalid cursor: pass the next_cursor value of a previous page unchanged"
            )
        return value

    return check


JobId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="the job id (any other value names no job: 404)",
        json_schema_extra={"pattern": JOB_ID_PATTERN},
    ),
]
UploadId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="the upload id (any other value names no upload: 404)",
        json_schema_extra={"pattern": UPLOAD_ID_PATTERN},
    ),
]
ArtifactName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        description="the artifact's file name, as its listing gives it",
        json_schema_extra={"pattern": ARTIFACT_NAME_PATTERN},
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=32,
        description="next_cursor of the previous page, unchanged",
        json_schema_extra={"pattern": CURSOR_PATTERN},
    ),
    AfterValidator(_matching(_CURSOR)),
]
UploadCursor = Annotated[
    str | None,
    Query(
        max_length=100,
        description="next_cursor of the previous page, unchanged",
        json_schema_extra={"pattern": UPLOAD_CURSOR_PATTERN},
    ),
    AfterValidator(_matching(_UPLOAD_CURSOR)),
]
LastEventId = Annotated[
    int | None,
    Header(
        ge=0,
        le=MAX_EVENT_ID,
        description="the id of the last event received: resume after it",
    ),
]
