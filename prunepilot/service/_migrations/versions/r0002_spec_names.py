"""Stored specs and results in this release's names: MACs, keep ratios, the demo's models.

The previous release stored ``constraints.flops`` meaning multiply-accumulates (now
``macs``; ``flops`` counts 2 per multiply-add), ``space.min_ratio``/``max_ratio`` (now
``min_keep``/``max_keep``), zoo models as ``prunepilot.service.zoo:NAME`` (now
``prunepilot.demo.models:NAME``) and a result's MACs limit as ``limits.flops``. Without this
revision a queued job of that release would run with half its MACs budget once resubmitted
with absolute numbers, and one naming the zoo would no longer resolve.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_ZOO, _NEW_ZOO = "prunepilot.service.zoo:", "prunepilot.demo.models:"
_SPACE = (("min_ratio", "min_keep"), ("max_ratio", "max_keep"))


def _rename(d: Any, old: str, new: str) -> None:
    if isinstance(d, dict) and old in d and new not in d:
        d[new] = d.pop(old)


def _source(d: Any, key: str, old: str, new: str) -> None:
    if isinstance(d, dict) and isinstance(d.get(key), str) and d[key].startswith(old):
        d[key] = new + d[key][len(old) :]


def _spec(spec: Any, forward: bool) -> None:
    if not isinstance(spec, dict):
        return
    c, s = spec.get("constraints"), spec.get("space")
    if forward:
        _rename(c, "flops", "macs")
        for old, new in _SPACE:
            _rename(s, old, new)
        _source(spec.get("model"), "source", _OLD_ZOO, _NEW_ZOO)
    else:
        _rename(c, "macs", "flops")
        for old, new in _SPACE:
            _rename(s, new, old)
        _source(spec.get("model"), "source", _NEW_ZOO, _OLD_ZOO)


def _result(result: Any, forward: bool) -> None:
    if not isinstance(result, dict):
        return
    old, new = ("flops", "macs") if forward else ("macs", "flops")
    _rename(result.get("limits"), old, new)
    zoo = (_OLD_ZOO, _NEW_ZOO) if forward else (_NEW_ZOO, _OLD_ZOO)
    _source(result.get("checkpoint"), "source", *zoo)


def _rewrite(forward: bool) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT seq, spec, result FROM pp_jobs")).all()
    for seq, spec_text, result_text in rows:
        new: dict[str, str | None] = {}
        for column, text, fix in (("spec", spec_text, _spec), ("result", result_text, _result)):
            if text is None:
                continue
            try:
                value = json.loads(text)
            except ValueError:  # unreadable before: left as it is, shown as unreadable
                continue
            before = json.dumps(value, sort_keys=True)
            fix(value, forward)
            if json.dumps(value, sort_keys=True) != before:
                new[column] = json.dumps(value, separators=(",", ":"))
        for column, dumped in new.items():
            conn.execute(
                sa.text(f"UPDATE pp_jobs SET {column} = :value WHERE seq = :seq"),
                {"value": dumped, "seq": seq},
            )


def upgrade() -> None:
    """Rename the stored specs' and results' fields to this release's names."""
    _rewrite(forward=True)


def downgrade() -> None:
    """Back to the previous release's names."""
    _rewrite(forward=False)
