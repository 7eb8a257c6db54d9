"""What users see of a failure: type and message, no traceback frames, no terminal escapes."""

from __future__ import annotations

import traceback

from ray.exceptions import RayTaskError

from prunepilot.service._redact import clean, error_text

RED = "\x1b[31mbad input\x1b[0m"
REMOTE_TB = (
    "Traceback (most recent call last):\n"
    '  File "/opt/venv/lib/python3.11/site-packages/prunepilot/x.py", line 3, in f\n'
    "    raise ValueError(msg)\n"
    "           ^^^^^^^^^^^^^\n"
    f"ValueError: {RED}"
)


def test_a_ray_task_error_is_unwrapped_to_its_cause() -> None:
    err = RayTaskError("run_job", REMOTE_TB, ValueError(RED), pid=1, ip="10.0.0.1")
    raised = err.as_instanceof_cause()  # what ray.get raises
    assert isinstance(raised, ValueError)
    assert error_text(raised) == "ValueError: bad input"
    assert error_text(err) == "ValueError: bad input"


def test_clean_drops_frames_escapes_and_control_characters() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        text = "job crashed:\n" + traceback.format_exc()
    assert clean(text) == "job crashed:\nKeyError: 'k'"
    assert clean(REMOTE_TB) == "ValueError: bad input"
    assert clean("ok\rhidden\x07 \x1b[2Jdone") == "okhidden done"
    assert len(clean("x" * 10_000)) == 4000
