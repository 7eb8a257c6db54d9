"""What a search reports: every trial, the finalists, the Pareto front and the winner."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from ..allocation._strategy import Plan
from ..latency._measure import LatencyStats

__all__ = [
    "Baseline",
    "Finalist",
    "SearchProgress",
    "SearchResult",
    "TrialRecord",
    "pareto_front",
]

TrialState = Literal["complete", "rejected", "failed", "running"]
_STATES: tuple[TrialState, ...] = ("complete", "rejected", "failed", "running")
ERROR_CHARS = 2000
"""A failed trial keeps the last this many characters of its traceback."""


@dataclass(frozen=True)
class SearchProgress:
    """One progress report.

    Attributes:
        phase: ``tracing``, ``calibrating``, ``measuring``, ``baselines``, ``searching``,
            ``finalists``, ``fine-tuning`` or ``done``.
        trials_done: candidates evaluated so far.
        trials_planned: candidates the search will evaluate.
        best_score: the best feasible cheap score so far.
        best_config: its config.
        message: a human-readable line.
    """

    phase: str
    trials_done: int = 0
    trials_planned: int = 0
    best_score: float | None = None
    best_config: dict[str, float] | None = None
    message: str = ""


ProgressFn = Callable[[SearchProgress], None]


@dataclass
class TrialRecord:
    """One sampled candidate.

    Attributes:
        number: the Optuna trial number.
        config: keep ratio per search dimension.
        state: ``complete`` (scored), ``rejected`` (infeasible before evaluation),
            ``failed`` or ``running``.
        macs: analytic MACs of the pruned model.
        params: analytic parameter count.
        predicted_ms: latency predicted by the latency model.
        measured_ms: latency measured on the target, when it was.
        score: the cheap score (BatchNorm recalibration + metric on the held-out split).
        feasible: every budget holds (measured latency when known, else predicted).
        reason: why it was rejected or failed.
        seconds: evaluation wall time.
        worker: which worker evaluated it.
        duplicate_of: an earlier trial with the same config, whose score it reuses.
        baseline: the allocation (``uniform``, ``global``, ``lamp``) whose exact plan at
            the budgets this trial is; ``None`` for searched candidates. Baselines are
            evaluated on top of `SearchSettings.trials`.
        steps: optimizer steps it trained during the search (``score_steps`` and the
            successive-halving rungs it reached; the finalists' fine-tune not included).
        rungs: its held-out score after each successive-halving rung it reached.
        error: a failed trial's traceback (its last `ERROR_CHARS` characters).
        retries: times its evaluation was re-run because a worker died.
    """

    number: int
    config: dict[str, float]
    state: TrialState
    macs: int
    params: int
    predicted_ms: float | None = None
    measured_ms: float | None = None
    score: float | None = None
    feasible: bool = False
    reason: str | None = None
    seconds: float = 0.0
    worker: str = ""
    duplicate_of: int | None = None
    baseline: str | None = None
    steps: int = 0
    rungs: list[float] = field(default_factory=list)
    error: str | None = None
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields: the one encoding of a record (reports, study attributes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        """The record `to_dict` wrote; missing or malformed fields (an older writer, a
        trial interrupted while being recorded) take their defaults."""
        state = d.get("state")
        return cls(
            number=_int(d.get("number")),
            config={str(k): float(v) for k, v in _mapping(d.get("config")).items()},
            state=state if state in _STATES else "complete",
            macs=_int(d.get("macs")),
            params=_int(d.get("params")),
            predicted_ms=_float(d.get("predicted_ms")),
            measured_ms=_float(d.get("measured_ms")),
            score=_float(d.get("score")),
            feasible=bool(d.get("feasible", False)),
            reason=_str(d.get("reason")),
            seconds=_float(d.get("seconds")) or 0.0,
            worker=str(d.get("worker") or ""),
            duplicate_of=None if d.get("duplicate_of") is None else _int(d["duplicate_of"]),
            baseline=_str(d.get("baseline")),
            steps=_int(d.get("steps")),
            rungs=[f for f in (_float(r) for r in _list(d.get("rungs"))) if f is not None],
            error=_str(d.get("error")),
            retries=_int(d.get("retries")),
        )

    def cost(self) -> float:
        """What the Pareto front trades score against: latency (measured, else
        predicted), else MACs."""
        c = self.measured_ms if self.measured_ms is not None else self.predicted_ms
        return float(c) if c is not None else float(self.macs)


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The complete feasible scored records no other beats on both score and `cost`,
    cheapest first."""
    ok = [r for r in records if r.state == "complete" and r.feasible and r.score is not None]
    front = [
        r
        for r in ok
        if not any(
            (o.score or 0) >= (r.score or 0)
            and o.cost() <= r.cost()
            and ((o.score or 0) > (r.score or 0) or o.cost() < r.cost())
            for o in ok
        )
    ]
    return sorted(front, key=TrialRecord.cost)


def _float(v: Any) -> float | None:
    """``v`` as a float (infinities kept: a failed rung scores -inf); ``None`` if not one."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _int(v: Any) -> int:
    f = _float(v)
    return int(f) if f is not None and math.isfinite(f) else 0


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else []


@dataclass
class Finalist:
    """A fine-tuned candidate (``baseline``: its allocation when it is a baseline;
    ``rungs``: its successive-halving scores; ``steps``: its fine-tune's steps)."""

    number: int
    config: dict[str, float]
    macs: int
    params: int
    score: float
    val_score: float | None = None
    predicted_ms: float | None = None
    measured_ms: float | None = None
    feasible: bool = True
    baseline: str | None = None
    rungs: list[float] = field(default_factory=list)
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)


@dataclass(frozen=True)
class Baseline:
    """The unpruned model's numbers, which relative budgets refer to."""

    macs: int
    params: int
    latency: LatencyStats | None = None


@dataclass
class SearchResult:
    """The winner, with everything the search saw.

    Attributes:
        model: the pruned, fine-tuned model (CPU).
        config: its keep ratio per search dimension.
        plan: the channels removed per group (``prunepilot.prune_channels`` format).
        macs: its MACs; ``params``: its parameter count.
        latency: its latency re-measured with more repetitions (when a latency budget or
            target applies); with `SearchSettings.latency_anchor`, in the frame of the
            original's first measurement (``baseline.latency``).
        score: its validation metric after fine-tuning.
        baseline: the unpruned model's numbers.
        limits: the absolute budgets (``macs``: multiply-accumulates, ``params``, ``latency_ms``).
        trials: every sampled candidate.
        pareto: the non-dominated complete feasible trials (score vs latency or MACs).
        finalists: the fine-tuned candidates.
        latency_model_error: median absolute percentage error of the latency model on
            the measured finalists (``None`` without a latency model).
        latency_drift: (min, max) over the anchored measurements of the original model's
            median latency beside the candidate divided by its first reading: how far the
            device drifted during the search (1.5: 50% slower; ``None``: nothing anchored).
        study_name: the Optuna study; ``storage``: where it lives.
        wall_s: the search's wall time.
        steps: optimizer steps the search trained in all: cheap scores, rungs and the
            finalists' fine-tunes (its cost in units of ``finetune.steps``).
        chosen: ``search`` when a searched candidate won, else the baseline allocation
            (``uniform``, ``global``, ``lamp``) that no searched candidate beat.
    """

    model: nn.Module
    config: dict[str, float]
    plan: Plan
    macs: int
    params: int
    latency: LatencyStats | None
    score: float
    baseline: Baseline
    limits: dict[str, float]
    trials: list[TrialRecord] = field(default_factory=list)
    pareto: list[TrialRecord] = field(default_factory=list)
    finalists: list[Finalist] = field(default_factory=list)
    latency_model_error: float | None = None
    latency_drift: tuple[float, float] | None = None
    study_name: str = ""
    storage: str | None = None
    wall_s: float = 0.0
    chosen: str = "search"
    steps: int = 0

    def report(self) -> dict[str, Any]:
        """A JSON-able summary (everything but the model and plan)."""
        return {
            "config": self.config,
            "macs": self.macs,
            "params": self.params,
            "latency": asdict(self.latency) if self.latency else None,
            "score": self.score,
            "baseline": {
                "macs": self.baseline.macs,
                "params": self.baseline.params,
                "latency": asdict(self.baseline.latency) if self.baseline.latency else None,
            },
            "limits": self.limits,
            "trials": [t.to_dict() for t in self.trials],
            "pareto": [t.number for t in self.pareto],
            "finalists": [f.to_dict() for f in self.finalists],
            "latency_model_error": self.latency_model_error,
            "latency_drift": list(self.latency_drift) if self.latency_drift else None,
            "study_name": self.study_name,
            "wall_s": self.wall_s,
            "chosen": self.chosen,
            "steps": self.steps,
        }
