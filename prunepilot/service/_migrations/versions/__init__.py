"""Alembic revisions of the job store, oldest first (``rNNNN_what.py``)."""
