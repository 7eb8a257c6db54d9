"""The Ray pool with a real local Ray: parallel evaluation, recovery from a dead worker,
evaluators at normal priority and one shared workload object."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import ray
import torch
from torch import nn

from prunepilot.core import PrunepilotError
from prunepilot.search import SearchCancelled, SearchProgress, SearchSpec, search
from prunepilot.worker import RayPool

from ..search._search_fixtures import search_data, trained_resnet

X = torch.randn(1, 3, 8, 8)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_resnet()


def _spec(trials: int) -> SearchSpec:
    return SearchSpec.model_validate(
        {
            "constraints": {"flops": "50%"},
            "space": {"min_keep": 0.25, "step": 0.125},
            "search": {"trials": trials, "uniform_seeds": 2, "bn_batches": 2, "top_k": 2},
            "finetune": {"steps": 3},
        }
    )


def test_two_workers_meet_a_flops_budget(local_ray: None, model: nn.Module) -> None:
    pool = RayPool(2, device="cpu")
    try:
        res = search(model, X, search_data(), _spec(6), pool=pool)
    finally:
        pool.close()
    assert res.macs <= res.limits["macs"]
    complete = [
        t
        for t in res.trials
        if t.state == "complete" and t.duplicate_of is None and t.baseline is None
    ]
    assert len(complete) == 6
    assert len({t.worker for t in complete}) == 2  # both workers evaluated candidates
    # evaluators of the local Ray prunepilot starts run at normal priority (Ray's default: 15)
    assert pool.worker_niceness() == [0, 0]
    assert all(w.warning is None for w in pool.workers())
    assert set(pool.startup) >= {"ray_start_s", "put_s", "actors_s", "fetch_s", "build_s"}
    assert res.model(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_killed_worker_is_replaced_and_its_trial_retried(local_ray: None, model: nn.Module) -> None:
    pool = RayPool(2, device="cpu")
    killed: list[int] = []

    def kill_once(p: SearchProgress) -> None:
        if p.phase == "searching" and p.trials_done >= 1 and not killed:
            pid = pool.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        res = search(model, X, search_data(), _spec(6), pool=pool, callback=kill_once)
    finally:
        pool.close()
    assert killed and pool.restarts >= 1
    # the replacement loaded the same workload object as the others: it was put once
    workers = pool.workers()
    assert killed[0] not in pool.worker_pids()
    assert {w.workload for w in workers} == {pool.workload_ref.hex()}
    evaluated = [
        t
        for t in res.trials
        if t.state == "complete" and t.duplicate_of is None and t.baseline is None
    ]
    assert len(evaluated) == 6
    assert not [t for t in res.trials if t.state == "failed"]
    assert res.macs <= res.limits["macs"]


def test_cancel_stops_running_trials_promptly(local_ray: None, model: nn.Module) -> None:
    spec = SearchSpec.model_validate(
        {
            "constraints": {"flops": "50%"},
            "space": {"min_keep": 0.25, "step": 0.125},
            # slow candidates: each scores after 20000 training steps (a minute or more)
            "search": {"trials": 6, "uniform_seeds": 2, "bn_batches": 1, "score_steps": 20000},
            "finetune": {"steps": 0},
        }
    )
    pool = RayPool(2, device="cpu")
    started: list[float] = []

    def cancel() -> bool:
        if not started and pool.pending:
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 1.0

    try:
        t0 = time.monotonic()
        with pytest.raises(SearchCancelled):
            search(model, X, search_data(), spec, pool=pool, cancel=cancel)
        assert started and time.monotonic() - started[0] < 5.0  # long before any candidate finishes
        assert time.monotonic() - t0 < 60
        assert pool.pending == 0
    finally:
        pool.close()


def test_a_pool_larger_than_the_cluster_is_refused_at_once(local_ray: None) -> None:
    from prunepilot.worker import ensure_ray

    ensure_ray()
    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(PrunepilotError, match=rf"need {cpus + 1} CPUs; the Ray cluster has {cpus}"):
        RayPool(1, device="cpu", threads=cpus + 1)


def test_a_pool_waits_visibly_for_room_and_gets_all_its_workers(
    local_ray: None, model: nn.Module
) -> None:
    # one pool holds every CPU: the next waits, saying so, and starts once it is freed
    # (placement groups: all of a pool's workers or none, never a partial allocation)
    from prunepilot.worker import ensure_ray

    ensure_ray()
    cpus = int(ray.cluster_resources()["CPU"])
    spec = _spec(2)
    first = RayPool(1, device="cpu", threads=cpus)
    ray.get(first._pg.ready(), timeout=60)  # the first pool holds every CPU from here
    messages: list[str] = []
    second = RayPool(2, device="cpu", on_wait=messages.append, wait_report_s=0.5)
    try:
        res: list[object] = []
        thread = threading.Thread(
            target=lambda: res.append(search(model, X, search_data(), spec, pool=second))
        )
        thread.start()
        deadline = time.monotonic() + 60
        while not messages and time.monotonic() < deadline:
            time.sleep(0.2)
        assert messages, "the waiting pool said nothing"
        assert messages[0].startswith("waiting for 2 CPU workers (1 CPU each): 0 of ")
        assert "CPUs free" in messages[0]
        first.close()
        thread.join(timeout=300)
        assert not thread.is_alive() and res
        assert second.startup["placement_s"] > 0.5
    finally:
        first.close()
        second.close()
