"""``/ui``: the web UI, static files shipped in the package (no build step, no network).

The page holds no data and needs no token to load: it asks for the token, keeps it in
the tab's session storage and calls the authenticated API with it in a header, so the
token never appears in a URL, a log line or a ``Referer``. Every response carries a
strict Content-Security-Policy (scripts and styles from this origin only, no inline
script, API calls to this origin only) and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from .errors import NotFoundError

__all__ = ["CSP", "UI_DIR", "router"]

UI_DIR = Path(__file__).parent / "ui"
"""The UI's files: ``index.html``, ``app.js``, ``charts.js``, ``app.css``, ``vendor/``."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_TEXT = "text/plain; charset=utf-8"  # LICENSE, VERSION
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new release is picked up at once
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class _File:
    body: bytes
    media_type: str
    etag: str


def _load(root: Path) -> dict[str, _File]:
    """Every file under ``root`` by its relative path, read once: the only paths served."""
    files = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        media = _MEDIA.get(path.suffix, _TEXT if not path.suffix else None)
        if media is None:
            continue
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        files[path.relative_to(root).as_posix()] = _File(body, media, etag)
    return files


_FILES = _load(UI_DIR)


def _send(request: Request, name: str) -> Response:
    f = _FILES.get(name)
    if f is None:
        raise NotFoundError(f"no UI file {name!r}")
    headers = dict(_HEADERS, ETag=f.etag)
    if request.headers.get("if-none-match") == f.etag:
        return Response(status_code=304, headers=headers)
    return Response(f.body, media_type=f.media_type, headers=headers)


@router.get("/ui")
def ui_page(request: Request) -> Response:
    """The single page: token prompt, job list, job view (routes in the URL fragment)."""
    return _send(request, "index.html")


@router.get("/ui/static/{name:path}")
def ui_file(name: str, request: Request) -> Response:
    """One of the UI's scripts, styles or the vendored chart library."""
    return _send(request, name)
