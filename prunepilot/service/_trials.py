"""A job's study and trials: its name, its trials for the API, deleting it.

The search owns its study (`prunepilot.search.read_trials`, `pareto_front`,
`delete_study`); this module names a job's study and maps each `TrialRecord` to the wire
model `TrialInfo` once, cleaned for users: no traceback frames, no non-finite numbers,
bounded sizes. A finished job's trials come from its ``report.json``, a running job's
live from the study in the shared database, without asking the runner.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from prunepilot.schemas import TrialInfo, TrialsPage
from prunepilot.search import TrialRecord, delete_study, pareto_front, read_trials

from ._redact import clean

__all__ = ["delete", "from_report", "from_study", "study_name", "trial_info"]

_BASELINES: tuple[_BaselineName, ...] = ("uniform", "global", "lamp")
_BaselineName = Literal["uniform", "global", "lamp"]
_MAX_RUNGS = 8
_MAX_WORKER = 100


def study_name(job_id: str) -> str:
    """The Optuna study of a job."""
    return f"job-{job_id}"


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _baseline(name: str | None) -> _BaselineName | None:
    return next((b for b in _BASELINES if b == name), None)


def trial_info(rec: TrialRecord) -> TrialInfo:
    """What users see of a trial (``reason`` and ``error`` cleaned of traceback frames)."""
    reason = clean(rec.reason) if rec.reason else None
    if rec.duplicate_of is not None:
        reason = f"duplicate of trial {rec.duplicate_of}: its score is reused"
    return TrialInfo(
        number=rec.number,
        config=dict(rec.config),
        state=rec.state,
        macs=rec.macs,
        params=rec.params,
        predicted_ms=_finite(rec.predicted_ms),
        measured_ms=_finite(rec.measured_ms),
        score=_finite(rec.score),
        feasible=rec.feasible,
        reason=reason,
        error=(clean(rec.error) or None) if rec.error else None,
        baseline=_baseline(rec.baseline),
        rungs=[f for f in (_finite(r) for r in rec.rungs[:_MAX_RUNGS]) if f is not None],
        steps=rec.steps,
        worker=rec.worker[:_MAX_WORKER],
    )


def from_report(path: Path) -> TrialsPage | None:
    """The trials and Pareto front recorded in a finished job's ``report.json``."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    trials = [trial_info(TrialRecord.from_dict(t)) for t in report.get("trials", [])]
    return TrialsPage(trials=trials, pareto=[int(n) for n in report.get("pareto", [])])


def from_study(storage: Any, study: str) -> TrialsPage:
    """The trials of a (possibly running) study; empty before the study exists."""
    records = read_trials(storage, study)
    return TrialsPage(
        trials=[trial_info(r) for r in records],
        pareto=[r.number for r in pareto_front(records)],
    )


def delete(storage: Any, job_id: str) -> None:
    """Delete a job's study (nothing to do when the job never reached the search)."""
    delete_study(storage, study_name(job_id))
