"""How many evaluator actors a job gets, and on which device, from the cluster's totals.

Pure arithmetic (no Ray calls), so the pool, the job runner and the service's submit-time
checks count alike. A GPU actor holds a whole GPU (``num_gpus=1``): a job never gets more
GPU actors than the cluster has GPUs, since the extra ones could never be placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["WorkerPlan", "plan_workers", "uses_gpu"]

_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class WorkerPlan:
    """Evaluator actors for one job.

    Attributes:
        workers: how many actors.
        device: ``cuda`` (one GPU each) or ``cpu``.
        note: why fewer actors than asked for (``None``: as asked).
    """

    workers: int
    device: Literal["cpu", "cuda"]
    note: str | None = None


def uses_gpu(device: str, gpus: float) -> bool:
    """Whether ``device`` (``auto``, ``cpu``, ``cuda``) means GPU actors on a cluster with
    ``gpus`` GPUs (``auto``: GPUs when there are any)."""
    if device not in _DEVICES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    return device == "cuda" or (device == "auto" and gpus >= 1)


def plan_workers(
    requested: int | None,
    device: str,
    *,
    threads: int,
    cpus: float,
    gpus: float,
    cpu_default: int | None = None,
) -> WorkerPlan:
    """The actors a job gets.

    Args:
        requested: actors asked for (``None``: the default).
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: CPU threads (and CPUs reserved) per CPU actor.
        cpus: the cluster's total CPUs.
        gpus: the cluster's total GPUs.
        cpu_default: CPU actors when none are asked for (``None``: as many as the CPUs
            hold, ``cpus // threads``); never more than the CPUs hold, at least one.

    Returns:
        one GPU actor per GPU by default, and at most that many (asking for more is
        clamped, with a `WorkerPlan.note`); CPU actors otherwise.

    Raises:
        ValueError: ``cuda`` on a cluster without GPUs, or a bad device or count.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"workers must be >= 1; got {requested}")
    if uses_gpu(device, gpus):
        whole = int(gpus)
        if whole < 1:
            raise ValueError("device='cuda' but the Ray cluster has no GPUs")
        if requested is not None and requested > whole:
            note = (
                f"{requested} GPU workers asked for, but the Ray cluster has {whole} GPU(s) "
                f"and each GPU worker holds a whole one: running {whole}"
            )
            return WorkerPlan(whole, "cuda", note)
        return WorkerPlan(requested or whole, "cuda")
    fit = max(1, int(cpus) // max(threads, 1))
    default = fit if cpu_default is None else min(cpu_default, fit)
    return WorkerPlan(requested or max(1, default), "cpu")
