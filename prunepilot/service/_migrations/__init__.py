"""Schema migrations of the job store (Alembic), applied at start-up by `upgrade`.

The revisions live in ``versions/``, shipped inside the package; Alembic is configured here
in code, so no ``alembic.ini`` is needed. Revision ``0001`` is the schema as the release
before migrations created it (``create_all``); a database made by that release (our tables,
no version table) is stamped at ``0001`` and then upgraded like any other.

Our version table is ``pp_alembic_version``: Optuna keeps its own schema version in
``alembic_version`` of the same database.

To change the schema: edit `prunepilot.service._rows`, add ``versions/rNNNN_what.py`` with
``revision = "NNNN"`` and ``down_revision`` the previous one (``alembic revision
--autogenerate`` with this directory as ``script_location`` drafts it), and run
``tests/service/test_migrations.py``, which compares the migrated schema with the rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

__all__ = ["BASELINE", "VERSION_TABLE", "upgrade"]

log = logging.getLogger("prunepilot.service")

BASELINE = "0001"
VERSION_TABLE = "pp_alembic_version"
_LEGACY_MARK = "pp_jobs"  # a table every database of the release before migrations has
_PG_LOCK = 0x70705F6D6967  # advisory lock key ("pp_mig"): one migrating process at a time


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision, in one transaction.

    Replicas starting together wait for each other: SQLite begins the transaction
    ``IMMEDIATE`` (the store's ``pp_immediate`` option), PostgreSQL takes an advisory lock.

    Args:
        engine: the store's engine.
    """
    with engine.execution_options(pp_immediate=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        tables = set(inspect(conn).get_table_names())
        cfg = _config(conn)
        if VERSION_TABLE not in tables and _LEGACY_MARK in tables:
            log.info("database made before migrations: stamping it at revision %s", BASELINE)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
