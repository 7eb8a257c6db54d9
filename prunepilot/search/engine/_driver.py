"""The search driver: Optuna ask/tell over per-group keep ratios under budgets.

One driver process owns the Optuna study and a `Pool` of evaluators. It first evaluates
the baselines (the exact uniform, global and LAMP plans at the budgets, `_baselines`),
the best of which by cheap score is always a finalist, fine-tuned like the searched
ones, so the search returns it when nothing it found does better. Then it asks the sampler
for configs, rejects those whose analytic MACs/parameters or predicted latency break a
budget without running them, keeps ``pool.capacity`` evaluations in flight and tells the
study each score with its constraint values (constrained TPE or NSGA-II). Latency is
measured only with nothing else running on the pool: the original and smallest models, the
uniform seeds and a few random shapes (to fit the latency model), each new best candidate
(so the best is never only predicted), the finalists and the winner; every candidate is
timed beside the original, so drift of a shared device cancels. The study lives in real
storage (`_study`), so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from torch import nn

from prunepilot.core import prune_channels, trace
from prunepilot.schemas import SearchSpec

from ..allocation._strategy import Allocation, Plan
from ..errors import CalibrationError, InfeasibleError, SearchCancelled
from ..importance._criteria import get_criterion
from ..importance._scoring import score_channels
from ..latency._measure import LatencyStats
from ..recovery._finetune import LossFn
from ._baselines import baseline_config, grid_params
from ._budget import Budgets
from ._evaluator import Evaluation, Finetuned, Metric, SearchData, Workload
from ._pool import LocalPool, Outcome, Pool, Task
from ._result import (
    ERROR_CHARS,
    Baseline,
    Finalist,
    ProgressFn,
    SearchProgress,
    SearchResult,
    TrialRecord,
    pareto_front,
)
from ._space import Config, Space
from ._study import open_storage, open_study, write_record

__all__ = ["search"]

log = logging.getLogger("prunepilot.search")

# Evaluations in flight: trial number -> (trial, its record, its analytic estimate).
_InFlight = dict[int, tuple[optuna.trial.Trial, TrialRecord, dict[str, Any]]]

_MAX_ASKS_PER_TRIAL = 20
_FINAL_REPEAT_FACTOR = 3
_REMEASURE_ATTEMPTS = 3
_REMEASURE_PAUSE_S = 1.0
_BASELINE_KEY = -100  # pool keys of the baselines' evaluations: -100, -101, ...
_BASELINE_FITS = 4  # plans of a baseline measured at most, under a latency budget
_SCORES_KEY = -3
_RUNG_KEY = -1000  # pool keys of a rung's probes: -1000, -1001, ...


def _key(config: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, round(v, 6)) for k, v in config.items()))


def _finished(rec: TrialRecord, outcome: Outcome) -> None:
    """Copy an evaluation's worker, time and retries into its record; a failure's reason
    and the tail of its traceback too."""
    rec.worker, rec.seconds, rec.retries = outcome.worker, outcome.seconds, outcome.retries
    if outcome.error:
        rec.state, rec.reason = "failed", outcome.error
        rec.error = _tail(outcome.traceback) if outcome.traceback else None


def _tail(text: str) -> str:
    """The last `ERROR_CHARS` characters of a traceback, from the start of a frame."""
    if len(text) <= ERROR_CHARS:
        return text
    cut = text[-ERROR_CHARS:]
    frame = cut.find('\n  File "')
    return cut[frame + 1 :] if frame >= 0 else cut[cut.find("\n") + 1 :]


class _Driver:
    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        data: SearchData,
        spec: SearchSpec,
        pool: Pool,
        storage: Any,
        study_name: str,
        metric: Metric | None,
        loss_fn: LossFn | None,
        callback: ProgressFn | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        self.model, self.example_inputs, self.data, self.spec = model, example_inputs, data, spec
        self.pool, self.storage, self.study_name = pool, storage, study_name
        self.metric, self.loss_fn = metric, loss_fn
        self.callback, self.cancel = callback, cancel
        self.settings = spec.search
        self.target = spec.constraints.target
        self.records: dict[int, TrialRecord] = {}
        self.fit_samples: list[tuple[dict[str, list[int]], float]] = []
        self.baseline_latency: LatencyStats | None = None
        self.drift: list[float] = []  # the original's speed beside each anchored measurement
        self.phase = "tracing"
        self.fill_budget = spec.search.fill_budget and spec.search.sampler == "tpe"
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------------ plumbing

    def report(self, phase: str | None = None, message: str = "") -> None:
        if phase:
            self.phase = phase
        if message:
            log.info("%s: %s", self.phase, message)
        if self.callback is None:
            return
        best = self.best_record()
        self.callback(
            SearchProgress(
                self.phase,
                self.done,
                self.settings.trials,
                best.score if best else None,
                dict(best.config) if best else None,
                message,
            )
        )

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            self.pool.cancel()
            raise SearchCancelled("the search was cancelled")

    @property
    def done(self) -> int:
        """Searched candidates evaluated (baselines come on top of `trials`)."""
        return sum(
            1
            for r in self.records.values()
            if r.state == "complete" and r.duplicate_of is None and r.baseline is None
        )

    @property
    def evaluated(self) -> dict[tuple[tuple[str, float], ...], TrialRecord]:
        """Evaluated trials by config (duplicates reuse their score)."""
        return {
            _key(r.config): r
            for r in self.records.values()
            if r.state == "complete" and r.duplicate_of is None
        }

    def best_record(self) -> TrialRecord | None:
        ok = [r for r in self.records.values() if r.state == "complete" and r.feasible]
        return max(ok, key=lambda r: r.score or -math.inf) if ok else None

    def run_exclusive(self, tasks: list[Task]) -> list[Outcome]:
        """Run tasks one at a time with nothing else in flight (latency measurements)."""
        if self.pool.pending:
            raise RuntimeError("exclusive tasks need an idle pool")
        out = []
        for task in tasks:
            self.check_cancel()
            self.pool.submit(task)
            outcome = self.wait_one()
            out.append(outcome)
        return out

    def wait_one(self) -> Outcome:
        while True:
            self.check_cancel()
            outcome = self.pool.wait(timeout=1.0)
            if outcome is not None:
                return outcome

    def measure(self, config: Config | None, repeats: int | None = None) -> LatencyStats:
        """Real latency of ``config`` (``None``: the original model) on the target.

        With `SearchSettings.latency_anchor`, a candidate is timed interleaved with the
        original and reported in the frame of the original's first measurement, so every
        latency of the search compares as if measured under the same load.
        """
        base = self.baseline_latency
        anchor = self.settings.latency_anchor and base is not None and config is not None
        [o] = self.run_exclusive(
            [
                Task(
                    "measure",
                    -1,
                    dict(config) if config else None,
                    self.target,
                    repeats,
                    anchor=anchor,
                )
            ]
        )
        if o.error:
            raise InfeasibleError(f"latency measurement failed on {self.target.device}: {o.error}")
        if not anchor:
            value: LatencyStats = o.value
            return value
        assert base is not None
        stats, ref = o.value
        drift = ref.median_ms / base.median_ms
        log.debug(
            "candidate %.3f ms beside the original at %.3f ms (%.1f%% of its first reading)",
            stats.median_ms,
            ref.median_ms,
            100 * drift,
        )
        self.drift.append(drift)
        anchored: LatencyStats = stats.scaled(1 / drift)
        return anchored

    def measure_sample(
        self, config: Config, repeats: int | None = None, plan: Plan | None = None
    ) -> float:
        """Measure ``config`` for real and keep it as a latency-model sample (median ms);
        ``plan``: its plan when the caller has it."""
        ms = self.measure(config, repeats).median_ms
        self.fit_samples.append((self.space.plan(config) if plan is None else plan, ms))
        return ms

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        self.report("tracing", "tracing the model")
        self.model.eval()
        self.graph = trace(self.model, self.example_inputs)
        self.report("calibrating", f"scoring channels ({self.settings.criterion})")
        crit = get_criterion(self.settings.criterion)
        self.work = Workload(
            model=self.model,
            example_inputs=self.example_inputs,
            graph=self.graph,
            scores=None,
            space=self.spec.space,
            settings=self.settings,
            finetune=self.spec.finetune,
            data=self.data,
            metric=self.metric,
            loss_fn=self.loss_fn,
        )
        if crit.data_driven:
            # forward/backward passes over calibration batches: on a worker (its GPU when
            # it has one); the workload goes out again with the scores for every worker
            self.pool.start(self.work)
            [o] = self.run_exclusive([Task("scores", _SCORES_KEY)])
            if o.error:
                raise CalibrationError(f"scoring channels ({crit.name}) failed: {o.error}")
            self.scores = o.value
        else:  # weights only: cheap, here
            self.scores = score_channels(self.model, self.graph, crit)
        self.work.scores = self.scores
        self.space = Space(self.model, self.graph, self.scores, self.spec.space)
        self.baseline_macs = self.graph.macs()
        self.baseline_params = self.graph.params()
        c = self.spec.constraints
        limits: dict[str, float] = {}
        mac_limits = [b.limit(self.baseline_macs) for b in c.mac_budgets()]
        if mac_limits:  # the MACs bound (macs, or flops at 2 per MAC): the tighter holds
            limits["macs"] = min(mac_limits)
        if c.params is not None:
            limits["params"] = c.params.limit(self.baseline_params)
        self.budgets = Budgets(self.space, self.graph, limits, self.settings)
        smallest = self.space.smallest()
        small_plan = self.space.plan(smallest)
        small = {"macs": self.graph.macs(small_plan), "params": self.graph.params(small_plan)}
        for key, base in (("macs", self.baseline_macs), ("params", self.baseline_params)):
            if key in limits and small[key] > limits[key]:
                raise InfeasibleError(
                    f"the {key} budget {limits[key]:.4g} cannot be met: the smallest "
                    f"reachable model has {small[key]:.4g} {key} ({small[key] / base:.1%} of "
                    f"the original) with every group at keep ratio {self.space.low}; raise the "
                    "budget or lower space.min_keep"
                )
        self.report("measuring", "starting workers")
        self.pool.start(self.work)
        if c.latency_ms is not None:
            self.baseline_latency = self.measure(None)
            lat_limit = c.latency_ms.limit(self.baseline_latency.median_ms)
            self.budgets.limit_latency(lat_limit)
            small_lat = self.measure(smallest)
            self.fit_samples += [({}, self.baseline_latency.median_ms)]
            self.fit_samples += [(small_plan, small_lat.median_ms)]
            if not self.budgets.fits_final(small_lat.median_ms):
                orig = self.baseline_latency.median_ms
                raise InfeasibleError(
                    f"the latency budget {lat_limit:.3g} ms cannot be met on "
                    f"{self.target.device}: the smallest reachable model takes "
                    f"{small_lat.median_ms:.3g} ms (the original {orig:.3g} ms) with every "
                    f"group at keep ratio {self.space.low}; raise the budget "
                    "or lower space.min_keep"
                )
            if self.settings.latency_model:
                self.report("measuring", "building the per-layer latency table")
                [o] = self.run_exclusive(
                    [Task("latency_model", -2, None, self.target, keep_ratios=self.space.choices)]
                )
                if o.error:
                    raise InfeasibleError(f"building the latency model failed: {o.error}")
                self.budgets.latency_model = o.value
                self.calibrate_latency_model()

    def calibrate_latency_model(self) -> None:
        """Measure a few random configs for real and fit the latency model's correction.

        Uniform seeds alone teach it little about uneven allocations; random shapes around
        the budget cost a few measurements of small models and cut its error on them.
        """
        n = self.settings.latency_fit_samples
        if n == 0:
            return
        rng = random.Random(self.settings.seed)
        configs = []
        for _ in range(n):
            raw = {d.name: rng.choice(self.space.choices) for d in self.space.dims}
            configs.append(self.budgets.fill(raw) if self.fill_budget else raw)
        for config in configs:  # anchored like every other measurement of the search
            try:
                self.measure_sample(config)
            except InfeasibleError as e:
                log.warning("skipping a latency-model sample: %s", e)
        self.fit_latency()

    def fit_latency(self) -> None:
        if self.budgets.latency_model is not None and len(self.fit_samples) >= 2:
            self.budgets.latency_model.fit(self.fit_samples)

    # ------------------------------------------------------------------ study

    def open_study(self) -> optuna.Study:
        study, records = open_study(self.storage, self.study_name, self.spec, self.budgets.seeds)
        self.records.update(records)
        for rec in records.values():
            if rec.measured_ms is not None and rec.config:
                self.fit_samples.append((self.space.plan(rec.config), rec.measured_ms))
        self.fit_latency()
        return study

    def objective_values(self, rec: TrialRecord) -> list[float]:
        score = rec.score if rec.score is not None else 0.0
        if self.settings.sampler != "nsga2":
            return [score]
        cost = rec.measured_ms or rec.predicted_ms
        return [score, float(cost) if cost is not None else float(rec.macs)]

    def tell(
        self,
        study: optuna.Study,
        trial: optuna.trial.Trial,
        rec: TrialRecord,
        constraints: Mapping[str, float],
    ) -> None:
        """Record the trial and report its objective(s) and constraint values to Optuna."""
        self.records[rec.number] = rec
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        write_record(trial, rec)
        if rec.state == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, self.objective_values(rec))

    def baselines(self, study: optuna.Study) -> None:
        """Evaluate the exact baseline plans at the budgets, like every candidate.

        With a latency budget each is measured for real first (like the uniform seeds);
        each is told to the study at the nearest grid point, its exact config in the
        user attributes, so a resumed search skips the ones already evaluated.
        """
        names = [n for n in self.settings.baselines if n not in self.done_baselines]
        if not names:
            return
        if self.budgets.latency_limit is not None and self.budgets.latency_model is None:
            log.warning("baselines at a latency budget need search.latency_model; skipped")
            return
        self.report("baselines", f"evaluating the {', '.join(names)} baselines")
        todo: list[tuple[TrialRecord, dict[str, float]]] = []
        for name in names:
            self.check_cancel()
            found = self.baseline_config(name)
            if found is None:
                continue
            config, measured = found
            est = self.budgets.estimate(config)
            rec = TrialRecord(
                number=-1,
                config=config,
                state="running",
                macs=est["macs"],
                params=est["params"],
                predicted_ms=est["predicted_ms"],
                baseline=name,
            )
            rec.measured_ms = measured
            cons = self.budgets.constraints(rec.macs, rec.params, self.known_ms(rec))
            rec.feasible = self.feasible(rec)
            todo.append((rec, cons))
        for i, (rec, _) in enumerate(todo):
            self.pool.submit(Task("evaluate", _BASELINE_KEY - i, dict(rec.config)))
        for _ in todo:
            o = self.wait_one()
            rec, cons = todo[_BASELINE_KEY - o.task.key]
            _finished(rec, o)
            if not o.error:
                rec.state, rec.score, rec.steps = "complete", o.value.score, o.value.steps
            self.tell_baseline(study, rec, cons)
            self.report(message=f"{rec.baseline} baseline: score {rec.score} macs {rec.macs}")

    def baseline_config(self, name: Allocation) -> tuple[Config, float | None] | None:
        """The exact plan of baseline ``name`` at the budgets, and its measured latency.

        Under a latency budget the plan is sized by predicted latency, then measured; while
        it measures above what a finalist may use (``1 - latency_slack`` of the budget),
        the prediction is scaled by the measured/predicted ratio and the plan re-sized
        (up to `_BASELINE_FITS` times), so the baseline is a candidate that qualifies.
        """
        scale = 1.0
        lim = self.budgets.latency_limit
        for attempt in range(_BASELINE_FITS):
            config = baseline_config(self.space, self.budgets, name, latency_scale=scale)
            if config is None or lim is None:
                return None if config is None else (config, None)
            plan = self.space.plan(config)
            measured = self.measure_sample(config, plan=plan)
            self.fit_latency()
            if self.budgets.fits_measured(measured) or attempt == _BASELINE_FITS - 1:
                return config, measured
            predicted = self.budgets.estimate_plan(plan)["predicted_ms"] or measured
            # what the (refitted) model still under-predicts this plan by, and 1% more
            scale = max(scale * 1.01, measured / predicted * 1.01)
            log.info(
                "the %s baseline measured %.3f ms > %.3f ms allowed; re-sizing it",
                name,
                measured,
                lim * (1 - self.settings.latency_slack),
            )
        return None

    @property
    def done_baselines(self) -> set[str]:
        """Baselines already evaluated (by a search this one resumes)."""
        return {r.baseline for r in self.records.values() if r.baseline and r.state == "complete"}

    def tell_baseline(
        self, study: optuna.Study, rec: TrialRecord, constraints: Mapping[str, float]
    ) -> None:
        """Add an evaluated baseline to the study as a finished trial."""
        params, dists = grid_params(self.space, rec.config)
        failed = rec.state == "failed"
        frozen = optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
            params=params,
            distributions=dists,
            values=None if failed else self.objective_values(rec),
        )
        write_record(frozen, rec)
        for key, value in constraints.items():
            frozen.set_constraint(key, value)
        study.add_trial(frozen)
        rec.number = study.get_trials(deepcopy=False)[-1].number
        self.records[rec.number] = rec

    def search(self, study: optuna.Study) -> None:
        s = self.settings
        self.report("searching", f"{self.done}/{s.trials} trials done")
        # measure the uniform seeds first: real latencies to fit the latency model
        in_flight: _InFlight = {}
        asks = 0
        max_asks = s.trials * _MAX_ASKS_PER_TRIAL
        while self.done < s.trials or in_flight:
            self.check_cancel()
            while (
                len(in_flight) < self.pool.capacity
                and self.done + len(in_flight) < s.trials
                and asks < max_asks
            ):
                trial = study.ask()
                asks += 1
                config = self.space.suggest(trial)
                seed = bool(trial.user_attrs.get("seed"))
                if self.fill_budget and not seed:
                    config = self.budgets.fill(config)
                est = self.budgets.estimate(config)
                rec = TrialRecord(
                    number=trial.number,
                    config=config,
                    state="running",
                    macs=est["macs"],
                    params=est["params"],
                    predicted_ms=est["predicted_ms"],
                )
                if est["reason"] is not None:
                    rec.state, rec.reason = "rejected", est["reason"]
                    self.tell(study, trial, rec, est["constraints"])
                    continue
                twin = self.evaluated.get(_key(config))
                if twin is not None and twin.state == "complete":
                    rec.state, rec.score, rec.feasible = "complete", twin.score, twin.feasible
                    rec.measured_ms, rec.duplicate_of = twin.measured_ms, twin.number
                    self.tell(study, trial, rec, est["constraints"])
                    continue
                if seed and self.budgets.latency_model is not None:
                    self.measure_seed(study, rec, est, in_flight)
                rec.feasible = self.feasible(rec)
                self.pool.submit(Task("evaluate", trial.number, config))
                in_flight[trial.number] = (trial, rec, est)
            if not in_flight:
                if asks >= max_asks:
                    log.warning(
                        "stopping after %d samples: most candidates break the budgets", asks
                    )
                break
            rec = self.collect(study, in_flight)
            if self.unconfirmed_best() is rec:
                self.confirm_best(study, in_flight)
            best = self.best_record()
            self.report(
                message=f"trial {rec.number}: score {rec.score} macs {rec.macs} "
                f"pred {rec.predicted_ms} ({self.done}/{s.trials}, best "
                f"{best.score if best else None})"
            )

    def unconfirmed_best(self) -> TrialRecord | None:
        """The best feasible candidate when its latency is only predicted, else ``None``."""
        if not self.budgets.predicts_latency:
            return None
        best = self.best_record()
        return best if best is not None and best.measured_ms is None else None

    def confirm_best(
        self,
        study: optuna.Study,
        in_flight: _InFlight,
    ) -> None:
        """Measure new best candidates for real until the best feasible one is measured.

        The promising candidates are the ones worth a real measurement (NetAdapt's loop):
        each adds a sample where the search is looking and refits the latency model, so
        later candidates are filled to the budget by better predictions; one over the
        budget stops being the best.
        """
        self.drain(study, in_flight)
        while (top := self.unconfirmed_best()) is not None:
            top.measured_ms = self.measure_sample(top.config)
            top.feasible = self.feasible(top)
            self.report(
                message=f"trial {top.number}: measured {top.measured_ms:.3f} ms (predicted "
                f"{top.predicted_ms}), {'within' if top.feasible else 'over'} the budget"
            )
        self.fit_latency()

    def drain(self, study: optuna.Study, in_flight: _InFlight) -> None:
        """Collect every evaluation in flight: measurements run alone on the device."""
        while in_flight:
            self.collect(study, in_flight)

    def collect(
        self,
        study: optuna.Study,
        in_flight: _InFlight,
    ) -> TrialRecord:
        """Wait for one evaluation and tell the study its result."""
        outcome = self.wait_one()
        trial, rec, est = in_flight.pop(outcome.task.key)
        _finished(rec, outcome)
        if not outcome.error:
            ev: Evaluation = outcome.value
            rec.state, rec.score, rec.steps = "complete", ev.score, ev.steps
        self.tell(study, trial, rec, est["constraints"])
        return rec

    def measure_seed(
        self,
        study: optuna.Study,
        rec: TrialRecord,
        est: dict[str, Any],
        in_flight: _InFlight,
    ) -> None:
        """Measure a seed for real (after draining the pool) and refit the latency model."""
        self.drain(study, in_flight)
        rec.measured_ms = self.measure_sample(rec.config, plan=est["plan"])
        self.fit_latency()
        est["constraints"] = self.budgets.constraints(rec.macs, rec.params, rec.measured_ms)

    # ------------------------------------------------------------------ finish

    def known_ms(self, rec: TrialRecord) -> float | None:
        """The latency known best of a candidate: measured, else predicted."""
        return rec.measured_ms if rec.measured_ms is not None else rec.predicted_ms

    def feasible(self, rec: TrialRecord) -> bool:
        """`Budgets.feasible` of a candidate."""
        return self.budgets.feasible(rec.macs, rec.params, rec.predicted_ms, rec.measured_ms)

    def qualifies(self, rec: TrialRecord) -> bool:
        """Measure a finalist's candidate (unless it was) and tell whether it is feasible."""
        if self.budgets.latency_limit is not None and rec.measured_ms is None:
            reps = self.target.repeats * _FINAL_REPEAT_FACTOR
            rec.measured_ms = self.measure_sample(rec.config, repeats=reps)
        return self.feasible(rec)

    def halving(self) -> bool:
        """Whether successive-halving rungs run before the finalists are chosen."""
        return self.settings.rungs > 0 and self.spec.finetune.steps > 0

    def entrants(self) -> tuple[list[TrialRecord], list[TrialRecord]]:
        """The best searched candidates by cheap score and the baselines, each meeting
        every budget when measured: the finalists' candidates.

        Without rungs, ``top_k`` searched ones and the best baseline; with them,
        ``top_k * eta**rungs`` searched ones and every baseline.
        """
        self.report("finalists", "measuring the finalists' candidates")
        s = self.settings
        pool = [
            r
            for r in self.records.values()
            if r.state == "complete"
            and r.score is not None
            and self.budgets.rejection(r.macs, r.params, r.predicted_ms) is None
        ]
        pool.sort(key=lambda r: (-(r.score or 0.0), r.macs))
        halving = self.halving()
        seen: set[tuple[tuple[str, float], ...]] = set()
        out: list[list[TrialRecord]] = []
        for wanted, group in (
            (s.top_k * s.eta**s.rungs if halving else s.top_k, [r for r in pool if not r.baseline]),
            (len(s.baselines) if halving else 1, [r for r in pool if r.baseline]),
        ):
            found: list[TrialRecord] = []
            for r in group:
                if len(found) >= wanted:
                    break
                key = _key(r.config)
                if key in seen:
                    continue
                seen.add(key)
                self.check_cancel()
                r.feasible = self.qualifies(r)
                if r.feasible:
                    found.append(r)
            out.append(found)
        searched, baselines = out
        if not searched and not baselines:
            raise InfeasibleError(
                "no evaluated candidate meets every budget when measured; raise the "
                "budgets, allow more trials, or lower space.min_keep"
            )
        return searched, baselines

    def finalists(self) -> list[TrialRecord]:
        """The candidates fine-tuned with the full budget: the ``top_k`` best after the
        successive-halving rungs (by cheap score without them), and the best baseline.

        Each rung fine-tunes every candidate left for ``finetune.steps / eta**(rungs - r)``
        steps with the finalists' recipe and keeps the best ``1/eta`` of them (at least
        ``top_k``) by held-out score. The best baseline (the one that reached the furthest
        rung, best score there) is a finalist whatever its rank, so the search never
        returns a model worse than every baseline after the same fine-tune.
        """
        searched, baselines = self.entrants()
        s = self.settings
        if not self.halving():
            return searched[: s.top_k] + baselines[:1]
        alive = searched + baselines
        total = self.spec.finetune.steps
        for rung in range(s.rungs):
            last = rung == s.rungs - 1
            steps = max(1, round(total / s.eta ** (s.rungs - rung)))
            self.report(
                "halving",
                f"rung {rung + 1}/{s.rungs}: {len(alive)} candidates, {steps} steps each",
            )
            for i, rec in enumerate(alive):
                self.pool.submit(Task("probe", _RUNG_KEY - i, dict(rec.config), steps=steps))
            for _ in alive:
                o = self.wait_one()
                rec = alive[_RUNG_KEY - o.task.key]
                if o.error:
                    log.warning("rung %d of trial %d failed: %s", rung + 1, rec.number, o.error)
                    rec.rungs.append(-math.inf)
                    continue
                rec.rungs.append(o.value.score)
                rec.steps += o.value.steps
                self.report(
                    message=f"rung {rung + 1} trial {rec.number}"
                    f"{f' ({rec.baseline})' if rec.baseline else ''}: score {o.value.score:.4f}"
                )
            alive.sort(key=lambda r: (-r.rungs[-1], r.macs))
            keep = s.top_k if last else max(s.top_k, math.ceil(len(alive) / s.eta))
            alive = [r for r in alive[:keep] if math.isfinite(r.rungs[-1])]
        reached = [r for r in baselines if r.rungs and math.isfinite(r.rungs[-1])]
        if reached and not any(r.baseline for r in alive):
            alive.append(max(reached, key=lambda r: (len(r.rungs), r.rungs[-1])))
        if not alive:
            raise InfeasibleError("every candidate failed its successive-halving rung")
        return alive

    def finetune(self, chosen: list[TrialRecord]) -> list[tuple[Finalist, Finetuned]]:
        self.report("fine-tuning", f"fine-tuning {len(chosen)} finalists")
        for r in chosen:
            self.pool.submit(Task("finetune", r.number, dict(r.config)))
        results: dict[int, Finetuned] = {}
        while len(results) < len(chosen):
            o = self.wait_one()
            if o.error:
                log.warning("fine-tuning trial %d failed: %s", o.task.key, o.error)
                results[o.task.key] = Finetuned(-math.inf, o.seconds, 0, {})
                continue
            results[o.task.key] = o.value
            self.report(message=f"finalist {o.task.key}: val score {o.value.score:.4f}")
        out = []
        for r in chosen:
            ft = results[r.number]
            out.append(
                (
                    Finalist(
                        r.number,
                        dict(r.config),
                        r.macs,
                        r.params,
                        r.score or 0.0,
                        ft.score if math.isfinite(ft.score) else None,
                        r.predicted_ms,
                        r.measured_ms,
                        baseline=r.baseline,
                        rungs=list(r.rungs),
                        steps=ft.steps,
                    ),
                    ft,
                )
            )
        return out

    def finish(self, finals: list[tuple[Finalist, Finetuned]]) -> SearchResult:
        ranked = sorted(
            (f for f in finals if f[0].val_score is not None),
            key=lambda f: -(f[0].val_score or 0.0),
        )
        if not ranked:
            raise InfeasibleError("every finalist failed to fine-tune; see the logs")
        latency = None
        winner = None
        for fin, ft in ranked:
            if self.budgets.latency_limit is not None:
                # the returned model, re-measured with more repetitions; further runs (the
                # fastest median counts) absorb bursts of interference from other processes
                reps = self.target.repeats * _FINAL_REPEAT_FACTOR
                latency = self.measure(fin.config, repeats=reps)
                for _ in range(_REMEASURE_ATTEMPTS):
                    if self.budgets.fits_final(latency.median_ms):
                        break
                    time.sleep(_REMEASURE_PAUSE_S)  # let a burst of outside load pass
                    again = self.measure(fin.config, repeats=reps)
                    latency = min(latency, again, key=lambda x: x.median_ms)
                if not self.budgets.fits_final(latency.median_ms):
                    log.warning(
                        "finalist %d re-measured at %.3f ms > %.3f ms; trying the next",
                        fin.number,
                        latency.median_ms,
                        self.budgets.latency_limit,
                    )
                    fin.feasible = False
                    continue
            winner = (fin, ft)
            break
        if winner is None:
            raise InfeasibleError(
                "no finalist meets the latency budget when re-measured with more repetitions; "
                "the budget is at the edge of measurement noise: raise it slightly"
            )
        fin, ft = winner
        if fin.baseline is not None:
            log.info("no searched candidate beat the %s baseline", fin.baseline)
        plan = self.space.plan(fin.config)
        model = self.space.model
        pruned = copy.deepcopy(model).to("cpu")
        if plan:
            prune_channels(pruned, self.graph, plan)
        if ft.state:
            pruned.load_state_dict(ft.state)
        pruned.eval()
        err = None
        if self.budgets.latency_model is not None:
            pairs = [
                (f.predicted_ms, f.measured_ms)
                for f, _ in finals
                if f.predicted_ms is not None and f.measured_ms is not None
            ]
            if pairs:
                err = statistics.median(abs(p - m) / m for p, m in pairs)
        return SearchResult(
            model=pruned,
            config=fin.config,
            plan=plan,
            macs=fin.macs,
            params=fin.params,
            latency=latency,
            score=float(fin.val_score or 0.0),
            baseline=Baseline(self.baseline_macs, self.baseline_params, self.baseline_latency),
            limits=dict(self.budgets.limits),
            trials=sorted(self.records.values(), key=lambda r: r.number),
            pareto=pareto_front(self.records.values()),
            finalists=[f for f, _ in finals],
            latency_model_error=err,
            latency_drift=(min(self.drift), max(self.drift)) if self.drift else None,
            study_name=self.study_name,
            wall_s=time.perf_counter() - self.t0,
            chosen=fin.baseline or "search",
            steps=sum(r.steps for r in self.records.values()) + sum(ft.steps for _, ft in finals),
        )

    def run(self) -> SearchResult:
        self.prepare()
        study = self.open_study()
        self.baselines(study)
        self.search(study)
        chosen = self.finalists()
        finals = self.finetune(chosen)
        result = self.finish(finals)
        self.report("done", f"best score {result.score:.4f}, macs {result.macs}")
        return result


def search(
    model: nn.Module,
    example_inputs: Any,
    data: SearchData,
    spec: SearchSpec | Mapping[str, Any],
    *,
    pool: Pool | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str = "prunepilot",
    metric: Metric | None = None,
    loss_fn: LossFn | None = None,
    callback: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SearchResult:
    """Find per-group keep ratios that maximise ``metric`` within every budget.

    Args:
        model: the trained model (left unchanged).
        example_inputs: a tensor or tuple of inputs for one sample batch (shapes only; the
            latency target's batch size is applied when measuring).
        data: train/val (and optional score) loaders of ``(inputs, targets)``.
        spec: constraints, search space, search and fine-tune settings.
        pool: evaluators (default: in-process `LocalPool` on CPU); a Ray pool from
            `prunepilot.worker` evaluates several candidates at once.
        storage: where the Optuna study lives (URL, journal file path or storage object;
            default in memory). A study of the same name is resumed.
        study_name: the study's name.
        metric: ``metric(model, loader) -> float``, higher is better (default: top-1).
        loss_fn: training loss (default: cross-entropy).
        callback: receives `SearchProgress` reports.
        cancel: polled often; returning ``True`` stops the search (`SearchCancelled`).

    Raises:
        InfeasibleError: no model in the search space meets the budgets (the message gives
            the smallest reachable FLOPs/latency).
        SearchCancelled: ``cancel`` returned ``True``.
    """
    spec = spec if isinstance(spec, SearchSpec) else SearchSpec.model_validate(spec)
    own = pool is None
    pool = pool or LocalPool()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    driver = _Driver(
        model,
        example_inputs,
        data,
        spec,
        pool,
        open_storage(storage),
        study_name,
        metric,
        loss_fn,
        callback,
        cancel,
    )
    try:
        result = driver.run()
        result.storage = storage if isinstance(storage, str) else None
        return result
    finally:
        if own:
            pool.close()
