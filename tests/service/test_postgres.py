"""The service on a real PostgreSQL server: the job store and the Optuna study live there.

Runs where the PostgreSQL server binaries (``initdb``, ``pg_ctl``) and ``psycopg`` are
installed (Debian's ``postgresql`` package and the ``postgres`` extra); skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from prunepilot.service._scheduler import Scheduler
from prunepilot.service._store import Database
from prunepilot.service._trials import study_name

from ._server import BOB, Server, free_port, settings, tiny_spec, wait_for

pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user there."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *cmd]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(_as_postgres_user(cmd), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr or done.stdout}")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # not under pytest's tmp_path: its parents are private to root, not for the postgres user
    root = Path(tempfile.mkdtemp(prefix="prunepilot-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    _run([initdb, "-D", str(data), "-A", "trust", "-U", "pp"])
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    _run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"])
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=pp dbname=postgres") as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE prunepilot")
        yield f"postgresql+psycopg://pp@127.0.0.1:{port}/prunepilot"
    finally:
        _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_a_job_runs_and_stays_on_postgres(
    local_ray: None, tmp_path: Path, postgres_url: str
) -> None:
    cfg = settings(tmp_path, database_url=postgres_url)
    with Server(cfg) as server, server.client() as c:
        assert c.get("/readyz").status_code == 200  # the database answers
        spec, key = tiny_spec(name="on-postgres"), {"Idempotency-Key": "k1"}
        r = c.post("/jobs", json=spec, headers=key)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        again = c.post("/jobs", json=spec, headers=key)
        assert again.json()["id"] == job_id  # the idempotency record lives in PostgreSQL too
        job = wait_for(c, job_id, timeout=180)
        assert job["status"] == "SUCCEEDED", job
        trials = c.get(f"/jobs/{job_id}/trials").json()["trials"]
        assert len([t for t in trials if t["state"] == "complete"]) >= 4
        assert c.get(f"/jobs/{job_id}/logs").text
    # the study is in the same database, where optuna-dashboard can open it
    study = optuna.load_study(study_name=study_name(job_id), storage=postgres_url)
    assert len(study.trials) >= 4
    # a new server on the same database sees the finished job and its artifacts
    with Server(cfg) as server, server.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
        assert job["status"] == "SUCCEEDED" and job["result"]["macs"] > 0
        names = [a["name"] for a in c.get(f"/jobs/{job_id}/artifacts").json()]
        assert names
        listed = [j["id"] for j in c.get("/jobs").json()["items"]]
        assert job_id in listed


def test_upload_quota_list_delete_and_expiry_on_postgres(
    tmp_path: Path, postgres_url: str, weights_path: Path
) -> None:
    cfg = settings(
        tmp_path,
        database_url=postgres_url,
        scheduler=False,
        upload_quota_count=4,
        upload_ttl_s=1e-3,
    )
    with Server(cfg) as server, server.client(BOB) as c:
        ids = [c.post("/uploads", files={"file": ("f.bin", b"x")}).json()["id"] for _ in range(3)]
        answers: list[int] = []
        start = threading.Barrier(4)

        def send() -> None:
            with server.client(BOB) as mine:
                start.wait()
                answers.append(mine.post("/uploads", files={"file": ("r.bin", b"r")}).status_code)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == [201, 429, 429, 429]  # the advisory lock serialises the count
        listed, cursor = [], None
        while True:
            page = c.get("/uploads", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            listed += [u["id"] for u in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert len(listed) == 4 and listed[1:] == ids[::-1]

        assert c.delete(f"/uploads/{ids[0]}").status_code == 204
        weights = c.post("/uploads", files={"file": ("w", weights_path.read_bytes())}).json()["id"]
        job = c.post("/jobs", json=tiny_spec(model={"weights": weights})).json()
        assert c.delete(f"/uploads/{weights}").status_code == 409
        assert Scheduler(cfg, Database(postgres_url)).expire_uploads() == 3
        assert [u["id"] for u in c.get("/uploads").json()["items"]] == [weights]
        assert sorted(p.name for p in cfg.uploads_path.iterdir()) == [weights]
        assert c.post(f"/jobs/{job['id']}/cancel").json()["status"] == "CANCELLED"


def test_a_database_of_the_previous_release_is_upgraded_on_postgres(postgres_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    from prunepilot.schemas import JobSpec
    from prunepilot.service._rows import Base

    from .test_migrations import head, schema_drift, version

    url = make_url(postgres_url)
    server = f"host={url.host} port={url.port} user={url.username} dbname=postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("CREATE DATABASE previous_release")
    db = Database(url.set(database="previous_release").render_as_string(hide_password=False))
    Base.metadata.create_all(db.engine)  # how the release before migrations made its tables
    db.add_job("c" * 32, "alice", JobSpec.model_validate(tiny_spec(name="old")))
    db.migrate()
    assert version(db.engine) == [head()] and schema_drift(db.engine) == []
    row = db.get_job("c" * 32)
    assert row is not None and row.name == "old"
    db.dispose()
