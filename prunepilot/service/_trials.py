"""A job's trials, from its report when finished, else live from its Optuna study.

The runner stores each trial's numbers (MACs, parameters, latency, score, feasibility) as
Optuna user attributes when it tells the study, so the API reads a running job's trials
straight from the shared database without asking the runner.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from prunepilot.schemas import TrialInfo, TrialsPage

from ._redact import clean

__all__ = ["from_report", "from_study", "pareto_numbers"]

_BASELINES = ("uniform", "global", "lamp")


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _trial(d: dict[str, Any]) -> TrialInfo:
    reason = clean(str(d["reason"])) if d.get("reason") else None
    if d.get("duplicate_of") is not None:
        reason = f"duplicate of trial {d['duplicate_of']}: its score is reused"
    return TrialInfo(
        number=int(d["number"]),
        config={str(k): float(v) for k, v in (d.get("config") or {}).items()},
        state=str(d.get("state", "complete")),
        macs=int(d.get("macs") or 0),
        params=int(d.get("params") or 0),
        predicted_ms=_num(d.get("predicted_ms")),
        measured_ms=_num(d.get("measured_ms")),
        score=_num(d.get("score")),
        feasible=bool(d.get("feasible", False)),
        reason=reason,
        baseline=d["baseline"] if d.get("baseline") in _BASELINES else None,
        rungs=[f for f in (_num(r) for r in (d.get("rungs") or [])[:8]) if f is not None],
        steps=int(d.get("steps") or 0),
        worker=str(d.get("worker") or "")[:100],
    )


def from_report(path: Path) -> TrialsPage | None:
    """The trials and Pareto front recorded in a finished job's ``report.json``."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    trials = [_trial(t) for t in report.get("trials", [])]
    return TrialsPage(trials=trials, pareto=[int(n) for n in report.get("pareto", [])])


def pareto_numbers(trials: list[TrialInfo]) -> list[int]:
    """Numbers of the complete feasible trials no other beats on both score and cost."""
    ok = [t for t in trials if t.state == "complete" and t.feasible and t.score is not None]

    def cost(t: TrialInfo) -> float:
        c = t.measured_ms if t.measured_ms is not None else t.predicted_ms
        return float(c) if c is not None else float(t.macs)

    front = [
        t
        for t in ok
        if not any(
            (o.score or 0) >= (t.score or 0)
            and cost(o) <= cost(t)
            and ((o.score or 0) > (t.score or 0) or cost(o) < cost(t))
            for o in ok
        )
    ]
    return [t.number for t in sorted(front, key=cost)]


def from_study(storage: Any, study: str) -> TrialsPage:
    """The trials of a (possibly running) study; empty before the study exists."""
    import optuna

    try:
        sid = storage.get_study_id_from_name(study)
    except KeyError:
        return TrialsPage(trials=[])
    out: list[TrialInfo] = []
    for t in storage.get_all_trials(sid, deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        # The runner writes a trial's attributes one by one and then tells the study, so
        # they are whole only once the trial is finished: a running trial (or one that was
        # interrupted while being told) may hold a state without its score.
        a = dict(t.user_attrs)
        if t.state == optuna.trial.TrialState.RUNNING:
            a = {"state": "running"}
        elif t.state != optuna.trial.TrialState.COMPLETE and a.get("state") != "failed":
            a = {"state": "failed", "reason": "interrupted (evaluated again as a new trial)"}
        a["number"] = t.number
        a.setdefault("config", t.params)
        out.append(_trial(a))
    return TrialsPage(trials=out, pareto=pareto_numbers(out))
