"""Submit-time refusal of what the Ray cluster can never run, against a real local Ray
(the `local_ray` fixture: 4 CPUs, no GPU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prunepilot.schemas import JobSpec
from prunepilot.service._capacity import ClusterTotals, check_capacity, cluster_totals
from prunepilot.service.errors import InvalidSpecError

from ._server import Server, settings, tiny_spec


@pytest.fixture(scope="module")
def two_thread_server(
    local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose evaluators take 2 CPUs each; it queues jobs but runs none."""
    cfg = settings(tmp_path_factory.mktemp("capacity"), scheduler=False, worker_threads=2)
    with Server(cfg) as srv:
        yield srv


def test_the_snapshot_reads_the_cluster_s_totals(local_ray: None) -> None:
    assert cluster_totals() == ClusterTotals(cpus=4, gpus=0, nodes=1)


def test_more_cpu_workers_than_the_cluster_has_cpus_are_refused(two_thread_server: Server) -> None:
    with two_thread_server.client() as c:
        r = c.post("/jobs", json=tiny_spec(workers=3))
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == (
            "workers=3 needs 6 CPUs for 2-thread evaluators; the Ray cluster has 4 CPUs in "
            "total (0 GPUs, 1 node(s)): ask for workers <= 2"
        )
        r = c.post("/jobs", json=tiny_spec(workers=2))  # fits: queued
        assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"constraints": {"latency_ms": 5, "target": {"device": "cuda"}}}, "latency target's"),
        ({"finetune": {"device": "cuda:0"}}, "finetune.device 'cuda'"),
    ],
    ids=["latency-target", "finetune"],
)
def test_a_cuda_job_on_a_cluster_without_gpus_is_refused(
    two_thread_server: Server, change: dict[str, dict[str, object]], what: str
) -> None:
    with two_thread_server.client() as c:
        r = c.post("/jobs", json=tiny_spec(**change))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert what in detail and "needs a GPU, but the Ray cluster has none" in detail
    assert "4 CPUs and 0 GPUs on 1 node(s)" in detail


def test_cuda_servers_and_cpu_servers_refuse_what_they_cannot_run(
    local_ray: None, tmp_path: Path
) -> None:
    plain = JobSpec.model_validate(tiny_spec())
    with pytest.raises(
        InvalidSpecError, match=r"GPU evaluators \(PRUNEPILOT_WORKER_DEVICE=cuda\) needs"
    ):
        check_capacity(plain, settings(tmp_path, worker_device="cuda"))
    on_gpu = JobSpec.model_validate(tiny_spec(finetune={"device": "cuda"}))
    with pytest.raises(
        InvalidSpecError, match=r"runs CPU evaluators \(PRUNEPILOT_WORKER_DEVICE=cpu\)"
    ):
        check_capacity(on_gpu, settings(tmp_path, worker_device="cpu"))
    # unasked, the default is kept to what the CPUs hold; a 5-thread evaluator never fits
    check_capacity(plain, settings(tmp_path, workers_per_job=8))
    with pytest.raises(
        InvalidSpecError, match=r"1 worker\(s\) needs 5 CPUs.*lower PRUNEPILOT_WORKER"
    ):
        check_capacity(plain, settings(tmp_path, worker_threads=5))
