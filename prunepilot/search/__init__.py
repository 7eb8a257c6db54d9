"""Search over per-layer pruning ratios under FLOPs and latency budgets."""

from __future__ import annotations

__all__: list[str] = []
