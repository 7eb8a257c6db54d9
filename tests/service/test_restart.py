"""Restart: stop the server mid-search, start a new one on the same data, the job resumes."""

from __future__ import annotations

from pathlib import Path

from ._server import Server, settings, tiny_spec, wait_for

TRIALS = 10


def test_a_job_survives_a_server_restart_and_keeps_its_trials(
    local_ray: None, tmp_path: Path
) -> None:
    cfg = settings(tmp_path, concurrent_jobs=1)
    spec = tiny_spec(
        name="restart",
        search={"trials": TRIALS, "uniform_seeds": 2, "score_steps": 15},
        dataset={"limit": 600},
    )
    with Server(cfg) as first, first.client() as c:
        r = c.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(c, job_id, lambda j: j["trials_done"] >= 2, timeout=120)
        trials = c.get(f"/jobs/{job_id}/trials").json()["trials"]
        before = {t["number"]: t for t in trials if t["state"] == "complete" and not t["baseline"]}
    assert 2 <= len(before) < TRIALS

    with Server(cfg) as second, second.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
        assert job["status"] in ("QUEUED", "RUNNING")
        job = wait_for(c, job_id, timeout=180)
        assert job["status"] == "SUCCEEDED", job
        after = {t["number"]: t for t in c.get(f"/jobs/{job_id}/trials").json()["trials"]}
        logs = c.get(f"/jobs/{job_id}/logs").text
    complete = [t for t in after.values() if t["state"] == "complete"]
    evaluated = [
        t for t in complete if not (t["reason"] or "").startswith("duplicate") and not t["baseline"]
    ]
    assert len(evaluated) == TRIALS  # earlier trials count: not evaluated again
    for number, t in before.items():
        assert after[number]["state"] == "complete"
        assert after[number]["score"] == t["score"]
        assert after[number]["config"] == t["config"]
    assert "restarted" in logs and "resuming study" in logs
    assert job["result"]["macs"] <= job["result"]["limits"]["macs"]
