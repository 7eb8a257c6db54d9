"""The search's Optuna study: storage, sampler, seeds, and its trials' records.

The study lives in real storage (SQLite or PostgreSQL URL, or a journal file), so an
interrupted search resumes where it stopped and ``optuna-dashboard`` can open it. Each
trial's `TrialRecord` (config, MACs, latency, score, state) is kept in its user attributes:
`write_record` writes it, `read_trials` reads every trial back (while the search runs,
too), `delete_study` removes the study.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import optuna

from prunepilot.schemas import SearchSpec

from ._result import TrialRecord
from ._space import Config

__all__ = ["delete_study", "open_storage", "open_study", "read_trials", "write_record"]

_INTERRUPTED = "interrupted (evaluated again as a new trial)"

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


def write_record(trial: optuna.trial.Trial | optuna.trial.FrozenTrial, rec: TrialRecord) -> None:
    """Keep ``rec`` in the trial's user attributes (all but its number, Optuna's own)."""
    for key, value in _attrs(rec).items():
        trial.set_user_attr(key, value)


def _attrs(rec: TrialRecord) -> dict[str, Any]:
    return {k: v for k, v in rec.to_dict().items() if k != "number"}


def _decode(number: int, attrs: Mapping[str, Any], params: Mapping[str, Any]) -> TrialRecord:
    """A trial's record from its user attributes (its sampled params: an older writer)."""
    return TrialRecord.from_dict({**attrs, "number": number, "config": attrs.get("config", params)})


def _record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    """A finished trial's record, from the user attributes the driver wrote."""
    return _decode(t.number, t.user_attrs, t.params)


def read_trials(storage: Any, study_name: str) -> list[TrialRecord]:
    """The records of a study's trials, running ones included (empty before it exists).

    The driver writes a trial's attributes one by one and then tells the study, so they
    are whole only once the trial is finished: a running trial is read as ``running``,
    and one that never finished (interrupted) as ``failed``; queued ones are left out.

    Args:
        storage: an Optuna storage (see `open_storage`).
        study_name: the study's name.
    """
    storage = open_storage(storage)
    try:
        sid = storage.get_study_id_from_name(study_name)
    except KeyError:
        return []
    state = optuna.trial.TrialState
    out: list[TrialRecord] = []
    for t in storage.get_all_trials(sid, deepcopy=False):
        if t.state == state.WAITING:
            continue
        attrs: dict[str, Any] = dict(t.user_attrs)
        if t.state == state.RUNNING:
            attrs = {"state": "running"}
        elif t.state != state.COMPLETE and attrs.get("state") != "failed":
            attrs = {"state": "failed", "reason": _INTERRUPTED}
        out.append(_decode(t.number, attrs, t.params))
    return out


def delete_study(storage: Any, study_name: str) -> bool:
    """Delete a study and its trials; ``False`` when there is none of that name."""
    try:
        optuna.delete_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return False
    return True


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
