"""Service that coordinates distributed pruning searches."""

from __future__ import annotations

__all__: list[str] = []
