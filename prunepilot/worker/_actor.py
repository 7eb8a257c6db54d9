"""The Ray actor that evaluates candidates: one per device, loads the workload once.

A failing task's traceback goes to this worker's log (Ray's worker log files, forwarded to
the server's output), never into the outcome: outcomes reach users as trial reasons.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

import ray
import torch
from pydantic import BaseModel, ConfigDict

from prunepilot.search import Evaluator, Outcome, Task, Workload, run_task

from ._priority import niceness, renice
from ._transport import unpack

__all__ = ["EvaluatorActor", "WorkerInfo"]

log = logging.getLogger("prunepilot.worker")


class WorkerInfo(BaseModel):
    """A started evaluator, as its pool reports it.

    Attributes:
        name: the worker's name in reports (``worker-N@NODE``: NODE starts its Ray node id).
        node: the Ray node id it runs on.
        pid: its process id.
        niceness: its scheduling niceness (0 is normal priority).
        workload: the id of the workload object it loaded (one per pool).
        fetch_s: seconds to fetch and unpack the workload.
        build_s: seconds to build the evaluator from it.
        warning: why it could not run at the niceness asked for, if it could not.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    node: str
    pid: int
    niceness: int
    workload: str
    fetch_s: float
    build_s: float
    warning: str | None = None


class EvaluatorActor:
    """Holds one `Evaluator` (model, graph, scores, data) and runs tasks on it.

    Wrapped with ``ray.remote`` by the pool, which pins it to a device through its
    resource request (``num_gpus=1`` per GPU, ``num_cpus`` for CPU-only actors).

    Args:
        name: the worker's name in reports.
        device: ``cpu`` or ``cuda`` (Ray exposes the pinned GPU as ``cuda:0``).
        threads: CPU threads for torch in this process.
        niceness: lower this process's niceness to this (``None``: leave Ray's).
    """

    def __init__(self, name: str, device: str, threads: int | None, niceness: int | None) -> None:
        self.node = ray.get_runtime_context().get_node_id()
        self.name = f"{name}@{self.node[:8]}"
        self.device, self.threads = device, threads
        self.warning = None if niceness is None else renice(niceness)
        if threads is not None:
            torch.set_num_threads(threads)
        self.evaluator: Evaluator | None = None

    def start(self, work: list[ray.ObjectRef]) -> WorkerInfo:
        """Build the evaluator from the job's workload, put once in the object store (packed).

        ``work`` holds the workload's reference inside a list so that Ray hands over the
        reference rather than the object, and the fetch can be timed here.
        """
        t0 = time.perf_counter()
        workload: Workload = unpack(ray.get(work[0]))
        t1 = time.perf_counter()
        self.evaluator = Evaluator(workload, self.device, self.threads)
        return WorkerInfo(
            name=self.name,
            node=self.node,
            pid=os.getpid(),
            niceness=niceness(),
            workload=work[0].hex(),
            fetch_s=t1 - t0,
            build_s=time.perf_counter() - t1,
            warning=self.warning,
        )

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
                traceback=traceback.format_exc(limit=5),
            )
        return Outcome(task, value=value, worker=self.name, seconds=time.perf_counter() - t0)
