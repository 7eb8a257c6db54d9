"""Wall-clock latency of models side by side, for the demos' before/after tables."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

__all__ = ["latency_ms"]


def latency_ms(
    models: list[nn.Module], x: torch.Tensor, repeats: int = 15, warmup: int = 3
) -> list[float]:
    """Median wall time of each ``model(x)`` in milliseconds.

    The models run in turn, round after round, so background load hits them alike.
    """
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for k, m in enumerate(models):
                m.eval()
                t0 = time.perf_counter()
                m(x)
                if i >= warmup:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]
