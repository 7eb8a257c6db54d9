"""The scheduler: a background thread of the API process that runs queued jobs on Ray.

Each tick it reaps finished runners, enforces cancellations (a runner that has not
stopped ``cancel_grace_s`` after CANCELLING is killed and the job marked CANCELLED),
enforces the wall-clock limit (a job running longer than ``max_job_seconds`` since its
runner was launched is marked FAILED, which its runner notices and stops on; one that has
not stopped ``cancel_grace_s`` later is killed), and claims queued jobs up to
``concurrent_jobs``, launching one `run_job` Ray task per job, pinned to this process's
node (hard node affinity): the runner reads the database and uploads and writes artifacts
by local path, so it runs where the server's storage is. Its heavy compute (calibration,
candidate scoring, fine-tuning, latency timing) goes to the job's evaluator actors, which
may be on any node and get the model and data through Ray's object store only: a worker
node needs Ray and the package, nothing of the server's disk.
The runner writes its own progress and final status; the scheduler only fills in when a
runner dies without one (FAILED with the reason, logs kept).

Ray is connected through `RayLink`: at once for a cluster (``ray_address``, so ``/readyz``
tells at start whether it can be reached), at the first job for a local Ray. While it
cannot be reached, queued jobs stay QUEUED with phase ``waiting: cannot connect to Ray``
and a log line saying why; once connected they get a line saying so.

On start it recovers from a previous process: jobs left RUNNING are re-queued (their
Optuna study resumes them) and jobs left CANCELLING are marked CANCELLED. On stop it kills
its runners and leaves their jobs RUNNING, so the next start resumes them.

Housekeeping, at start and every ``upload_expiry_interval_s``: uploads no job names are
deleted ``upload_ttl_s`` after they were made. Only a scheduling process does it; API-only
replicas (``scheduler=False``) leave it to the one that schedules for the same database.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prunepilot.schemas import JobStatus

from ._ray_link import RayLink
from ._redact import error_text
from ._rows import utcnow
from ._settings import Settings
from ._store import Database
from ._uploads import remove_quietly

__all__ = ["Scheduler"]

log = logging.getLogger("prunepilot.service")

_WAITING_PHASE = "waiting: cannot connect to Ray"


@dataclass
class _Running:
    job_id: str
    attempt: int
    ref: Any
    started: float
    killed: bool = False
    expired: float | None = None  # when the wall-clock limit failed the job


class Scheduler:
    """Launches and watches job runners.

    Args:
        settings: the operator's settings.
        db: the job store.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self._running: dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remote: Any = None
        self._affinity: Any = None
        self.ray_link = RayLink(settings)
        self._waiting: dict[str, str] = {}  # queued job -> the waiting message it carries
        self._stale_waiting = True  # notes a previous process may have left
        self._lock = threading.Lock()
        self.last_tick = 0.0
        self.error: str | None = None
        self._next_housekeeping = 0.0
        # what runners get: no tokens (runners need none; task args are visible in Ray)
        self._runner_settings = settings.model_dump(mode="json", exclude={"tokens"})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Recover jobs of a previous process and start the scheduling thread."""
        self.recover()
        self.housekeeping()
        self.last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="prunepilot-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling and kill this process's runners (their jobs stay RUNNING)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        if not running:
            return
        import ray

        for r in running:
            self.db.log(r.job_id, "WARNING", "server stopping: the job resumes when it restarts")
            try:
                ray.cancel(r.ref, force=True)
            except Exception:  # Ray may already be shutting down
                log.debug("cancelling runner of %s failed", r.job_id, exc_info=True)
        try:
            ray.wait([r.ref for r in running], num_returns=len(running), timeout=timeout)
        except Exception:  # Ray may already be shut down
            log.debug("waiting for cancelled runners failed", exc_info=True)

    @property
    def alive(self) -> bool:
        """Whether the scheduling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for work now (a job was submitted or cancelled)."""
        self._wake.set()

    def recover(self) -> None:
        """Re-queue jobs a previous process left RUNNING; finish those left CANCELLING."""
        for row in self.db.jobs_in([JobStatus.RUNNING, JobStatus.CANCELLING]):
            if row.status == JobStatus.CANCELLING.value:
                self.db.finish(row.id, JobStatus.CANCELLED, from_status=(JobStatus.CANCELLING,))
                log.info("job %s: cancelled (was cancelling when the server stopped)", row.id)
            elif self.db.requeue(
                row.id, "the server restarted: re-queued; the search resumes from its study"
            ):
                log.info("job %s: re-queued after a restart", row.id)

    def housekeeping(self) -> None:
        """Expire unused uploads if it is time (a failure is logged and retried later)."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + self.settings.upload_expiry_interval_s
        try:
            self.expire_uploads()
        except Exception:  # the database may be briefly unavailable: next round
            log.exception("expiring uploads failed")

    def expire_uploads(self) -> int:
        """Delete (record, then file) each upload no job names, ``upload_ttl_s`` after it
        was made; returns how many."""
        ttl = self.settings.upload_ttl_s
        if not ttl:
            return 0
        rows = self.db.expire_uploads(utcnow() - timedelta(seconds=ttl))
        for row in rows:
            remove_quietly(self.settings.uploads_path / row.path)
            log.info("upload %s of %s expired (no job uses it)", row.id, row.owner)
        return len(rows)

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.error = None
            except Exception as e:  # keep scheduling; readyz reports the error
                self.error = f"{type(e).__name__}: {e}"
                log.exception("scheduler tick failed")
            self.last_tick = time.monotonic()
            self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    def _ray(self) -> Any | None:
        """The ``ray`` module once connected; ``None`` while Ray cannot be reached."""
        if not self.ray_link.connect():
            return None
        import ray

        if self._remote is None:
            from ._runner import run_job

            self._remote = ray.remote(num_cpus=0, max_retries=0)(run_job)
        if self._waiting or self._stale_waiting:
            self._clear_waiting()
        return ray

    def _note_waiting(self) -> None:
        """Tell each queued job why it waits (once per job and reason)."""
        message = self.ray_link.waiting
        if message is None:
            return
        queued = {row.id for row in self.db.jobs_in([JobStatus.QUEUED])}
        self._waiting = {k: v for k, v in self._waiting.items() if k in queued}
        for job_id in queued:
            if self._waiting.get(job_id) != message and self.db.note_queued(
                job_id, _WAITING_PHASE, "WARNING", message
            ):
                self._waiting[job_id] = message

    def _clear_waiting(self) -> None:
        """Once connected: queued jobs noted as waiting (by this process or a previous
        one) get their phase back and a line saying so."""
        stale = {
            row.id for row in self.db.jobs_in([JobStatus.QUEUED]) if row.phase == _WAITING_PHASE
        }
        note = f"connected to Ray at {self.ray_link.where}"
        for job_id in stale | set(self._waiting):
            self.db.note_queued(job_id, "queued", "INFO", note)
        self._waiting.clear()
        self._stale_waiting = False

    def tick(self) -> None:
        """One round: housekeeping, reap, enforce cancellations, launch."""
        self.housekeeping()
        with self._lock:
            running = list(self._running.values())
        ray = self._ray() if running or self.settings.ray_address is not None else None
        if running and ray is not None:
            self._reap(ray, running)
            self._enforce_cancel(ray)
            self._enforce_deadline(ray)
        with self._lock:
            free = self.settings.concurrent_jobs - len(self._running)
        if free <= 0 or self._stop.is_set():
            return
        queued = self.db.queued(free)
        if not queued:
            return
        if ray is None and self._ray() is None:
            self._note_waiting()
            return
        for job_id in queued:
            attempt = self.db.claim(job_id)
            if attempt is None:
                continue
            try:
                ref = self._remote.options(
                    name=f"prunepilot-job-{job_id}", scheduling_strategy=self._on_this_node()
                ).remote(job_id, attempt, self._runner_settings)
            except Exception as e:  # Ray refused the task: the job cannot run
                self.db.finish(
                    job_id, JobStatus.FAILED, attempt=attempt, error=f"cannot start: {e}"
                )
                continue
            with self._lock:
                self._running[job_id] = _Running(job_id, attempt, ref, time.monotonic())
            log.info("job %s: runner launched (attempt %d)", job_id, attempt)

    def _on_this_node(self) -> Any:
        """Ray's strategy that pins a runner to this process's node (hard affinity).

        The runner reads the database, the uploads and writes artifacts by local path,
        so it must run where the server's storage is, never on a node Ray picks.
        """
        if self._affinity is None:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = ray.get_runtime_context().get_node_id()
            self._affinity = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        return self._affinity

    def _reap(self, ray: Any, running: list[_Running]) -> None:
        ready, _ = ray.wait([r.ref for r in running], num_returns=len(running), timeout=0)
        finished = set(ready)
        for r in running:
            if r.ref not in finished:
                continue
            with self._lock:
                self._running.pop(r.job_id, None)
            try:
                outcome = ray.get(r.ref)
                log.info("job %s: runner finished (%s)", r.job_id, outcome)
                reason = "the job runner exited without recording a result"
            except Exception as e:  # the runner died: crash, OOM, or killed on cancel
                outcome = None
                reason = f"the job runner died: {error_text(e)}"
            row = self.db.get_job(r.job_id)
            if row is None or row.attempt != r.attempt or JobStatus(row.status).terminal:
                continue
            if row.status == JobStatus.CANCELLING.value:
                self.db.finish(r.job_id, JobStatus.CANCELLED, attempt=r.attempt)
            else:
                self.db.log(r.job_id, "ERROR", reason)
                self.db.finish(r.job_id, JobStatus.FAILED, attempt=r.attempt, error=reason)

    def _enforce_cancel(self, ray: Any) -> None:
        grace = self.settings.cancel_grace_s
        now = utcnow()
        with self._lock:
            running = dict(self._running)
        for row in self.db.jobs_in([JobStatus.CANCELLING]):
            r = running.get(row.id)
            if r is None or r.killed or row.cancel_requested_at is None:
                continue
            if (now - row.cancel_requested_at).total_seconds() < grace:
                continue
            log.info("job %s: runner still running %.0f s after cancel; killing it", row.id, grace)
            self.db.log(row.id, "WARNING", f"the runner did not stop within {grace:g} s; killed")
            try:
                ray.cancel(r.ref, force=True)
            except Exception:  # the runner may have finished meanwhile
                log.debug("ray.cancel failed for %s", row.id, exc_info=True)
            r.killed = True
            self.db.finish(row.id, JobStatus.CANCELLED, attempt=r.attempt)

    def _enforce_deadline(self, ray: Any) -> None:
        """Fail jobs running past ``max_job_seconds``; kill their runners after the grace."""
        limit, grace = self.settings.max_job_seconds, self.settings.cancel_grace_s
        now = time.monotonic()
        with self._lock:
            running = [r for r in self._running.values() if not r.killed]
        for r in running:
            if r.expired is None:
                if now - r.started <= limit:
                    continue
                r.expired = now
                reason = (
                    f"the job ran past the server's wall-clock limit of {limit:g} s "
                    "(PRUNEPILOT_MAX_JOB_SECONDS)"
                )
                if self.db.finish(
                    r.job_id,
                    JobStatus.FAILED,
                    attempt=r.attempt,
                    from_status=(JobStatus.RUNNING,),
                    error=reason,
                ):
                    log.info("job %s: %s; stopping its runner", r.job_id, reason)
            elif now - r.expired >= grace:
                log.info(
                    "job %s: runner still running %.0f s after its deadline; killing it",
                    r.job_id,
                    grace,
                )
                try:
                    ray.cancel(r.ref, force=True)
                except Exception:  # the runner may have finished meanwhile
                    log.debug("ray.cancel failed for %s", r.job_id, exc_info=True)
                r.killed = True
