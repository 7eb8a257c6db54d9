"""Bearer-token auth: no token or a wrong one is 401; a token sees only its own things."""

from __future__ import annotations

from typing import Any

from ._server import BOB, Server


def test_requests_without_a_valid_token_are_refused(server: Server) -> None:
    for token in (None, "wrong-token-123"):
        with server.client(token) as c:
            for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/uploads/abc")):
                r = c.request(method, path, json={} if method == "POST" else None)
                assert r.status_code == 401, (token, path, r.text)
                assert "token" in r.json()["detail"]
                assert r.headers["www-authenticate"] == "Bearer"
    with server.client(None) as c:  # probes need no token
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_a_token_sees_only_its_own_jobs_uploads_and_artifacts(
    server: Server, finished_job: dict[str, Any]
) -> None:
    job_id = finished_job["job"]["id"]
    upload_id = finished_job["upload"]["id"]
    with server.client() as alice:
        assert alice.get(f"/jobs/{job_id}").status_code == 200
        assert alice.get(f"/uploads/{upload_id}").status_code == 200
    with server.client(BOB) as bob:
        for path in (
            f"/jobs/{job_id}",
            f"/jobs/{job_id}/trials",
            f"/jobs/{job_id}/logs",
            f"/jobs/{job_id}/events",
            f"/jobs/{job_id}/artifacts",
            f"/jobs/{job_id}/artifacts/model.safetensors",
            f"/uploads/{upload_id}",
        ):
            r = bob.get(path)
            assert r.status_code == 404, (path, r.text)
            assert "no " in r.json()["detail"]
        assert bob.post(f"/jobs/{job_id}/cancel").status_code == 404
        assert bob.delete(f"/jobs/{job_id}").status_code == 404
        assert job_id not in {j["id"] for j in bob.get("/jobs").json()["items"]}
        # bob cannot use alice's upload in a spec either
        spec = dict(finished_job["spec"])
        r = bob.post("/jobs", json=spec)
        assert r.status_code == 422 and upload_id in r.json()["detail"]
