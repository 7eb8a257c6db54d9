"""The life of a job against a real server and real local Ray: submit, follow, download."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

import prunepilot as pp

from ._server import Server, settings, tiny_spec, wait_for

_ARTIFACTS = {"model.safetensors", "model.onnx", "report.json", "report.html"}


def test_job_succeeds_and_its_checkpoint_meets_the_flops_budget(
    server: Server, finished_job: dict[str, Any], tmp_path: Path
) -> None:
    job = finished_job["job"]
    assert job["status"] == "SUCCEEDED", job
    assert job["trials_done"] == job["trials_planned"] == 4
    assert job["started_at"] and job["finished_at"] and job["error"] is None
    result = job["result"]
    assert result["macs"] <= result["limits"]["macs"]
    assert result["chosen"] in {"search", "uniform", "global", "lamp"}
    assert set(result["artifacts"]) == _ARTIFACTS

    with server.client() as c:
        trials = c.get(f"/jobs/{job['id']}/trials").json()
        complete = [t for t in trials["trials"] if t["state"] == "complete"]
        duplicates = [t for t in complete if (t["reason"] or "").startswith("duplicate of")]
        baselines = sorted(t["baseline"] for t in complete if t["baseline"])
        assert baselines == ["global", "lamp", "uniform"]  # evaluated besides the 4 trials
        assert len(complete) - len(duplicates) - len(baselines) == 4
        assert all(t["config"] and t["macs"] > 0 for t in complete)
        assert trials["pareto"] and set(trials["pareto"]) <= {t["number"] for t in complete}

        listed = {a["name"]: a for a in c.get(f"/jobs/{job['id']}/artifacts").json()}
        assert set(listed) == _ARTIFACTS
        for name, info in listed.items():
            r = c.get(f"/jobs/{job['id']}/artifacts/{name}")
            assert r.status_code == 200
            assert hashlib.sha256(r.content).hexdigest() == info["sha256"]
            assert int(r.headers["content-length"]) == info["size"] == len(r.content)
            assert r.headers["x-checksum-sha256"] == info["sha256"]
            assert r.headers["etag"] == f'"{info["sha256"]}"'
            (tmp_path / name).write_bytes(r.content)

    model = pp.load(tmp_path / "model.safetensors")
    macs = pp.profile(model, torch.zeros(1, 1, 8, 8)).macs
    assert macs == result["macs"]
    assert macs <= result["limits"]["macs"]
    assert macs < result["baseline"]["macs"]
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["job"]["id"] == job["id"]
    assert report["onnx"]["exported"] is True
    assert len(report["trials"]) == len(trials["trials"])


def test_same_idempotency_key_returns_the_same_job(
    server: Server, finished_job: dict[str, Any]
) -> None:
    spec, job = finished_job["spec"], finished_job["job"]
    with server.client() as c:
        r = c.post("/jobs", json=spec, headers={"Idempotency-Key": "lifecycle-1"})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == job["id"]
        # another spec with the same key is a client bug: refused, not silently merged
        other = {**spec, "name": "something else"}
        r = c.post("/jobs", json=other, headers={"Idempotency-Key": "lifecycle-1"})
        assert r.status_code == 409
        assert "Idempotency-Key" in r.json()["detail"]
    # keys are per token: bob's same key is a different job (he lacks alice's upload)
    with server.client("bob-token-00002") as c:
        r = c.post("/jobs", json=spec, headers={"Idempotency-Key": "lifecycle-1"})
        assert r.status_code == 422 and "unknown upload" in r.json()["detail"]


def test_events_logs_and_listing(server: Server, finished_job: dict[str, Any]) -> None:
    job_id = finished_job["job"]["id"]
    with server.client() as c:
        with c.stream("GET", f"/jobs/{job_id}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            body = r.read().decode()
        events = [
            (block.split("event: ")[1].split("\n")[0], json.loads(block.split("data: ")[1]))
            for block in body.strip().split("\n\n")
            if "data: " in block
        ]
        kinds = [k for k, _ in events]
        assert kinds[0] == "status" and kinds[-1] == "end"
        assert "progress" in kinds
        statuses = [d["status"] for k, d in events if k == "status"]
        assert statuses == ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert max(d.get("trials_done", 0) for _, d in events) == 4
        assert events[-1][1]["id"] == job_id

        logs = c.get(f"/jobs/{job_id}/logs")
        assert logs.headers["content-type"].startswith("text/plain")
        assert "STATUS SUCCEEDED" in logs.text and "prunepilot.search" in logs.text

        page = c.get("/jobs", params={"limit": 1}).json()
        assert len(page["items"]) == 1
        seen = [page["items"][0]["id"]]
        while page["next_cursor"]:
            page = c.get("/jobs", params={"limit": 1, "cursor": page["next_cursor"]}).json()
            seen += [j["id"] for j in page["items"]]
        assert job_id in seen and len(seen) == len(set(seen))
        done = c.get("/jobs", params={"status": "SUCCEEDED"}).json()["items"]
        assert all(j["status"] == "SUCCEEDED" for j in done) and job_id in {j["id"] for j in done}
        assert c.get("/jobs", params={"cursor": "not-a-cursor"}).status_code == 422

        metrics = c.get("/metrics").text
        assert 'prunepilot_jobs{status="SUCCEEDED"}' in metrics
        assert "prunepilot_trials_evaluated_total" in metrics
        assert "prunepilot_http_requests_total" in metrics
        assert c.get("/readyz").json()["status"] == "ok"


def test_cancel_stops_a_running_job_within_seconds(server: Server) -> None:
    spec = tiny_spec(
        name="to cancel",
        search={"trials": 400, "score_steps": 20, "uniform_seeds": 0},
        dataset={"limit": 1000},
    )
    with server.client() as c:
        r = c.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        # follow the live event stream; cancel once a trial is done; the stream then ends
        seen: list[dict[str, Any]] = []
        t0 = 0.0
        with c.stream("GET", f"/jobs/{job_id}/events") as events:
            for line in events.iter_lines():
                if not line.startswith("data: "):
                    continue
                seen.append(json.loads(line.removeprefix("data: ")))
                if not t0 and seen[-1].get("trials_done", 0) >= 1:
                    t0 = time.monotonic()
                    r = c.post(f"/jobs/{job_id}/cancel")
                    assert r.json()["status"] in ("CANCELLING", "CANCELLED")
        assert t0, seen
        assert seen[-1]["status"] == "CANCELLED" and seen[-1]["id"] == job_id  # the end event
        assert any(e.get("status") == "CANCELLING" for e in seen)
        job = wait_for(c, job_id, timeout=30)
        elapsed = time.monotonic() - t0
        assert job["status"] == "CANCELLED", job
        assert elapsed < 10, elapsed
        assert job["trials_done"] < 400
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 409
        assert c.get(f"/jobs/{job_id}/artifacts").json() == []
        # deleting removes the job, its study and its files
        assert c.delete(f"/jobs/{job_id}").status_code == 204
        assert c.get(f"/jobs/{job_id}").status_code == 404


def test_queued_jobs_cancel_at_once_and_the_per_token_limit_holds(tmp_path: Path) -> None:
    # no scheduler: jobs stay queued, so the queue-side behaviour is deterministic
    cfg = settings(tmp_path, scheduler=False, max_jobs_per_token=2)
    with Server(cfg) as srv, srv.client() as c:
        ids = [c.post("/jobs", json=tiny_spec()).json()["id"] for _ in range(2)]
        r = c.post("/jobs", json=tiny_spec())
        assert r.status_code == 429 and "limit 2" in r.json()["detail"]
        assert c.delete(f"/jobs/{ids[0]}").status_code == 409
        r = c.post(f"/jobs/{ids[0]}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
        assert c.post(f"/jobs/{ids[0]}/cancel").status_code == 409
        assert c.post("/jobs", json=tiny_spec()).status_code == 201  # a slot is free again
        assert c.delete(f"/jobs/{ids[0]}").status_code == 204
        assert c.get(f"/jobs/{ids[0]}").status_code == 404
        assert c.get("/readyz").json()["scheduler"] == "disabled"
