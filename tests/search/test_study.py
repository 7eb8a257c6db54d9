"""The search's study: one encoding of a trial's record, read back live, deleted."""

from __future__ import annotations

import math

import optuna
import pytest

from prunepilot.search import (
    Outcome,
    Task,
    TrialRecord,
    delete_study,
    pareto_front,
    read_trials,
)
from prunepilot.search.engine._driver import _finished
from prunepilot.search.engine._result import ERROR_CHARS
from prunepilot.search.engine._study import write_record

_DIST: dict[str, optuna.distributions.BaseDistribution] = {
    "a": optuna.distributions.FloatDistribution(0.0, 1.0)
}


def _rec(number: int, score: float | None, ms: float | None, **kw: object) -> TrialRecord:
    return TrialRecord(
        number=number,
        config={"a": 0.5},
        state="complete",
        macs=100 + number,
        params=10,
        measured_ms=ms,
        score=score,
        **{"feasible": True, **kw},  # type: ignore[arg-type]
    )


def test_a_record_round_trips_and_bad_fields_take_defaults() -> None:
    rec = _rec(3, 0.5, 1.5, rungs=[0.4, -math.inf], error="boom", retries=2, baseline="lamp")
    assert TrialRecord.from_dict(rec.to_dict()) == rec
    old = TrialRecord.from_dict({"number": "4", "state": "weird", "macs": None, "rungs": "x"})
    assert (old.number, old.state, old.macs, old.rungs, old.error) == (4, "complete", 0, [], None)


def test_written_records_read_back_and_the_study_is_deleted() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    done = study.ask(_DIST)
    rec = _rec(done.number, 0.7, 2.0, error="Traceback ...\nValueError: x", retries=1)
    write_record(done, rec)
    study.tell(done, 0.7)
    running = study.ask(_DIST)
    write_record(running, _rec(running.number, 0.9, 1.0))  # not told yet: partial
    first, second = read_trials(storage, "s")
    assert first == rec
    assert second.state == "running" and second.score is None and set(second.config) == {"a"}
    assert delete_study(storage, "s") and read_trials(storage, "s") == []
    assert not delete_study(storage, "s")


def test_pareto_front_keeps_the_non_dominated_cheapest_first() -> None:
    a, b, c = _rec(0, 0.9, 3.0), _rec(1, 0.8, 1.0), _rec(2, 0.7, 2.0)  # c: worse than b
    infeasible = _rec(3, 1.0, 0.5, feasible=False)
    assert pareto_front([a, b, c, infeasible]) == [b, a]
    assert pareto_front([]) == []


@pytest.mark.parametrize("size", [100, 10 * ERROR_CHARS])
def test_a_failed_trial_keeps_its_traceback_tail_and_retries(size: int) -> None:
    frames = "".join(f'  File "f{i}.py", line {i}, in g\n    x = {i}\n' for i in range(size // 40))
    tb = "Traceback (most recent call last):\n" + frames + "ValueError: boom\n"
    rec = TrialRecord(number=0, config={}, state="running", macs=1, params=1)
    _finished(rec, Outcome(Task("evaluate", 0), error="ValueError: boom", retries=1, traceback=tb))
    assert rec.state == "failed" and rec.reason == "ValueError: boom" and rec.retries == 1
    assert rec.error is not None and rec.error.endswith("ValueError: boom\n")
    assert len(rec.error) <= ERROR_CHARS
    assert rec.error == tb or rec.error.startswith('  File "')  # cut at a frame
