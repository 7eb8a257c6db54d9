"""Schema migrations: the baseline is the schema of the rows, and an old database upgrades.

``data/prev_release.sql`` is a job store written by the release before migrations
(``create_all``, no version table); the server must stamp it, upgrade it and serve its rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

import prunepilot.service._migrations as migrations
from prunepilot.service._rows import Base
from prunepilot.service._store import Database

from ._server import Server, settings

PREVIOUS = Path(__file__).parent / "data" / "prev_release.sql"
DONE, QUEUED = "a" * 32, "b" * 32


def head() -> str:
    """The newest revision shipped in the package."""
    script = ScriptDirectory(str(Path(migrations.__file__).parent))
    found = script.get_current_head()
    assert found is not None
    return found


def schema_drift(engine: Engine) -> list[object]:
    """What differs between the database's tables and the ORM rows (ours only)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_name": lambda name, kind, _parent: (
                    kind != "table"
                    or ((name or "").startswith("pp_") and name != migrations.VERSION_TABLE)
                )
            },
        )
        return list(compare_metadata(ctx, Base.metadata))


def version(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT version_num FROM {migrations.VERSION_TABLE}"))
        return [r[0] for r in rows]


def test_an_empty_database_migrates_to_the_rows_schema(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'new.db'}")
    db.migrate()
    db.migrate()  # at head: nothing to do
    assert version(db.engine) == [head()]
    assert schema_drift(db.engine) == []
    with db.engine.connect() as conn:  # Optuna's own version table is left to Optuna
        tables = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
        assert "alembic_version" not in {r[0] for r in tables}
    db.dispose()


def test_the_baseline_is_what_the_previous_release_created(tmp_path: Path) -> None:
    old, new = sqlite3.connect(tmp_path / "old.db"), tmp_path / "new.db"
    old.executescript(PREVIOUS.read_text())
    Database(f"sqlite:///{new}").migrate()
    query = "SELECT name, sql FROM sqlite_master WHERE tbl_name LIKE 'pp_%' AND tbl_name != ?"
    args = (migrations.VERSION_TABLE,)
    made = {r[0]: " ".join(str(r[1]).split()) for r in sqlite3.connect(new).execute(query, args)}
    before = {r[0]: " ".join(str(r[1]).split()) for r in old.execute(query, args)}
    assert made == before and len(before) == 14  # 5 tables, 6 indexes, 3 key indexes


def test_a_database_of_the_previous_release_is_upgraded_and_served(tmp_path: Path) -> None:
    path = tmp_path / "prev.db"
    conn = sqlite3.connect(path)
    conn.executescript(PREVIOUS.read_text())
    conn.close()
    cfg = settings(tmp_path / "data", database_url=f"sqlite:///{path}", scheduler=False)
    with Server(cfg) as server, server.client() as c:
        listed = {j["id"]: j for j in c.get("/jobs").json()["items"]}
        assert set(listed) == {DONE, QUEUED}
        job = c.get(f"/jobs/{DONE}").json()
        assert job["status"] == "SUCCEEDED" and job["name"] == "old-done"
        assert job["trials_done"] == 4 and job["best_score"] == 0.875
        assert job["result"] == {"note": "from the previous release"}
        queued = c.get(f"/jobs/{QUEUED}").json()
        assert queued["status"] == "QUEUED"
        # revision 0002: the old spec in this release's names, with the same meaning
        assert queued["spec"]["constraints"]["macs"] == "60%"
        assert queued["spec"]["constraints"]["flops"] is None
        assert queued["spec"]["space"]["min_keep"] == 0.25
        assert queued["spec"]["model"]["source"] == "prunepilot.demo.models:digits_cnn"
        assert [a["name"] for a in c.get(f"/jobs/{DONE}/artifacts").json()] == ["report.json"]
        uploads = c.get("/uploads").json()["items"]
        assert sorted(u["kind"] for u in uploads) == ["archive", "safetensors"]
        assert "STATUS RUNNING" in c.get(f"/jobs/{DONE}/logs").text  # its old events
        # the old rows take new writes: cancel the queued job
        assert c.post(f"/jobs/{QUEUED}/cancel").status_code in (200, 202)
        assert c.get(f"/jobs/{QUEUED}").json()["status"] == "CANCELLED"
    db = Database(cfg.db_url)
    assert version(db.engine) == [head()]
    assert schema_drift(db.engine) == []
    with db.engine.connect() as conn:
        raw = conn.execute(text("SELECT spec FROM pp_jobs WHERE id = :id"), {"id": QUEUED})
        stored = raw.scalar_one()
    assert '"macs":"60%"' in stored and "min_ratio" not in stored and "service.zoo" not in stored
    db.dispose()


def test_the_spec_names_revision_goes_both_ways(tmp_path: Path) -> None:
    # 0002 renames stored fields; its downgrade gives the previous release its names back
    from alembic import command

    path = tmp_path / "prev.db"
    conn = sqlite3.connect(path)
    conn.executescript(PREVIOUS.read_text())
    conn.close()
    db = Database(f"sqlite:///{path}")
    migrations.upgrade(db.engine)
    assert version(db.engine) == [head()]
    with db.engine.begin() as c:
        command.downgrade(migrations._config(c), "0001")
        old = c.execute(text("SELECT spec FROM pp_jobs WHERE id = :id"), {"id": QUEUED})
        spec = old.scalar_one()
    assert '"flops":"60%"' in spec and '"min_ratio":0.25' in spec
    assert "prunepilot.service.zoo:digits_cnn" in spec
    db.dispose()
