"""Live trials read from the Optuna study: only finished trials show their numbers."""

from __future__ import annotations

import optuna

from prunepilot.service import _trials

_DIST: dict[str, optuna.distributions.BaseDistribution] = {
    "a": optuna.distributions.FloatDistribution(0.0, 1.0)
}


def _study() -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    return optuna.create_study(storage=storage, study_name="s"), storage


def test_a_trial_being_told_shows_as_running_not_as_complete_without_score() -> None:
    study, storage = _study()
    trial = study.ask(_DIST)
    trial.set_user_attr("state", "complete")  # the runner has written only part of it
    trial.set_user_attr("macs", 10)
    [t] = _trials.from_study(storage, "s").trials
    assert t.state == "running"
    assert t.score is None and t.macs == 0
    assert set(t.config) == {"a"}


def test_an_interrupted_partial_trial_shows_as_failed_and_a_told_one_as_complete() -> None:
    study, storage = _study()
    cut = study.ask(_DIST)
    cut.set_user_attr("state", "complete")
    study.tell(cut, state=optuna.trial.TrialState.FAIL)  # what resuming does to it
    done = study.ask(_DIST)
    for k, v in {"state": "complete", "score": 0.5, "macs": 7, "feasible": True}.items():
        done.set_user_attr(k, v)
    study.tell(done, 0.5)
    failed = study.ask(_DIST)
    failed.set_user_attr("state", "failed")
    failed.set_user_attr("reason", "pruning failed: boom")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    page = _trials.from_study(storage, "s")
    by = {t.number: t for t in page.trials}
    assert by[0].state == "failed" and "interrupted" in (by[0].reason or "")
    assert by[1].state == "complete" and by[1].score == 0.5 and by[1].macs == 7
    assert by[2].state == "failed" and by[2].reason == "pruning failed: boom"
    assert page.pareto == [1]


def test_a_baseline_trial_says_which_and_an_unknown_name_is_dropped() -> None:
    study, storage = _study()
    for name in ("lamp", "<script>"):
        study.add_trial(
            optuna.trial.create_trial(
                params={"a": 0.5},
                distributions=_DIST,
                values=[0.4],
                user_attrs={"state": "complete", "score": 0.4, "baseline": name},
            )
        )
    first, second = _trials.from_study(storage, "s").trials
    assert first.baseline == "lamp" and first.state == "complete"
    assert second.baseline is None


def test_a_failed_trial_shows_its_error_without_traceback_frames() -> None:
    study, storage = _study()
    failed = study.ask(_DIST)
    failed.set_user_attr("state", "failed")
    failed.set_user_attr("reason", "ValueError: boom")
    tb = 'Traceback (most recent call last):\n  File "/srv/x.py", line 3, in f\n    g()\n'
    failed.set_user_attr("error", tb + "ValueError: boom")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    [t] = _trials.from_study(storage, "s").trials
    assert t.state == "failed" and t.error == "ValueError: boom"
