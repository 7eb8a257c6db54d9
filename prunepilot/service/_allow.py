"""The ``Allow`` header of a 405 answer: every method the published schema gives the path.

Starlette lists only the methods of the first route whose path matched, so a path served
by two routes (``GET`` and ``DELETE /jobs/{job_id}``) would advertise half of them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from fastapi import FastAPI

__all__ = ["allow_header"]

_METHODS = ("delete", "get", "head", "options", "patch", "post", "put", "trace")


@lru_cache(maxsize=256)
def _template(path: str) -> re.Pattern[str]:
    """``/jobs/{job_id}`` as a regex: a parameter is one path segment."""
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))


def allow_header(app: FastAPI, path: str) -> str | None:
    """The methods the schema documents for ``path``, or ``None`` if it documents none."""
    methods = {
        method.upper()
        for template, item in app.openapi().get("paths", {}).items()
        if _template(template).fullmatch(path)
        for method in item
        if method in _METHODS
    }
    return ", ".join(sorted(methods)) or None
