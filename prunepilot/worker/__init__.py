"""Ray-backed evaluators that the search drives.

`RayPool` starts one `EvaluatorActor` per device (``num_gpus=1`` per GPU, CPU-only actors
where there is no GPU) on a local Ray started on demand or on a cluster by address; pass it
as ``pool=`` to `prunepilot.search.search`.
"""

from __future__ import annotations

from ._actor import EvaluatorActor, WorkerInfo
from ._cluster import cluster_devices, ensure_ray
from ._devices import WorkerPlan, plan_workers, uses_gpu
from ._pool import RayPool
from .errors import WorkersLostError

__all__ = [
    "EvaluatorActor",
    "RayPool",
    "WorkerInfo",
    "WorkerPlan",
    "WorkersLostError",
    "cluster_devices",
    "ensure_ray",
    "plan_workers",
    "uses_gpu",
]
