"""Errors raised by the core engine: each says what went wrong and what to fix.

Hierarchy (all are ``ValueError``: each reports bad input, never a bug of prunepilot)::

    ValueError
    └── PrunepilotError          base of every error prunepilot raises on bad input
        ├── TraceError           the model could not be traced on the given inputs
        ├── PlanError            a plan names unknown groups/channels or breaks a constraint
        └── UntrustedSourceError a model reference the trust policy refuses

The search and worker layers derive their own errors from `PrunepilotError`, so
``except PrunepilotError`` catches every input error of the library (the service's HTTP
errors are its own).
"""

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
