"""Errors raised by the worker package (the Ray pool of evaluators).

Hierarchy::

    prunepilot.core.errors.PrunepilotError (a ValueError)
    └── WorkersLostError   every worker of a pool was lost and none came back in time

Errors from a candidate's evaluation are not raised here: they are the search's
(`prunepilot.search.errors`) and come back in the trial's outcome.
"""

from __future__ import annotations

from prunepilot.core import PrunepilotError

__all__ = ["WorkersLostError"]


class WorkersLostError(PrunepilotError):
    """Every worker of a pool was lost and none came back in time."""
