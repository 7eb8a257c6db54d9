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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from prunepilot.core import PrunepilotError
from prunepilot.search import Outcome, Task, Workload

from ._actor import EvaluatorActor, WorkerInfo
from ._cluster import cluster_devices, ensure_ray
from ._devices import plan_workers, uses_gpu
from ._transport import pack
from .errors import WorkersLostError

__all__ = ["RayPool", "WorkersLostError"]

log = logging.getLogger("prunepilot.worker")

_DEAD = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)
_names = itertools.count()


def _describe(n: int, gpu: bool, threads: int) -> str:
    if gpu:
        return f"{n} GPU worker{'s' if n != 1 else ''} (1 GPU and 1 CPU each)"
    return (
        f"{n} CPU worker{'s' if n != 1 else ''} ({threads} CPU{'s' if threads != 1 else ''} each)"
    )


def _free_text() -> str:
    """What the cluster has free and in total, for messages."""
    free, total = ray.available_resources(), ray.cluster_resources()
    parts = [
        f"{free.get(k, 0):g} of {total.get(k, 0):g} {k}s free"
        for k in ("CPU", "GPU")
        if total.get(k, 0) or k == "CPU"
    ]
    return ", ".join(parts)


def _check_fits(n: int, bundle: dict[str, float], need: str) -> None:
    """Refuse a pool the whole cluster could never hold (it would wait forever)."""
    total = ray.cluster_resources()
    for key, per in bundle.items():
        if n * per > total.get(key, 0):
            raise PrunepilotError(
                f"{need} need {n * per:g} {key}s; the Ray cluster has "
                f"{total.get(key, 0):g} in total: ask for fewer workers"
            )


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
    ``workers`` CPU-only actors with ``threads`` CPU threads each.

    The actors are placed together through one placement group (bundles spread over the
    nodes): a job gets all its workers or none, so two jobs never each hold part of what
    they need and wait for each other. While the cluster has no room, `start` waits and
    says so through ``on_wait`` ("waiting for 2 CPU workers: ..."); a request larger than
    the whole cluster is refused at once. A worker that dies mid-task (its node lost) is
    replaced in the background and its task re-queued (up to ``max_retries`` times) on
    the workers still alive; when none is alive for ``lost_timeout_s``, `wait` raises
    `WorkersLostError` with the reason instead of waiting for the node to come back.
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
        on_wait: called with a message every ``wait_report_s`` while `start` waits for
            the cluster to have room for the workers.
        lost_timeout_s: how long `wait` tolerates having no live worker (all lost with
            their nodes, replacements not placed) before it raises `WorkersLostError`.
        wait_report_s: seconds between ``on_wait`` messages.
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
        on_wait: Callable[[str], None] | None = None,
        lost_timeout_s: float = 300.0,
        wait_report_s: float = 10.0,
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
        bundle = {"GPU": 1.0, "CPU": 1.0} if use_gpu else {"CPU": float(threads)}
        self.on_wait, self.lost_timeout_s, self.wait_report_s = (
            on_wait,
            lost_timeout_s,
            wait_report_s,
        )
        self._need = _describe(n, use_gpu, threads)
        _check_fits(n, bundle, self._need)
        self._pg = placement_group([dict(bundle) for _ in range(n)], strategy="SPREAD")
        self._slots = [
            _Slot(
                f"worker-{next(_names)}",
                "cuda" if use_gpu else "cpu",
                {
                    "num_gpus": bundle.get("GPU", 0.0),
                    "num_cpus": bundle["CPU"],
                    "scheduling_strategy": PlacementGroupSchedulingStrategy(
                        self._pg, placement_group_bundle_index=i
                    ),
                },
            )
            for i in range(n)
        ]
        self._threads = threads
        self._work_ref: Any = None
        self._queue: deque[tuple[Task, int]] = deque()
        self._running: dict[Any, tuple[_Slot, Task, int]] = {}
        self._starting: dict[Any, _Slot] = {}  # start() calls of replacements in flight
        self._alone_since: float | None = None  # since when no worker is alive
        self._remote = ray.remote(EvaluatorActor)
        for slot in self._slots:  # processes boot while the driver prepares the workload
            self._spawn(slot)
        log.info("ray pool: %s", self._need)

    # ------------------------------------------------------------------ Pool protocol

    @property
    def capacity(self) -> int:
        return len(self._slots)

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._running)

    def start(self, work: Workload) -> None:
        t0 = time.perf_counter()
        self._wait_for_room()
        t_room = time.perf_counter()
        self._work_ref = ray.put(pack(work))
        t1 = time.perf_counter()
        self._starting.clear()
        for slot in self._slots:
            if slot.actor is None:
                self._spawn(slot)
        infos = ray.get([s.actor.start.remote([self._work_ref]) for s in self._slots])
        for slot, info in zip(self._slots, infos, strict=True):
            self._started(slot, info)
        self.startup["placement_s"] = t_room - t0
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
            if self._queue or self._running:
                self._check_alive()
            if not self._running and not (self._queue and self._starting):
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            # wake for a replacement coming up too, and at least every second to notice
            # that no worker is left
            step = 1.0 if left is None else min(left, 1.0)
            refs = list(self._running) + list(self._starting)
            ready, _ = ray.wait(refs, num_returns=1, timeout=step)
            if not ready:
                if left is not None and left <= step:
                    return None
                continue
            ref = ready[0]
            if ref in self._starting:
                self._came_up(ref)
                continue
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
        self._starting.clear()
        for slot in self._slots:
            if slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
                slot.actor = None
        try:
            remove_placement_group(self._pg)
        except Exception:  # the cluster may be gone already; nothing is left to free
            log.debug("removing the placement group failed", exc_info=True)

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
        """Start a replacement in the background: the others carry on meanwhile (its
        bundle may wait for Ray to re-place it when its node is gone)."""
        log.warning("replacing worker %s: %s", slot.name, err)
        self.restarts += 1
        self._spawn(slot)
        self._starting[slot.actor.start.remote([self._work_ref])] = slot

    def _came_up(self, ref: Any) -> None:
        slot = self._starting.pop(ref)
        try:
            self._started(slot, ray.get(ref))
        except _DEAD as e:  # died while starting: try again
            self._replace(slot, e)

    def _ready(self, slot: _Slot) -> bool:
        return slot.actor is not None and slot not in self._starting.values()

    def _check_alive(self) -> None:
        """Raise `WorkersLostError` when no worker has been alive for ``lost_timeout_s``."""
        if any(self._ready(s) for s in self._slots):
            self._alone_since = None
            return
        now = time.monotonic()
        if self._alone_since is None:
            self._alone_since = now
            log.warning(
                "no worker alive: waiting up to %.0f s for replacements", self.lost_timeout_s
            )
        elif now - self._alone_since > self.lost_timeout_s:
            raise WorkersLostError(
                f"every worker was lost (their nodes died or left) and none could be "
                f"replaced within {self.lost_timeout_s:.0f} s; the cluster has "
                f"{_free_text()}; {self._need} are needed"
            )

    def _wait_for_room(self) -> None:
        """Wait until the placement group is placed, saying so every ``wait_report_s``."""
        t0 = time.monotonic()
        step = min(1.0, self.wait_report_s)  # say why soon, then every wait_report_s
        while True:
            ready, _ = ray.wait([self._pg.ready()], timeout=step)
            step = self.wait_report_s
            if ready:
                return
            message = (
                f"waiting for {self._need}: {_free_text()} ({time.monotonic() - t0:.0f} s so far)"
            )
            log.info(message)
            if self.on_wait is not None:
                self.on_wait(message)

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.busy is not None or slot in self._starting.values():
                continue
            if slot.actor is None:  # killed by cancel(): bring it back for new work
                slot.actor = self._spawn(slot)
                slot.actor.start.remote([self._work_ref])
            task, retries = self._queue.popleft()
            ref = slot.actor.run.remote(task)
            slot.busy = ref
            self._running[ref] = (slot, task, retries)
