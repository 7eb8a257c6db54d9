"""Connecting to Ray: an embedded local instance on demand, or an existing cluster."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import ray

__all__ = ["cluster_devices", "ensure_ray"]

log = logging.getLogger("prunepilot.worker")


def ensure_ray(
    address: str | None = None, num_cpus: int | None = None, worker_niceness: int | None = 0
) -> None:
    """Start a local Ray (``address=None``) or connect to a cluster, once per process.

    The local instance gets the driver's ``sys.path`` so workers import the same modules
    (models defined in user code, test helpers) as the driver; no dashboard, quiet logs.
    Its workers run ``worker_niceness`` above the driver's niceness (Ray's
    ``worker_niceness`` system config; ``None`` keeps Ray's default of 15), so evaluators
    are not starved on a shared machine. A cluster keeps its own setting.
    """
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address is None:
        path = os.pathsep.join(p for p in sys.path if p)
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        kwargs["num_cpus"] = num_cpus
        if worker_niceness is not None:
            kwargs["_system_config"] = {"worker_niceness": worker_niceness}
        log.info("starting a local Ray instance")
    else:
        log.info("connecting to the Ray cluster at %s", address)
    # "local": always a new instance, never a cluster some `ray start` on this machine
    # left in /tmp/ray/ray_current_cluster
    ray.init(address=address or "local", **kwargs)


def cluster_devices() -> tuple[int, int]:
    """(CPUs, GPUs) the Ray cluster offers."""
    res = ray.cluster_resources()
    return int(res.get("CPU", 0)), int(res.get("GPU", 0))
