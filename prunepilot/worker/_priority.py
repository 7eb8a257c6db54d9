"""Evaluator process priority: Ray starts its workers at niceness 15 unless told otherwise.

A niced evaluator crawls on a shared machine and times latency in a low-priority process,
so a local Ray that prunepilot starts runs its workers at the niceness asked for (normal
priority by default), and an evaluator on a cluster prunepilot joins lowers its own
niceness where the OS permits (root or ``CAP_SYS_NICE``).
"""

from __future__ import annotations

import os

__all__ = ["niceness", "renice"]


def niceness() -> int:
    """This process's niceness (0 is normal priority, 19 the lowest)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def renice(target: int) -> str | None:
    """Lower this process's niceness to ``target``; never raises it.

    Returns:
        ``None`` when the process now runs at ``target`` or better, else why it does not
        and how to fix it (for a warning).
    """
    current = niceness()
    if current <= target:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, target)
    except OSError as e:
        return (
            f"evaluator runs at niceness {current} and may not lower it to {target} "
            f"({e.strerror or e}); start the Ray cluster with its workers at normal priority "
            f"(RAY_worker_niceness={target} in the environment of `ray start` on every node) "
            "or give its workers CAP_SYS_NICE"
        )
    return None
