"""Errors raised by the search package; all subclass `prunepilot.core.PrunepilotError`."""

from __future__ import annotations

from prunepilot.core import PrunepilotError

__all__ = ["CalibrationError", "UnknownCriterionError"]


class UnknownCriterionError(PrunepilotError):
    """An importance criterion name that is not registered."""


class CalibrationError(PrunepilotError):
    """A data-driven criterion was asked for without (enough) calibration data."""
