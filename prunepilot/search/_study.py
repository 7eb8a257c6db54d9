"""The search's Optuna study: storage, sampler, uniform seeds, and resuming its records.

The study lives in real storage (SQLite or PostgreSQL URL, or a journal file), so an
interrupted search resumes where it stopped and ``optuna-dashboard`` can open it. Each
trial's record (config, MACs, latency, score, state) is kept in its user attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import optuna

from prunepilot.schemas import SearchSpec

from ._result import TrialRecord
from ._space import Config

__all__ = ["open_storage", "open_study"]

log = logging.getLogger("prunepilot.search")


def open_storage(storage: str | optuna.storages.BaseStorage | None) -> Any:
    """An Optuna storage from a URL (``sqlite:///...``, ``postgresql://...``), a journal
    file path (``*.log``/``*.journal``), a storage object, or ``None`` (in memory)."""
    if storage is None or not isinstance(storage, str):
        return storage
    if "://" in storage:
        kwargs: dict[str, Any] = {}
        if storage.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        return optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def _sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    s = spec.search
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed)
    return optuna.samplers.TPESampler(
        seed=s.seed, n_startup_trials=max(5, s.uniform_seeds + 2), multivariate=True
    )


def _record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    """A finished trial's record, from the user attributes the driver wrote."""
    a = t.user_attrs
    return TrialRecord(
        number=t.number,
        config={k: float(v) for k, v in a.get("config", t.params).items()},
        state=a.get("state", "complete"),
        macs=int(a.get("macs", 0)),
        params=int(a.get("params", 0)),
        predicted_ms=a.get("predicted_ms"),
        measured_ms=a.get("measured_ms"),
        score=a.get("score"),
        feasible=bool(a.get("feasible", False)),
        reason=a.get("reason"),
        duplicate_of=a.get("duplicate_of"),
        seconds=float(a.get("seconds", 0.0)),
        worker=str(a.get("worker", "")),
        baseline=a.get("baseline"),
        steps=int(a.get("steps", 0)),
    )


def open_study(
    storage: Any,
    study_name: str,
    spec: SearchSpec,
    seeds: Callable[[], list[Config]],
) -> tuple[optuna.Study, dict[int, TrialRecord]]:
    """Create the study, or load it to resume.

    A new study gets the spec as a user attribute and the uniform ``seeds()`` enqueued. A
    resumed one gets every trial that was running when it stopped enqueued again.

    Returns:
        The study and the records of its finished trials, by trial number.
    """
    multi = spec.search.sampler == "nsga2"
    directions: list[Literal["minimize", "maximize"]] = (
        ["maximize", "minimize"] if multi else ["maximize"]
    )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=_sampler(spec),
        directions=directions,
        load_if_exists=True,
    )
    existing = study.get_trials(deepcopy=False)
    if not existing:
        study.set_user_attr("spec", spec.model_dump(mode="json"))
        for config in seeds():
            study.enqueue_trial(config, user_attrs={"seed": True})
    else:
        log.info("resuming study %s with %d trials", study_name, len(existing))
    records: dict[int, TrialRecord] = {}
    for t in existing:
        if t.state == optuna.trial.TrialState.RUNNING:
            # interrupted mid-evaluation: run the same config again
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        elif t.state == optuna.trial.TrialState.COMPLETE:
            records[t.number] = _record(t)
    return study, records
