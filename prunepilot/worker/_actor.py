"""The Ray actor that evaluates candidates: one per device, loads the workload once.

A failing task's traceback goes to this worker's log (Ray's worker log files, forwarded to
the server's output), never into the outcome: outcomes reach users as trial reasons.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from prunepilot.search import Evaluator, Outcome, Task, Workload, run_task

__all__ = ["EvaluatorActor"]

log = logging.getLogger("prunepilot.worker")


class EvaluatorActor:
    """Holds one `Evaluator` (model, graph, scores, data) and runs tasks on it.

    Wrapped with ``ray.remote`` by the pool, which pins it to a device through its
    resource request (``num_gpus=1`` per GPU, ``num_cpus`` for CPU-only actors).

    Args:
        name: the worker's name in reports.
        device: ``cpu`` or ``cuda`` (Ray exposes the pinned GPU as ``cuda:0``).
        threads: CPU threads for torch in this process.
    """

    def __init__(self, name: str, device: str, threads: int | None) -> None:
        self.name, self.device, self.threads = name, device, threads
        if threads is not None:
            torch.set_num_threads(threads)
        self.evaluator: Evaluator | None = None

    def start(self, work: Workload) -> str:
        """Build the evaluator from the job's workload (shipped once through the object store)."""
        self.evaluator = Evaluator(work, self.device, self.threads)
        return self.name

    def run(self, task: Task) -> Outcome:
        """Run one task; an exception becomes the outcome's error, not a dead worker."""
        if self.evaluator is None:
            raise RuntimeError("start(workload) must be called first")
        t0 = time.perf_counter()
        try:
            value: Any = run_task(self.evaluator, task)
        except Exception as e:  # a failing candidate fails its trial, not the worker
            log.warning("%s: task %s %d failed", self.name, task.kind, task.key, exc_info=True)
            return Outcome(
                task,
                error=f"{type(e).__name__}: {e}",
                worker=self.name,
                seconds=time.perf_counter() - t0,
            )
        return Outcome(task, value=value, worker=self.name, seconds=time.perf_counter() - t0)

    def pid(self) -> int:
        """The worker's process id (tests kill it to exercise recovery)."""
        return os.getpid()
