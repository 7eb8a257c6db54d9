"""The evaluator-pool interface the search drives, and its in-process implementation.

The search submits `Task`s and collects `Outcome`s one at a time, keeping ``capacity``
tasks in flight. `LocalPool` runs them in this process, one after another; the Ray pool
in `prunepilot.worker` runs them on actors pinned to devices, ``capacity`` at a time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from traceback import format_exc
from typing import Any, Literal, Protocol, runtime_checkable

from prunepilot.schemas import FinetuneSettings, LatencyTarget

from ._evaluator import Evaluator, Workload

__all__ = ["LocalPool", "Outcome", "Pool", "Task", "run_task"]

log = logging.getLogger("prunepilot.search")

TaskKind = Literal["evaluate", "probe", "measure", "finetune", "latency_model", "scores"]


@dataclass(frozen=True)
class Task:
    """One unit of work for an evaluator.

    Attributes:
        kind: ``evaluate`` (cheap score), ``probe`` (a successive-halving rung of
            ``steps`` fine-tune steps), ``measure`` (latency), ``finetune`` (full budget)
            ``latency_model`` (build the per-layer table) or ``scores`` (calibrate the
            workload's criterion and score every channel).
        key: the caller's identifier (an Optuna trial number, or a negative number for
            bookkeeping tasks).
        config: keep ratios per dimension; ``None`` is the unpruned model.
        target: latency target for ``measure`` and ``latency_model``.
        repeats: timed runs for ``measure`` (default: the target's).
        anchor: ``measure`` times the candidate interleaved with the original model and
            returns both statistics (see `SearchSettings.latency_anchor`).
        keep_ratios: ratio grid for ``latency_model``.
        finetune: settings for ``finetune`` (default: the workload's).
        steps: fine-tune steps of a ``probe``.
    """

    kind: TaskKind
    key: int
    config: dict[str, float] | None = None
    target: LatencyTarget | None = None
    repeats: int | None = None
    anchor: bool = False
    keep_ratios: tuple[float, ...] = ()
    finetune: FinetuneSettings | None = None
    steps: int = 0


@dataclass
class Outcome:
    """A finished task: its value, or the error that stopped it.

    Attributes:
        task: the task.
        value: what it returned (``None`` when it failed).
        error: ``Type: message`` of the exception that stopped it.
        worker: the evaluator that ran it.
        retries: times it was re-run because its worker died.
        seconds: its wall time.
        traceback: the failure's traceback (kept in the failed trial's record).
    """

    task: Task
    value: Any = None
    error: str | None = None
    worker: str = "local"
    retries: int = 0
    seconds: float = 0.0
    traceback: str | None = None


def run_task(evaluator: Evaluator, task: Task) -> Any:
    """Execute ``task`` on ``evaluator`` (shared by every pool implementation)."""
    if task.kind == "evaluate":
        assert task.config is not None
        return evaluator.evaluate(task.config)
    if task.kind == "probe":
        assert task.config is not None
        return evaluator.probe(task.config, task.steps)
    if task.kind == "measure":
        assert task.target is not None
        if task.anchor:
            return evaluator.measure_anchored(task.config, task.target, task.repeats)
        return evaluator.measure(task.config, task.target, task.repeats)
    if task.kind == "finetune":
        return evaluator.finetune(task.config, task.finetune)
    if task.kind == "scores":
        return evaluator.channel_scores()
    if task.kind == "latency_model":
        assert task.target is not None
        return evaluator.latency_model(task.target, task.keep_ratios)
    raise ValueError(f"unknown task kind {task.kind!r}")


@runtime_checkable
class Pool(Protocol):
    """What the search needs from a set of evaluators."""

    @property
    def capacity(self) -> int:
        """How many tasks may run at once."""
        ...

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet returned by `wait`."""
        ...

    def start(self, work: Workload) -> None:
        """Ship the job's workload to the evaluators (once per job)."""
        ...

    def submit(self, task: Task) -> None:
        """Queue a task."""
        ...

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """The next finished task, or ``None`` after ``timeout`` seconds."""
        ...

    def cancel(self) -> None:
        """Drop queued tasks and stop running ones as soon as possible."""
        ...

    def close(self) -> None:
        """Release the evaluators."""
        ...


class LocalPool:
    """Runs tasks in this process, one at a time, in submission order.

    Args:
        device: where candidates run.
        threads: CPU threads (``None``: leave torch's setting).
    """

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        self.device, self.threads = device, threads
        self._evaluator: Evaluator | None = None
        self._queue: deque[Task] = deque()

    @property
    def capacity(self) -> int:
        return 1

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self, work: Workload) -> None:
        self._evaluator = Evaluator(work, self.device, self.threads)

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def wait(self, timeout: float | None = None) -> Outcome | None:
        if not self._queue:
            return None
        if self._evaluator is None:
            raise RuntimeError("LocalPool.start(workload) must be called before tasks run")
        task = self._queue.popleft()
        t0 = time.perf_counter()
        try:
            value = run_task(self._evaluator, task)
        except Exception as e:  # a failing candidate fails its trial, not the search
            log.warning("task %s %d failed: %s", task.kind, task.key, e)
            return Outcome(
                task,
                error=f"{type(e).__name__}: {e}",
                seconds=time.perf_counter() - t0,
                traceback=format_exc(limit=5),
            )
        return Outcome(task, value=value, seconds=time.perf_counter() - t0)

    def cancel(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        self._queue.clear()
        self._evaluator = None
