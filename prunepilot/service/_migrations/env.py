"""Alembic's entry point: migrate on the connection `upgrade` passes (online mode only)."""

from __future__ import annotations

from alembic import context

from prunepilot.service._migrations import VERSION_TABLE
from prunepilot.service._rows import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
