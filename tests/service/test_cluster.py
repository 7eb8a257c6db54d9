"""The service on a real two-node Ray cluster, the second node without the server's disk.

The job runner reads the database and uploads and writes artifacts on the API host only;
evaluators on both nodes get the model and data through the object store. Losing the
second node mid-job, the job carries on with the head's evaluator and succeeds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ._cluster import TwoNodeCluster, cluster_unavailable
from ._process import ServerProcess
from ._server import ALICE, tiny_spec, wait_for

pytestmark = pytest.mark.skipif(
    cluster_unavailable() is not None, reason=str(cluster_unavailable())
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TwoNodeCluster, Path]]:
    root = tmp_path_factory.mktemp("cluster")
    data = root / "data"
    c = TwoNodeCluster(hidden=data, logs=root / "ray-logs")
    try:
        c.start()
        yield c, data
    finally:
        c.stop()


@pytest.fixture(scope="module")
def server(cluster: tuple[TwoNodeCluster, Path]) -> Iterator[ServerProcess]:
    c, data = cluster
    env = {
        "PRUNEPILOT_RAY_ADDRESS": c.address,
        "PRUNEPILOT_WORKERS_PER_JOB": "2",
        "PRUNEPILOT_WORKER_LOST_TIMEOUT_S": "60",
        "PRUNEPILOT_CONCURRENT_JOBS": "2",
        "RAY_AUTH_MODE": "disabled",
    }
    with ServerProcess(data, env, scheduler=True) as s:
        yield s


def _workers(client: httpx.Client, job_id: str) -> list[str]:
    trials = client.get(f"/jobs/{job_id}/trials").json()["trials"]
    return [t["worker"] for t in trials if t.get("worker")]


def _job_nodes(client: httpx.Client, job_id: str) -> tuple[str, set[str]]:
    """The runner's node id (from the job's log) and the node prefixes its trials ran on."""
    log = client.get(f"/jobs/{job_id}/logs").text
    runner = re.search(r"runner on node ([0-9a-f]+)", log)
    assert runner, log
    return runner.group(1), {w.split("@")[1] for w in _workers(client, job_id)}


def test_a_job_runs_on_both_nodes_and_its_runner_on_the_api_host(
    cluster: tuple[TwoNodeCluster, Path], server: ServerProcess
) -> None:
    c, data = cluster
    head, second = c.nodes()
    assert c.second_sees() == []  # the second node has none of the server's files
    client = server.client(ALICE)
    spec = tiny_spec(search={"trials": 8})
    job_id = client.post("/jobs", json=spec).json()["id"]
    job = wait_for(client, job_id, timeout=300)
    assert job["status"] == "SUCCEEDED", job
    runner, nodes = _job_nodes(client, job_id)
    assert runner == head  # storage by local path happens on the API host only
    assert nodes == {head[:8], second[:8]}  # evaluators on both nodes ran trials
    # artifacts were written where the server reads them
    for art in client.get(f"/jobs/{job_id}/artifacts").json():
        r = client.get(f"/jobs/{job_id}/artifacts/{art['name']}")
        assert r.status_code == 200 and len(r.content) == art["size"]
    assert c.second_sees() == []  # and nothing of the job landed on the second node
    assert any(p.is_dir() for p in data.iterdir())


def test_more_workers_than_the_cluster_has_are_refused(server: ServerProcess) -> None:
    client = server.client(ALICE)
    r = client.post("/jobs", json=tiny_spec(workers=3))
    assert r.status_code == 422, r.text
    assert "the Ray cluster has 2 CPUs in total" in r.json()["detail"]


def test_a_job_waits_visibly_while_another_holds_the_cluster(server: ServerProcess) -> None:
    # each job needs both CPUs: all of a job's workers or none (no deadlock on halves),
    # and the one that waits says so. The first job is far longer than the test needs
    # (it could otherwise end before the second is placed) and is cancelled once seen.
    client = server.client(ALICE)
    spec = tiny_spec(search={"trials": 1000}, finetune={"steps": 10_000})
    first = client.post("/jobs", json=spec).json()["id"]
    wait_for(client, first, lambda j: j["trials_done"] > 0, timeout=240)
    second = client.post("/jobs", json=tiny_spec()).json()["id"]
    job = wait_for(client, second, lambda j: j["phase"] == "waiting for workers", timeout=120)
    assert job["status"] == "RUNNING"
    assert client.get(f"/jobs/{first}").json()["status"] == "RUNNING"
    log = client.get(f"/jobs/{second}/logs").text
    assert "waiting for 2 CPU workers (1 CPU each): 0 of 2 CPUs free" in log, log
    assert client.post(f"/jobs/{first}/cancel").status_code == 200
    assert wait_for(client, first, timeout=120)["status"] == "CANCELLED"
    assert wait_for(client, second, timeout=300)["status"] == "SUCCEEDED"


def test_losing_a_node_mid_job_the_job_carries_on_and_succeeds(
    cluster: tuple[TwoNodeCluster, Path], server: ServerProcess
) -> None:
    c, _ = cluster
    head, second = c.nodes()
    client = server.client(ALICE)
    spec = tiny_spec(search={"trials": 30}, finetune={"steps": 50})
    job_id = client.post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 240
    while not any(w.endswith(f"@{second[:8]}") for w in _workers(client, job_id)):
        assert time.monotonic() < deadline, "no trial ran on the second node"
        time.sleep(0.5)
    killed_at = time.monotonic()
    assert c.kill_second() > 0
    job = wait_for(client, job_id, timeout=300)
    assert job["status"] == "SUCCEEDED", job
    assert c.wait_nodes(1, timeout=60) == [head]
    log = client.get(f"/jobs/{job_id}/logs").text
    assert re.search(r"replacing worker|died during", log), log
    assert time.monotonic() - killed_at < 300
