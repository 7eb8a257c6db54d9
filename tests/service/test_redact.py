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


def test_a_ray_task_error_without_an_exception_keeps_its_first_line() -> None:
    chained = (
        f"{REMOTE_TB}\n\nThe above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 9, in g\n'
        "RuntimeError: wrapped"
    )
    for cause in (None, "not an exception"):
        err = RayTaskError("run_job", chained, cause, proctitle="ray::run_job", pid=1, ip="1.2.3.4")
        assert "\x1b[" in str(err) and "File " in str(err)  # what Ray renders
        assert error_text(err) == "RayTaskError: ValueError: bad input"
    bare = RayTaskError("run_job", "", None, proctitle="ray::run_job", pid=1, ip="1.2.3.4")
    assert error_text(bare) == "RayTaskError"


def test_clean_drops_every_kind_of_terminal_escape() -> None:
    link = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    title = "\x1b]0;owned\x07"
    assert clean(f"{title}see {link} \x1b[1;31mred\x1b[m \x9b31mC1\x1b(B") == "see click red 31mC1"
