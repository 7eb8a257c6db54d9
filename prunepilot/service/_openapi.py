"""What the published OpenAPI schema says beyond each route's own declaration.

Routes name their route-specific errors with `errors`; `install` then makes the schema
state the server-wide facts that FastAPI leaves out: every error body is JSON
(`ErrorBody`), also on routes whose success is text or a file; every route that needs a
token can answer 401, with ``WWW-Authenticate``; and a parameter is a value or absent,
never ``null``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from prunepilot.schemas import ErrorBody

__all__ = ["errors", "install"]

_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_DESCRIPTIONS = {
    400: "the request is malformed",
    401: "missing or invalid bearer token",
    403: "the operator's policy refuses it",
    404: "no such resource for this token",
    409: "the resource is in the wrong state for this request",
    413: "the request body is over the server's limit",
    422: "the request cannot be processed",
    429: "a per-token limit is reached",
    503: "the service is not ready",
}
_CHALLENGE = {
    "WWW-Authenticate": {
        "description": "the scheme to authenticate with",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    }
}


def errors(*codes: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, each answering `ErrorBody`.

    Args:
        codes: a status (described generically) or ``(status, description)``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for item in codes:
        code, description = item if isinstance(item, tuple) else (item, _DESCRIPTIONS[item])
        out[code] = {"model": ErrorBody, "description": description}
    return out


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` publish the server-wide facts (computed once, then cached)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _finish(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method in _HTTP_METHODS:
                _finish_operation(operation)
    return schema


def _finish_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if operation.get("security"):
        responses.setdefault("401", {"description": _DESCRIPTIONS[401]})
    for code, response in responses.items():
        if code[:1] in ("4", "5"):
            # the error handlers answer JSON whatever the route's success media type
            response["content"] = {"application/json": {"schema": dict(_ERROR_REF)}}
        if code == "401":
            response["headers"] = {**response.get("headers", {}), **_CHALLENGE}
    for parameter in operation.get("parameters", ()):
        if "schema" in parameter:
            parameter["schema"] = _not_null(parameter["schema"])


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without FastAPI's ``null`` branch (absent is not null)."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) != 1:
        return schema if len(kept) == len(branches) else {**schema, "anyOf": kept}
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}
