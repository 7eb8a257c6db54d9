"""Measure a model's latency on the target device: warm-up, timed runs, robust statistics.

Measurements run on a private copy of the model (cast to the target dtype and memory
format, moved to the target device) under ``torch.inference_mode()``. CPU runs are timed
with ``time.perf_counter_ns`` under the target's thread count. CUDA runs as the field times
them: the model and inputs already on the GPU (no host-device copy in the timed region), at
least `MIN_CUDA_WARMUP` untimed runs (lazy kernel loading, cuDNN/cuBLAS handles and
autotuning happen there), then each run between CUDA events with the device synchronised
before and after it, so asynchronous launches are not mistaken for speed; the median counts.
A target's ``cuda`` is this process's own GPU: inside a 1-GPU Ray actor, ``cuda:0``.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map

from prunepilot.schemas import LatencyTarget

from .._batches import call_model
from ..errors import LatencyError

__all__ = [
    "MIN_CUDA_WARMUP",
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

log = logging.getLogger("prunepilot.search")

MIN_CUDA_WARMUP = 3
"""Untimed runs before any CUDA timing, whatever the caller asks (first-use costs)."""

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of timed runs, in milliseconds.

    Attributes:
        median_ms: the median run (what budgets compare against).
        mean_ms: the mean run.
        std_ms: the standard deviation of runs.
        p10_ms: the 10th percentile.
        p90_ms: the 90th percentile.
        min_ms: the fastest run.
        runs: timed runs.
        device: the device measured on (``cpu``, ``cuda:0``).
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    device: str

    @property
    def spread(self) -> float:
        """Relative noise: ``(p90 - p10) / median`` (0 for perfectly steady runs)."""
        if self.median_ms <= 0:
            return 0.0
        return (self.p90_ms - self.p10_ms) / self.median_ms

    @classmethod
    def from_times(cls, times_ms: list[float], device: str) -> LatencyStats:
        """Summarise run times (milliseconds)."""
        if not times_ms:
            raise LatencyError("no timed runs to summarise; use repeats >= 1")
        a = np.asarray(times_ms, dtype=np.float64)
        p10, p50, p90 = np.percentile(a, [10, 50, 90])
        return cls(
            median_ms=float(p50),
            mean_ms=float(a.mean()),
            std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            p10_ms=float(p10),
            p90_ms=float(p90),
            min_ms=float(a.min()),
            runs=int(a.size),
            device=device,
        )

    def scaled(self, factor: float) -> LatencyStats:
        """These statistics with every time multiplied by ``factor`` (a change of frame)."""
        return LatencyStats(
            median_ms=self.median_ms * factor,
            mean_ms=self.mean_ms * factor,
            std_ms=self.std_ms * factor,
            p10_ms=self.p10_ms * factor,
            p90_ms=self.p90_ms * factor,
            min_ms=self.min_ms * factor,
            runs=self.runs,
            device=self.device,
        )

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.3f} ms median on {self.device} (p10 {self.p10_ms:.3f}, "
            f"p90 {self.p90_ms:.3f}, {self.runs} runs)"
        )


def target_dtype(target: LatencyTarget) -> torch.dtype:
    """The torch dtype a target measures in."""
    return _DTYPES[target.dtype]


def local_device(name: str | torch.device) -> torch.device:
    """``name`` with a bare ``cuda`` pinned to this process's current GPU.

    A device type names the caller's own GPU: in a 1-GPU Ray actor (Ray sets
    ``CUDA_VISIBLE_DEVICES``) that is ``cuda:0``. Call only where CUDA is available.
    """
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_device(target: LatencyTarget) -> torch.device:
    """The target's device here (``cuda``: this process's own GPU), checked to exist.

    Raises:
        LatencyError: CUDA is asked for but unavailable, or the device index does not exist.
    """
    dev = torch.device(target.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LatencyError(
                f"latency target device {target.device!r} needs CUDA, but torch.cuda.is_available()"
                " is False on this machine; measure on 'cpu' or run on a GPU worker"
            )
        count = torch.cuda.device_count()
        dev = local_device(dev)
        if dev.index is not None and dev.index >= count:
            raise LatencyError(
                f"latency target device {target.device!r} does not exist: this machine has "
                f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    return dev


def latency_inputs(example_inputs: Any, batch_size: int) -> Any:
    """Resize every tensor of ``example_inputs`` along dim 0 to ``batch_size``.

    Smaller batches are tiled, larger ones sliced; dtype, device and the container
    structure (tensor, tuple, list, dict) are kept, so a 1-sample example becomes the
    target's batch. Scalars (0-d tensors) and non-tensors are left alone.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LatencyError(f"batch_size must be an integer >= 1; got {batch_size!r}")

    def resize(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.ndim == 0:
            return t
        n = t.shape[0]
        if n == batch_size:
            return t
        if n == 0:
            raise LatencyError("cannot resize an empty example batch (dim 0 has size 0)")
        if n > batch_size:
            return t[:batch_size]
        reps = math.ceil(batch_size / n)
        return t.repeat(reps, *([1] * (t.ndim - 1)))[:batch_size]

    return tree_map(resize, example_inputs)


def _cast_inputs(inputs: Any, device: torch.device, target: LatencyTarget) -> Any:
    dtype = target_dtype(target)
    channels_last = target.memory_format == "channels_last"

    def cast(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        t = t.to(device, dtype=dtype) if t.is_floating_point() else t.to(device)
        if channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    return tree_map(cast, inputs)


def prepare(model: nn.Module, example_inputs: Any, target: LatencyTarget) -> tuple[nn.Module, Any]:
    """A private eval-mode copy of ``model`` and inputs, as the target runs them.

    The copy's floating parameters and buffers are cast to the target dtype, 4-d tensors
    put in channels-last when asked, and everything moved to the target device; the
    inputs are resized to the target batch. The caller's model is never touched.

    Raises:
        LatencyError: the device does not exist or the model cannot be copied or moved.
    """
    if not isinstance(model, nn.Module):
        raise LatencyError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    device = resolve_device(target)
    try:
        private = copy.deepcopy(model)
        private.eval()
        private.to(device=device, dtype=target_dtype(target))
        if target.memory_format == "channels_last":
            private.to(memory_format=torch.channels_last)
    except (RuntimeError, TypeError, ValueError) as e:
        raise LatencyError(
            f"could not copy the model to {device} in {target.dtype} ({type(e).__name__}: {e})"
        ) from e
    for p in private.parameters():
        p.requires_grad_(False)
    inputs = _cast_inputs(latency_inputs(example_inputs, target.batch_size), device, target)
    return private, inputs


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` intra-op CPU threads, restoring the old setting."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_calls(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then time ``repeats`` runs (milliseconds each).

    ``fn`` must find its model and inputs on ``device`` already. CUDA runs get at least
    `MIN_CUDA_WARMUP` warm-up runs and are timed with CUDA events (`_time_cuda`).
    """
    with torch.inference_mode(), _no_gc():
        return _timer(device)(fn, device, warmup, repeats)


_Timer = Callable[[Callable[[], Any], torch.device, int, int], list[float]]


def _timer(device: torch.device) -> _Timer:
    """How runs on ``device`` are timed: CUDA events on a GPU, the host clock elsewhere."""
    return _time_cuda if device.type == "cuda" else _time_cpu


def _time_cpu(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """Host-clock times of synchronous runs (CPU kernels finish before ``fn`` returns)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def _time_cuda(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """GPU times of runs, each between CUDA events on the current stream.

    The device is synchronised before each run (nothing earlier is counted) and after it
    (every kernel of the run, on any stream, has finished before the next starts); events
    are created before the timed loop, so allocating them is not timed either.
    """
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device)
        for _ in range(max(warmup, MIN_CUDA_WARMUP)):
            fn()
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(repeats)
        ]
        times: list[float] = []
        for start, end in events:
            torch.cuda.synchronize(device)
            start.record(stream)
            fn()
            end.record(stream)
            torch.cuda.synchronize(device)
            times.append(float(start.elapsed_time(end)))
    return times


def _time_model(
    model: nn.Module, inputs: Any, device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """`time_calls` of ``model(inputs)``; a failure becomes a `LatencyError`."""
    try:
        return time_calls(functools.partial(call_model, model, inputs), device, warmup, repeats)
    except Exception as e:  # the forward failed after a successful first run
        raise LatencyError(
            f"the model failed while being timed ({type(e).__name__}: {str(e)[:300]})"
        ) from e


def first_run(model: nn.Module, inputs: Any, target: LatencyTarget) -> None:
    """Run once, turning any failure into a `LatencyError` that says what to change."""
    device = resolve_device(target)
    try:
        with torch.inference_mode():
            call_model(model, inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as e:  # any failure of the user's forward is reported, with its cause
        hint = ""
        if target.dtype == "fp16" and not target.device.startswith("cuda"):
            hint = "; some CPU ops have no fp16 kernel: measure in 'bf16' or 'fp32' on CPU"
        elif target.dtype != "fp32":
            hint = f"; check that the model supports {target.dtype}"
        if isinstance(e, torch.cuda.OutOfMemoryError):
            hint = f"; batch_size {target.batch_size} does not fit on {target.device}"
        raise LatencyError(
            f"the model failed to run on {target.device} in {target.dtype} at batch "
            f"{target.batch_size} ({type(e).__name__}: {str(e)[:300]}){hint}"
        ) from e


def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    target: LatencyTarget | None = None,
    *,
    warmup: int | None = None,
    repeats: int | None = None,
) -> LatencyStats:
    """Measure ``model``'s forward latency on ``target`` (a private copy; ``model`` is kept).

    Args:
        model: the model; it is deep-copied, so its device, dtype and mode stay as they are.
        example_inputs: a tensor, a tuple/list of positional inputs or a dict of keyword
            inputs; resized along dim 0 to ``target.batch_size``.
        target: device, batch, dtype, threads, memory format (default: `LatencyTarget()`).
        warmup: untimed runs (default: ``target.warmup``).
        repeats: timed runs (default: ``target.repeats``).

    Returns:
        `LatencyStats` of the timed runs.

    Raises:
        LatencyError: CUDA unavailable, an unknown device index, a dtype the model cannot
            run in, or any failure of the model's forward.
    """
    target = target or LatencyTarget()
    warmup = target.warmup if warmup is None else warmup
    repeats = target.repeats if repeats is None else repeats
    if warmup < 0 or repeats < 1:
        raise LatencyError(f"need warmup >= 0 and repeats >= 1; got {warmup}, {repeats}")
    private, inputs = prepare(model, example_inputs, target)
    device = resolve_device(target)
    threads = target.threads if device.type == "cpu" else None
    with cpu_threads(threads):
        first_run(private, inputs, target)
        times = _time_model(private, inputs, device, max(warmup - 1, 0), repeats)
    stats = LatencyStats.from_times(times, str(device))
    log.debug("latency: %s", stats)
    return stats


def measure_relative(
    model: nn.Module,
    reference: nn.Module,
    example_inputs: Any,
    target: LatencyTarget | None = None,
    *,
    repeats: int | None = None,
    rounds: int = 5,
) -> tuple[LatencyStats, LatencyStats]:
    """Time ``model`` and ``reference`` in alternating rounds; both see the same load.

    On a shared machine the speed of the device drifts by tens of percent within minutes;
    two models timed minutes apart are not comparable, but two interleaved ones are. The
    ratio of the medians is what a relative budget ("50% of the original") asks about.

    Args:
        model: the model to time (copied; kept as it is).
        reference: the model to compare with (usually the original, unpruned one).
        example_inputs: as for `measure_latency`.
        target: device, batch, dtype, threads, memory format (default: `LatencyTarget()`).
        repeats: timed runs of each model in all (default: ``target.repeats``).
        rounds: alternations; each round times both models, the order flipping each round.

    Returns:
        ``(stats of model, stats of reference)``.

    Raises:
        LatencyError: as `measure_latency`.
    """
    target = target or LatencyTarget()
    repeats = target.repeats if repeats is None else repeats
    if repeats < 1 or rounds < 1:
        raise LatencyError(f"need repeats >= 1 and rounds >= 1; got {repeats}, {rounds}")
    rounds = min(rounds, repeats)
    pair = [prepare(m, example_inputs, target) for m in (model, reference)]
    device = resolve_device(target)
    threads = target.threads if device.type == "cpu" else None
    times: list[list[float]] = [[], []]
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    with cpu_threads(threads):
        for private, inputs in pair:
            first_run(private, inputs, target)
        for r, n in enumerate(per_round):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                warm = target.warmup if r == 0 else min(target.warmup, 2)
                times[i] += _time_model(*pair[i], device, warm, n)
    stats = LatencyStats.from_times(times[0], str(device))
    ref = LatencyStats.from_times(times[1], str(device))
    log.debug("latency: %s (reference %s)", stats, ref)
    return stats, ref
