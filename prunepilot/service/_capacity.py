"""Submit-time refusal of what the Ray cluster can never run: CUDA without a GPU, more CPU
evaluators than the cluster has CPUs.

A job that can never be placed would otherwise sit at "starting workers" or fail seconds
after it started. The cluster's totals (CPUs, GPUs, nodes) come from
``ray.cluster_resources()`` through a snapshot refreshed at most every `MAX_AGE_S`, read
only where this process is already connected to Ray (the scheduling process): submitting
never starts or connects Ray, and an API-only replica skips the cluster checks. Totals,
not free resources: a busy cluster is waited for, an impossible request is refused.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from prunepilot.schemas import JobSpec

from ._settings import Settings
from .errors import InvalidSpecError

__all__ = ["ClusterTotals", "check_capacity", "cluster_totals"]

MAX_AGE_S = 5.0


@dataclass(frozen=True)
class ClusterTotals:
    """What the Ray cluster has in all: logical CPUs, GPUs and live nodes."""

    cpus: float
    gpus: float
    nodes: int

    def __str__(self) -> str:
        return f"{self.cpus:g} CPUs and {self.gpus:g} GPUs on {self.nodes} node(s)"


class _Snapshot:
    """The last totals read, shared by the request threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: ClusterTotals | None = None
        self.read_at = -MAX_AGE_S


_SNAPSHOT = _Snapshot()


def cluster_totals() -> ClusterTotals | None:
    """The cluster's totals, at most `MAX_AGE_S` old (``None``: this process has no Ray)."""
    ray = sys.modules.get("ray")
    # another thread (the scheduler) may be importing Ray right now: not connected yet
    importing = getattr(getattr(ray, "__spec__", None), "_initializing", False)
    if ray is None or importing or not ray.is_initialized():
        return None
    with _SNAPSHOT.lock:
        if _SNAPSHOT.totals is None or time.monotonic() - _SNAPSHOT.read_at > MAX_AGE_S:
            res = ray.cluster_resources()
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            _SNAPSHOT.totals = ClusterTotals(
                float(res.get("CPU", 0)), float(res.get("GPU", 0)), nodes
            )
            _SNAPSHOT.read_at = time.monotonic()
        return _SNAPSHOT.totals


def _cuda_in_spec(spec: JobSpec) -> list[str]:
    """What the spec asks a GPU for."""
    uses = []
    if spec.constraints.target.device == "cuda":
        uses.append("the latency target's device 'cuda'")
    if spec.finetune.device == "cuda":
        uses.append("finetune.device 'cuda'")
    return uses


def _needs(uses: list[str]) -> str:
    return f"{' and '.join(uses)} {'needs' if len(uses) == 1 else 'need'}"


def check_capacity(spec: JobSpec, settings: Settings) -> None:
    """Refuse a job the cluster (or this server's evaluators) can never run.

    Raises:
        InvalidSpecError: CUDA asked of CPU evaluators or of a cluster without GPUs; more CPU
            evaluators times ``worker_threads`` than the cluster's CPUs.
    """
    asked = _cuda_in_spec(spec)
    if asked and settings.worker_device == "cpu":
        raise InvalidSpecError(
            f"{_needs(asked)} a GPU evaluator, but this server runs CPU evaluators "
            "(PRUNEPILOT_WORKER_DEVICE=cpu); use 'cpu'"
        )
    totals = cluster_totals()
    if totals is None:
        return
    from prunepilot.worker import plan_workers, uses_gpu  # Ray is imported already

    if settings.worker_device == "cuda":
        asked.append("this server's GPU evaluators (PRUNEPILOT_WORKER_DEVICE=cuda)")
    if asked and totals.gpus < 1:
        raise InvalidSpecError(
            f"{_needs(asked)} a GPU, but the Ray cluster has none ({totals}); use 'cpu'"
        )
    if uses_gpu(settings.worker_device, totals.gpus):
        return  # one GPU actor per GPU at most: more is clamped when the job starts
    threads = settings.worker_threads
    plan = plan_workers(
        spec.workers,
        settings.worker_device,
        threads=threads,
        cpus=totals.cpus,
        gpus=totals.gpus,
        cpu_default=settings.workers_per_job,
    )
    workers = min(plan.workers, settings.max_workers_per_job)
    need = workers * threads
    if need > totals.cpus:
        asked_for = f"workers={workers}" if spec.workers else f"the default of {workers} worker(s)"
        fit = int(totals.cpus) // threads
        hint = f"ask for workers <= {fit}" if fit else "lower PRUNEPILOT_WORKER_THREADS"
        raise InvalidSpecError(
            f"{asked_for} needs {need} CPUs for {threads}-thread evaluators; the Ray cluster "
            f"has {totals.cpus:g} CPUs in total ({totals.gpus:g} GPUs, {totals.nodes} "
            f"node(s)): {hint}"
        )
