"""Evaluator priority: `renice` lowers niceness where permitted and says how to fix it where not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from prunepilot.worker._priority import niceness, renice

# Runs in a child process (niceness cannot be undone without privileges): starts at
# niceness 10, optionally drops root, asks for 0 and prints the outcome.
_CHILD = """
import os, sys
from prunepilot.worker._priority import niceness, renice
os.setpriority(os.PRIO_PROCESS, 0, 10)
if sys.argv[1] == "drop" and os.getuid() == 0:
    os.setuid(65534)
warning = renice(0)
print(niceness())
print(warning or "")
"""


def _child(mode: str) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        timeout=60,
    ).stdout.splitlines()
    return int(out[0]), out[1] if len(out) > 1 else ""


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering niceness needs root or CAP_SYS_NICE")
def test_a_privileged_process_returns_to_normal_priority() -> None:
    assert _child("keep") == (0, "")


def test_an_unprivileged_process_keeps_its_niceness_and_says_how_to_fix_it() -> None:
    nice, warning = _child("drop")
    if nice == 0:
        pytest.skip("this process may lower its niceness (RLIMIT_NICE or CAP_SYS_NICE)")
    assert nice == 10
    assert "niceness 10" in warning and "to 0" in warning
    assert "RAY_worker_niceness=0" in warning


def test_renice_never_raises_niceness() -> None:
    before = niceness()
    assert renice(19) is None
    assert niceness() == before
