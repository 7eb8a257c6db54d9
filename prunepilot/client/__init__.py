"""Client and command-line interface for the prunepilot service."""

from __future__ import annotations

__all__: list[str] = []
