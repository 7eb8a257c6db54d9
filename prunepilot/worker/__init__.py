"""Workers that evaluate candidate pruning configurations."""

from __future__ import annotations

__all__: list[str] = []
