"""How many evaluators a job gets, and on which device: one GPU actor per GPU at most."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest
import ray

from prunepilot.worker import RayPool, WorkerPlan, plan_workers


def test_gpu_jobs_get_one_actor_per_gpu_by_default() -> None:
    for device in ("auto", "cuda"):
        assert plan_workers(None, device, threads=1, cpus=16, gpus=2) == WorkerPlan(2, "cuda")
        # a CPU default (the service's workers_per_job) does not apply to GPU actors
        plan = plan_workers(None, device, threads=1, cpus=16, gpus=1, cpu_default=2)
        assert plan == WorkerPlan(1, "cuda")


def test_more_gpu_actors_than_gpus_are_clamped_with_a_note() -> None:
    plan = plan_workers(2, "auto", threads=1, cpus=16, gpus=1)
    assert (plan.workers, plan.device) == (1, "cuda")
    assert plan.note is not None and "2 GPU workers asked for" in plan.note
    assert "has 1 GPU(s)" in plan.note
    assert plan_workers(1, "cuda", threads=1, cpus=16, gpus=4) == WorkerPlan(1, "cuda")


def test_auto_without_gpus_means_cpu_actors() -> None:
    assert plan_workers(None, "auto", threads=2, cpus=8, gpus=0) == WorkerPlan(4, "cpu")
    assert plan_workers(3, "auto", threads=1, cpus=8, gpus=0) == WorkerPlan(3, "cpu")
    assert plan_workers(None, "cpu", threads=1, cpus=8, gpus=4) == WorkerPlan(8, "cpu")
    # the service's default is kept to what the CPUs hold, and is at least one
    assert plan_workers(None, "auto", threads=1, cpus=8, gpus=0, cpu_default=2).workers == 2
    assert plan_workers(None, "cpu", threads=1, cpus=1, gpus=0, cpu_default=2).workers == 1
    assert plan_workers(None, "cpu", threads=4, cpus=2, gpus=0, cpu_default=2).workers == 1


def test_impossible_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="has no GPUs"):
        plan_workers(None, "cuda", threads=1, cpus=8, gpus=0)
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'"):
        plan_workers(None, "cuda:0", threads=1, cpus=8, gpus=1)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        plan_workers(0, "cpu", threads=1, cpus=8, gpus=0)


@pytest.fixture(scope="module")
def ray_with_two_gpus() -> Iterator[None]:
    """A local Ray that declares two GPUs (logical: Ray counts, this machine need have none)."""
    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join(p for p in sys.path if p)
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


def test_the_pool_clamps_gpu_actors_to_the_cluster_s_gpus(
    ray_with_two_gpus: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="prunepilot.worker"):
        pool = RayPool(5, device="auto")
    try:
        assert pool.capacity == 2
        assert "5 GPU workers asked for" in caplog.text and "running 2" in caplog.text
    finally:
        pool.close()
    pool = RayPool(device="auto")
    try:
        assert pool.capacity == 2  # one per GPU
    finally:
        pool.close()
