"""A pool of Ray evaluator actors, one per device, that the search drives.

Why Optuna ask/tell from one driver rather than Ray Tune with ``OptunaSearch``: the search
must reject infeasible candidates analytically before any worker sees them, measure
latency with nothing else running on the device, and keep the study in the service's own
storage so a restarted job resumes it. A driver that owns the study and hands configs to
actors does all three directly; Tune would own the trial lifecycle and its own state.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

from prunepilot.search import Outcome, Task, Workload

from ._actor import EvaluatorActor, WorkerInfo
from ._cluster import cluster_devices, ensure_ray
from ._devices import plan_workers, uses_gpu
from ._transport import pack

__all__ = ["RayPool"]

log = logging.getLogger("prunepilot.worker")

_DEAD = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)
_names = itertools.count()


@dataclass
class _Slot:
    name: str
    device: str
    options: dict[str, Any]
    actor: Any = None
    busy: Any = None  # the ObjectRef of the running task
    info: WorkerInfo | None = None


class RayPool:
    """Evaluator actors on a local or remote Ray cluster.

    One actor per GPU (``num_gpus=1``, so Ray pins it to its device; asking for more than
    the cluster's GPUs is clamped, with a warning) when the cluster has GPUs, else
    ``workers`` CPU-only actors with ``threads`` CPU threads each. A worker
    that dies mid-task is replaced and its task re-queued (up to ``max_retries`` times).
    The actors start booting on construction, while the search prepares its workload;
    the workload is put in the object store once per job, its tensors' bytes out of band
    (`pack`), and every actor, replacements included, loads it from there. `startup` holds
    where start-up time went.

    Args:
        workers: number of actors (default: one per GPU, or CPUs // threads).
        device: ``auto`` (GPUs when the cluster has them), ``cpu`` or ``cuda``.
        threads: torch CPU threads per actor (and the CPUs each reserves).
        address: a Ray cluster address; ``None`` starts a local Ray on demand.
        max_retries: re-runs of a task whose worker died.
        niceness: the evaluators' niceness (default 0, normal priority): a local Ray
            started here runs its workers at it, and each actor lowers its own niceness
            to it where the OS permits, warning when it may not (a cluster started with
            Ray's default runs workers at 15). ``None`` leaves Ray's niceness alone.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        device: str = "auto",
        threads: int = 1,
        address: str | None = None,
        max_retries: int = 2,
        niceness: int | None = 0,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1; got {workers}")
        uses_gpu(device, 0)  # a bad device fails before Ray starts
        if niceness is not None and not 0 <= niceness <= 19:
            raise ValueError(f"niceness must be between 0 and 19; got {niceness}")
        t0 = time.perf_counter()
        ensure_ray(address, worker_niceness=niceness)
        self.startup: dict[str, float] = {"ray_start_s": time.perf_counter() - t0}
        self.niceness = niceness
        cpus, gpus = cluster_devices()
        plan = plan_workers(workers, device, threads=threads, cpus=cpus, gpus=gpus)
        if plan.note is not None:
            log.warning("%s", plan.note)
        n, use_gpu = plan.workers, plan.device == "cuda"
        self.max_retries = max_retries
        self.restarts = 0
        self._slots = [
            _Slot(
                f"worker-{next(_names)}",
                "cuda" if use_gpu else "cpu",
                {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": threads},
            )
            for _ in range(n)
        ]
        self._threads = threads
        self._work_ref: Any = None
        self._queue: deque[tuple[Task, int]] = deque()
        self._running: dict[Any, tuple[_Slot, Task, int]] = {}
        self._remote = ray.remote(EvaluatorActor)
        for slot in self._slots:  # processes boot while the driver prepares the workload
            self._spawn(slot)
        log.info("ray pool: %d %s workers", n, self._slots[0].device)

    # ------------------------------------------------------------------ Pool protocol

    @property
    def capacity(self) -> int:
        return len(self._slots)

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._running)

    def start(self, work: Workload) -> None:
        t0 = time.perf_counter()
        self._work_ref = ray.put(pack(work))
        t1 = time.perf_counter()
        for slot in self._slots:
            if slot.actor is None:
                self._spawn(slot)
        infos = ray.get([s.actor.start.remote([self._work_ref]) for s in self._slots])
        for slot, info in zip(self._slots, infos, strict=True):
            self._started(slot, info)
        self.startup.update(
            put_s=t1 - t0,
            actors_s=time.perf_counter() - t1,
            fetch_s=max(i.fetch_s for i in infos),
            build_s=max(i.build_s for i in infos),
        )
        log.info(
            "%d workers ready in %.1f s (workload put %.1f s, fetch %.1f s and build %.1f s "
            "per worker at most; niceness %s)",
            len(infos),
            time.perf_counter() - t0,
            self.startup["put_s"],
            self.startup["fetch_s"],
            self.startup["build_s"],
            sorted({i.niceness for i in infos}),
        )

    def submit(self, task: Task) -> None:
        self._queue.append((task, 0))
        self._dispatch()

    def wait(self, timeout: float | None = None) -> Outcome | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._dispatch()
            if not self._running:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(self._running), num_returns=1, timeout=left)
            if not ready:
                return None
            ref = ready[0]
            slot, task, retries = self._running.pop(ref)
            slot.busy = None
            try:
                outcome: Outcome = ray.get(ref)
            except _DEAD as e:
                self._replace(slot, e)
                if retries >= self.max_retries:
                    return Outcome(task, error=f"worker died {retries + 1} times: {e}")
                log.warning(
                    "worker %s died during %s %d; re-queued", slot.name, task.kind, task.key
                )
                self._queue.appendleft((task, retries + 1))
                continue
            outcome.retries = retries
            return outcome

    def cancel(self) -> None:
        self._queue.clear()
        for ref, (slot, _task, _r) in list(self._running.items()):
            ray.kill(slot.actor, no_restart=True)
            slot.actor = None
            slot.busy = None
            del self._running[ref]

    def close(self) -> None:
        self._queue.clear()
        self._running.clear()
        for slot in self._slots:
            if slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
                slot.actor = None

    # ------------------------------------------------------------------ helpers

    @property
    def workload_ref(self) -> Any:
        """The workload's one ObjectRef, shared by every actor (``None`` before `start`)."""
        return self._work_ref

    def workers(self) -> list[WorkerInfo]:
        """The actors as last started: pid, niceness, workload loaded, start-up times."""
        return [s.info for s in self._slots if s.info is not None]

    def worker_pids(self) -> list[int]:
        """Process ids of the actors as last started (for tests and diagnostics)."""
        return [i.pid for i in self.workers()]

    def worker_niceness(self) -> list[int]:
        """Niceness of the actors as last started (0 is normal priority)."""
        return [i.niceness for i in self.workers()]

    def _spawn(self, slot: _Slot) -> Any:
        slot.info = None
        slot.actor = self._remote.options(**slot.options).remote(
            slot.name, slot.device, self._threads, self.niceness
        )
        return slot.actor

    def _started(self, slot: _Slot, info: WorkerInfo) -> None:
        slot.info = info
        if info.warning is not None:
            log.warning("%s: %s", info.name, info.warning)

    def _replace(self, slot: _Slot, err: BaseException) -> None:
        log.warning("replacing worker %s: %s", slot.name, err)
        self.restarts += 1
        self._spawn(slot)
        self._started(slot, ray.get(slot.actor.start.remote([self._work_ref])))

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.busy is not None:
                continue
            if slot.actor is None:  # killed by cancel(): bring it back for new work
                slot.actor = self._spawn(slot)
                slot.actor.start.remote([self._work_ref])
            task, retries = self._queue.popleft()
            ref = slot.actor.run.remote(task)
            slot.busy = ref
            self._running[ref] = (slot, task, retries)
