"""Uploads are not forever: list, delete, per-token quotas and expiry, against a real server.

Every test talks to the service as its own process (`ServerProcess`) and checks the upload
directory on disk: a refused or deleted upload leaves no file behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save

from ._process import ServerProcess
from ._server import ALICE, BOB, tiny_spec

QUOTA_COUNT = 6
QUOTA_BYTES = 200_000
MAX_UPLOAD = 150_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with small quotas; jobs stay queued (no scheduler, no expiry)."""
    env = {
        "PRUNEPILOT_UPLOAD_QUOTA_COUNT": str(QUOTA_COUNT),
        "PRUNEPILOT_UPLOAD_QUOTA_BYTES": str(QUOTA_BYTES),
        "PRUNEPILOT_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    }
    with ServerProcess(tmp_path_factory.mktemp("upload-lifecycle"), env) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no jobs and no uploads for alice and bob."""
    yield
    if "srv" not in request.fixturenames:
        return
    server: ServerProcess = request.getfixturevalue("srv")
    for token in (ALICE, BOB):
        with server.client(token) as c:
            for job in c.get("/jobs", params={"limit": 200}).json()["items"]:
                if job["status"] == "QUEUED":
                    c.post(f"/jobs/{job['id']}/cancel")
                c.delete(f"/jobs/{job['id']}")
            for item in c.get("/uploads", params={"limit": 200}).json()["items"]:
                assert c.delete(f"/uploads/{item['id']}").status_code == 204


def _files(server: ServerProcess) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "uploads").iterdir())


def _upload(c: httpx.Client, data: bytes, name: str = "f.bin") -> httpx.Response:
    return c.post("/uploads", files={"file": (name, data)})


def _dataset() -> bytes:
    """A safetensors dataset of 20 blank 8x8 digits."""
    return save({"inputs": np.zeros((20, 1, 8, 8), np.float32), "labels": np.zeros(20, np.int64)})


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- list, delete, owners ------------------------------------------------------------------


def test_list_is_paginated_newest_first_and_per_owner(srv: ServerProcess) -> None:
    with srv.client() as alice, srv.client(BOB) as bob:
        made = [_upload(alice, bytes([i]) * 10, f"f{i}.bin").json()["id"] for i in range(5)]
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = alice.get("/uploads", params=params)
            assert r.status_code == 200, r.text
            seen += r.json()["items"]
            pages += 1
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert [u["id"] for u in seen] == made[::-1]
        first = seen[-1]
        assert first["filename"] == "f0.bin" and first["size"] == 10
        assert first["live_jobs"] == [] and first["expires_at"] is not None

        assert bob.get("/uploads").json() == {"items": [], "next_cursor": None}
        r = alice.get("/uploads", params={"cursor": "not-a-cursor"})
        assert r.status_code == 422 and "invalid cursor" in r.json()["detail"]
        assert alice.get("/uploads", params={"limit": 201}).status_code == 422


def test_delete_removes_file_and_record_another_owner_gets_404(srv: ServerProcess) -> None:
    with srv.client() as alice, srv.client(BOB) as bob:
        upload_id = _upload(alice, b"weights").json()["id"]
        assert upload_id in _files(srv)
        for r in (bob.delete(f"/uploads/{upload_id}"), bob.get(f"/uploads/{upload_id}")):
            assert r.status_code == 404
            assert r.json()["detail"] == f"no upload {upload_id!r} for this token"
        unknown = "0" * 24
        r = bob.delete(f"/uploads/{unknown}")
        assert r.status_code == 404
        assert r.json()["detail"] == f"no upload {unknown!r} for this token"

        assert alice.delete(f"/uploads/{upload_id}").status_code == 204
        assert upload_id not in _files(srv)
        assert alice.get(f"/uploads/{upload_id}").status_code == 404
        assert alice.delete(f"/uploads/{upload_id}").status_code == 404


def test_a_live_job_keeps_its_uploads(srv: ServerProcess, weights_path: Path) -> None:
    with srv.client() as alice:
        weights = _upload(alice, weights_path.read_bytes(), "w.safetensors").json()["id"]
        data = _upload(alice, _dataset(), "d.safetensors").json()["id"]
        spec = tiny_spec(model={"weights": weights}, dataset={"source": f"upload:{data}"})
        r = alice.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert r.json()["status"] == "QUEUED"  # no scheduler: it stays queued

        for upload_id in (weights, data):
            info = alice.get(f"/uploads/{upload_id}").json()
            assert info["live_jobs"] == [job_id] and info["expires_at"] is None
            r = alice.delete(f"/uploads/{upload_id}")
            assert r.status_code == 409
            assert job_id in r.json()["detail"] and "cancel" in r.json()["detail"]
        assert {weights, data} <= set(_files(srv))

        assert alice.post(f"/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"
        info = alice.get(f"/uploads/{weights}").json()
        assert info["live_jobs"] == [] and info["expires_at"] is None  # a job still names it
        assert alice.delete(f"/uploads/{weights}").status_code == 204
        assert alice.delete(f"/jobs/{job_id}").status_code == 204
        assert alice.get(f"/uploads/{data}").json()["expires_at"] is not None
        assert alice.delete(f"/uploads/{data}").status_code == 204
        assert _files(srv) == []


# -- quotas --------------------------------------------------------------------------------


def test_byte_quota_refuses_with_413_and_keeps_nothing(srv: ServerProcess) -> None:
    with srv.client() as alice, srv.client(BOB) as bob:
        kept = _upload(alice, b"a" * 120_000).json()["id"]
        r = _upload(alice, b"b" * 100_000)
        assert r.status_code == 413
        detail = r.json()["detail"]
        assert f"{QUOTA_BYTES:,} bytes" in detail and "120,000 bytes" in detail
        assert "DELETE /uploads/{id}" in detail
        r = alice.post("/uploads", content=b"c" * 100_000, params={"filename": "raw.bin"})
        assert r.status_code == 413 and "quota" in r.json()["detail"]
        assert _files(srv) == [kept]
        assert [u["id"] for u in alice.get("/uploads").json()["items"]] == [kept]
        assert _upload(bob, b"b" * 100_000).status_code == 201  # quotas are per token

        assert alice.delete(f"/uploads/{kept}").status_code == 204
        assert _upload(alice, b"b" * 100_000).status_code == 201


def _race(srv: ServerProcess, data: bytes, n: int = 4) -> list[int]:
    """Upload ``data`` as alice from ``n`` threads at once; the statuses."""
    answers: list[int] = []
    start = threading.Barrier(n)

    def send() -> None:
        with srv.client() as c:
            start.wait()
            answers.append(_upload(c, data).status_code)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_racing_uploads_cannot_pass_the_quotas_together(srv: ServerProcess) -> None:
    answers = _race(srv, b"r" * 120_000)  # one fits the byte quota, two do not
    assert answers.count(201) <= 1 and set(answers) <= {201, 413}, answers
    with srv.client() as alice:
        items = alice.get("/uploads").json()["items"]
        assert len(items) == answers.count(201)
        assert _files(srv) == sorted(u["id"] for u in items)
        for u in items:
            assert alice.delete(f"/uploads/{u['id']}").status_code == 204
        for _ in range(QUOTA_COUNT - 1):
            assert _upload(alice, b"x").status_code == 201
    answers = _race(srv, b"s" * 20_000)  # one more fits the count quota
    assert answers.count(201) <= 1 and set(answers) <= {201, 429}, answers
    with srv.client() as alice:
        items = alice.get("/uploads", params={"limit": 200}).json()["items"]
    assert len(items) == QUOTA_COUNT - 1 + answers.count(201)
    assert _files(srv) == sorted(u["id"] for u in items)


def test_count_quota_refuses_with_429_and_keeps_nothing(srv: ServerProcess) -> None:
    with srv.client() as alice:
        ids = [_upload(alice, b"x").json()["id"] for _ in range(QUOTA_COUNT)]
        r = _upload(alice, b"y")
        assert r.status_code == 429
        detail = r.json()["detail"]
        assert f"has {QUOTA_COUNT} uploads" in detail and f"quota is {QUOTA_COUNT}" in detail
        assert "DELETE /uploads/{id}" in detail
        assert _files(srv) == sorted(ids)
        assert alice.delete(f"/uploads/{ids[0]}").status_code == 204
        assert _upload(alice, b"y").status_code == 201


def test_over_the_size_limit_keeps_nothing(srv: ServerProcess) -> None:
    with srv.client(BOB) as bob:
        r = _upload(bob, b"z" * (MAX_UPLOAD + 1))
        assert r.status_code == 413 and "server's limit" in r.json()["detail"]
        assert bob.get("/uploads").json()["items"] == []
    assert _files(srv) == []


# -- expiry --------------------------------------------------------------------------------


def test_unused_uploads_expire_used_ones_stay(tmp_path: Path, weights_path: Path) -> None:
    data_dir = tmp_path / "expiry"
    with ServerProcess(data_dir) as first, first.client() as alice:
        unused = _upload(alice, b"unused").json()["id"]
        used = _upload(alice, weights_path.read_bytes(), "w.safetensors").json()["id"]
        r = alice.post("/jobs", json=tiny_spec(model={"weights": used}))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert alice.post(f"/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"

    env = {"PRUNEPILOT_UPLOAD_TTL_S": "1", "PRUNEPILOT_UPLOAD_EXPIRY_INTERVAL_S": "0.2"}
    with ServerProcess(data_dir, env, scheduler=True) as second, second.client() as alice:

        def gone(upload_id: str) -> Callable[[], bool]:
            return lambda: alice.get(f"/uploads/{upload_id}").status_code == 404

        _until(gone(unused), "the unused upload to expire")  # at start or the next round
        late = _upload(alice, b"late").json()["id"]
        _until(gone(late), "an upload made after the start to expire")
        r = alice.get(f"/uploads/{used}")
        assert r.status_code == 200 and r.json()["expires_at"] is None  # the job names it
        assert used in _files(second)

        assert alice.delete(f"/jobs/{job_id}").status_code == 204
        _until(gone(used), "the upload of the deleted job to expire")
        assert _files(second) == []
        assert second.alive()


def test_a_job_is_not_queued_when_its_upload_went_after_the_submit_check(
    tmp_path: Path,
) -> None:
    # the window between validate_job and add_job: a DELETE or an expiry takes the upload
    from prunepilot.schemas import JobSpec
    from prunepilot.service._store import Database
    from prunepilot.service.errors import UploadInUse, UploadMissing

    from ._rows import upload_row

    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    db.add_upload_within(upload_row("aaaaaaaa0001", "safetensors"), 10, 1 << 20)
    db.add_upload_within(upload_row("aaaaaaaa0002", "safetensors"), 10, 1 << 20)
    spec = JobSpec.model_validate(tiny_spec(model={"weights": "aaaaaaaa0001"}))
    assert db.delete_upload("aaaaaaaa0001", "t") is not None
    with pytest.raises(UploadMissing) as e:
        db.add_job("job1", "t", spec)
    assert e.value.upload_ids == ["aaaaaaaa0001"]
    assert db.get_job("job1") is None
    ok = JobSpec.model_validate(tiny_spec(model={"weights": "aaaaaaaa0002"}))
    db.add_job("job2", "t", ok)
    with pytest.raises(UploadInUse):  # and the queued job keeps it from now on
        db.delete_upload("aaaaaaaa0002", "t")
