"""Errors raised by the search package; all subclass `prunepilot.core.PrunepilotError`."""

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


class SearchCancelled(PrunepilotError):
    """The search was cancelled before it finished."""


class LatencyError(PrunepilotError):
    """Latency could not be measured: the device, dtype or model cannot run as asked."""
