"""Latency on the target device: measurement, and a model of it learned from measurements.

Private modules, re-exported here; `prunepilot.search` re-exports the public names.
"""

from __future__ import annotations

from ._measure import (
    MIN_CUDA_WARMUP,
    LatencyStats,
    cpu_threads,
    first_run,
    latency_inputs,
    local_device,
    measure_latency,
    measure_relative,
    prepare,
    resolve_device,
    target_dtype,
    time_calls,
)
from ._model import LatencyModel

__all__ = [
    "MIN_CUDA_WARMUP",
    "LatencyModel",
    "LatencyStats",
    "cpu_threads",
    "first_run",
    "latency_inputs",
    "local_device",
    "measure_latency",
    "measure_relative",
    "prepare",
    "resolve_device",
    "target_dtype",
    "time_calls",
]
