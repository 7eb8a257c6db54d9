"""Errors raised by the core engine: each says what went wrong and what to fix."""

from __future__ import annotations

__all__ = ["PlanError", "PrunepilotError", "TraceError", "UntrustedSourceError"]


class PrunepilotError(ValueError):
    """Base class for every error prunepilot raises on bad input."""


class TraceError(PrunepilotError):
    """The model could not be traced on the given inputs."""


class PlanError(PrunepilotError):
    """A pruning plan names unknown groups or channels, or breaks a group's constraints."""


class UntrustedSourceError(PrunepilotError):
    """A model reference the trust policy does not allow; nothing of it was imported."""
