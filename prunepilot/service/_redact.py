"""What users see of a failure: the error's type and message, no tracebacks, no colours.

Tracebacks name install paths and quote server code, so they stay in the server log. Ray
makes this easy to miss: a `RayTaskError` (what ``ray.get`` raises when a task or actor
method failed) renders the remote traceback, in ANSI colours, as its message; `error_text`
unwraps it to the exception that caused it, or, when it wraps no exception, keeps the first
line of its cleaned message. `clean` is applied to everything stored for
users (job log lines, a job's error, events, trial reasons).
"""

from __future__ import annotations

import re
import sys

__all__ = ["clean", "error_text"]

_MAX_CHARS = 4000
# OSC strings (titles, hyperlinks: up to BEL or ST), CSI sequences (colours, cursor
# moves), then other escapes (ESC, intermediate bytes, a final byte: ``ESC ( B``)
_ANSI = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[ -/]*[0-~]")
# control characters but tab and newline (a \r can hide text on a terminal), C1 included
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TB_START = re.compile(r'^\s*(Traceback \(most recent call last\):|File "[^"]*", line \d+)')
_TB_CARETS = re.compile(r"^\s*[\^~]+\s*$")
# Ray's name of a remote frame: "ray::f() (pid=..., ip=..., actor_id=..., repr=...)"
_RAY_FRAME = re.compile(r"\S*ray::\S+ \(pid=[^\n]*")


def clean(text: str) -> str:
    """``text`` without escape sequences, control characters or traceback frames.

    A traceback block (its header, ``File "...", line N`` frames and their indented code
    lines) is dropped; the final ``Type: message`` line is kept. Long text is cut.
    """
    text = _RAY_FRAME.sub("", _CONTROL.sub("", _ANSI.sub("", text)))
    kept: list[str] = []
    in_traceback = False
    for line in text.split("\n"):
        if _TB_START.match(line):
            in_traceback = True
            continue
        if _TB_CARETS.match(line) or (in_traceback and (not line.strip() or line[:1].isspace())):
            continue
        in_traceback = False
        kept.append(line.rstrip())
    out = "\n".join(kept).strip()
    return out if len(out) <= _MAX_CHARS else out[: _MAX_CHARS - 3] + "..."


def error_text(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, or of the exception a Ray task error wraps, cleaned."""
    ray_errors = sys.modules.get("ray.exceptions")  # not imported: no Ray error to unwrap
    if ray_errors is not None:
        seen = 0
        while isinstance(exc, ray_errors.RayTaskError) and seen < 10:
            cause = getattr(exc, "cause", None)
            if not isinstance(cause, BaseException):
                break
            exc, seen = cause, seen + 1
        if isinstance(exc, ray_errors.RayTaskError):
            # no exception to unwrap to: its text is a remote traceback; its first line
            # (after the frame header `clean` drops) says what failed
            first = next((line for line in clean(str(exc)).split("\n") if line.strip()), "")
            return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    message = clean(str(exc))
    name = type(exc).__name__
    return f"{name}: {message}" if message else name
