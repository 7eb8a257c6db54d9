"""Errors raised by the search package.

Hierarchy (what a caller catches)::

    ValueError
    └── prunepilot.core.PrunepilotError      bad input: fix the call and retry
        ├── UnknownCriterionError            criterion name not registered
        ├── CalibrationError                 data-driven criterion without (enough) data
        ├── InfeasibleError                  no model in the search space meets the budgets
        └── LatencyError                     the target cannot run or time the model
    Exception
    └── SearchCancelled                      the caller's ``cancel()`` stopped the search

`SearchCancelled` is not a `PrunepilotError` (nor a `ValueError`): a cancelled search is
no bad input, so ``except PrunepilotError`` (or ``except ValueError``) around a search does
not swallow a cancellation by mistake.
"""

from __future__ import annotations

from prunepilot.core import PrunepilotError

__all__ = [
    "CalibrationError",
    "InfeasibleError",
    "LatencyError",
    "SearchCancelled",
    "UnknownCriterionError",
]


class UnknownCriterionError(PrunepilotError):
    """An importance criterion name that is not registered."""


class CalibrationError(PrunepilotError):
    """A data-driven criterion was asked for without (enough) calibration data."""


class InfeasibleError(PrunepilotError):
    """The budgets cannot be met even by the most pruned model the search space allows."""


class LatencyError(PrunepilotError):
    """Latency could not be measured: the device, dtype or model cannot run as asked."""


class SearchCancelled(Exception):
    """The search was cancelled before it finished (not an error in the input)."""
