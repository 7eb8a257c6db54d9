"""What a search explores and how it runs: the space, the settings, fine-tuning, the whole spec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, StringConstraints, model_validator

from ._budget import Constraints
from ._common import MAX_BATCHES, MAX_SEED, MAX_STEPS, MAX_TRIALS, DeviceName, _Frozen

__all__ = ["FinetuneSettings", "SearchSettings", "SearchSpace", "SearchSpec"]

_MAX_IGNORE = 256
_MAX_PATTERN = 200


class SearchSpace(_Frozen):
    """Per-group keep ratios the search chooses from.

    Attributes:
        min_keep: the smallest fraction of a group's channels kept (``min_ratio``, its old
            name, is accepted until the next release).
        max_keep: the largest fraction kept (1.0: the group may stay whole); not below
            ``min_keep`` (``max_ratio``, its old name, is accepted until the next release).
        step: kept fractions are ``min_keep + k * step`` up to ``max_keep``.
        round_to: kept channel counts are multiples of this (e.g. 8 for tensor cores).
        ignore: module, parameter or group-id patterns (``fnmatch``) never pruned.
        tie: one shared ratio for groups of identical structure (same width and the same
            kinds and shapes of producing layers): fewer dimensions, faster search.
    """

    min_keep: float = Field(
        default=0.1,
        gt=0,
        le=1,
        validation_alias=AliasChoices("min_keep", "min_ratio"),
        description="smallest fraction of a group's channels kept ('min_ratio': deprecated)",
    )
    max_keep: float = Field(
        default=1.0,
        gt=0,
        le=1,
        validation_alias=AliasChoices("max_keep", "max_ratio"),
        description="largest fraction of a group's channels kept ('max_ratio': deprecated)",
    )
    step: float = Field(default=0.05, ge=0.001, le=1)  # at most 1000 ratios on the grid
    round_to: int = Field(default=1, ge=1, le=4096)
    ignore: tuple[Annotated[str, StringConstraints(min_length=1, max_length=_MAX_PATTERN)], ...] = (
        Field(default=(), max_length=_MAX_IGNORE)
    )
    tie: bool = False

    @model_validator(mode="after")
    def _order(self) -> SearchSpace:
        if self.min_keep > self.max_keep:
            raise ValueError(
                f"min_keep ({self.min_keep}) must not exceed max_keep ({self.max_keep})"
            )
        return self

    def choices(self) -> tuple[float, ...]:
        """The kept fractions on the grid, ascending (``max_keep`` only when on the grid)."""
        out: list[float] = []
        k = 0
        while True:
            r = round(self.min_keep + k * self.step, 6)
            if r > self.max_keep + 1e-9:
                break
            out.append(r)
            k += 1
        return tuple(out)


class SearchSettings(_Frozen):
    """How the search runs.

    Attributes:
        sampler: ``tpe`` (constrained TPE: one best model) or ``nsga2`` (a Pareto front of
            metric vs latency, or vs MACs without a latency budget).
        trials: candidates evaluated (including the uniform seeds).
        uniform_seeds: uniform configurations enqueued first (spread over the ratio range).
        seed: random seed of the sampler.
        criterion: channel importance criterion (`prunepilot.search.available_criteria`).
        calib_batches: training batches for data-driven importance.
        bn_batches: batches for adaptive BatchNorm recalibration of each candidate.
        score_batches: held-out batches each candidate is scored on.
        score_steps: fine-tune steps per candidate before its cheap score (0: none).
        top_k: candidates fine-tuned with the full budget at the end (plus the best
            baseline when it is not among them).
        rungs: successive-halving rungs between the cheap score and the finalists
            (Hyperband's inner loop): the best ``top_k * eta**rungs`` searched candidates
            by cheap score and every baseline get a short fine-tune with the finalists'
            recipe (distillation included) of ``finetune.steps / eta**(rungs - r)`` steps
            at rung ``r`` and are scored on the held-out split; the best ``1/eta`` of each
            rung (at least ``top_k``) go on, the best ``top_k`` of the last are the
            finalists. The cheap score alone ranks well at mild budgets but close to
            randomly at aggressive ones; a short recovery predicts the long one far better.
            0: finalists by cheap score alone.
        eta: the halving factor of the rungs (candidates kept and steps grown per rung).
        latency_model: predict latency with a per-layer lookup table and only measure
            promising candidates and finalists (``False``: measure every candidate).
        latency_margin: candidates predicted above ``budget * (1 + margin)`` are rejected
            unmeasured.
        fill_budget: ``tpe`` only: scale each sampled config by one factor to the largest
            that meets the budgets (analytic FLOPs/params, predicted latency), so the
            sampler searches the shape of the allocation and no candidate wastes budget.
        latency_slack: the headroom under the latency budget that a candidate needs to
            count as within it before the final check: budget filling and the baselines'
            sizing aim at a predicted ``(1 - slack) * budget``, and a measured candidate
            is feasible (may become a finalist) only at ``(1 - slack) * budget`` or less,
            so that the winner's re-measurement, which must meet the budget itself, does
            not fail on measurement noise alone.
        latency_fit_samples: random configs (filled to the budget) measured before the
            search to fit the latency model's correction beyond the uniform seeds.
        baselines: allocations whose exact plans at the budgets (not snapped to the ratio
            grid) are evaluated like every candidate before the search, on top of
            ``trials``; the best of them by cheap score is always a finalist, so the
            search never returns a model worse than these after the same fine-tune
            (``uniform``, ``global``, ``lamp``; empty: none).
        latency_anchor: time every candidate interleaved with the original model and
            express its latency in the frame of the original's first measurement
            (``candidate / original now * original at the start``), so that a device
            whose speed drifts under other load (a shared CPU) does not move the budget
            during the search. Costs twice the timed runs per measurement.
    """

    sampler: Literal["tpe", "nsga2"] = "tpe"
    trials: int = Field(default=40, ge=1, le=MAX_TRIALS)
    uniform_seeds: int = Field(default=4, ge=0, le=MAX_TRIALS)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    criterion: str = Field(default="l2", min_length=1, max_length=100)
    calib_batches: int = Field(default=8, ge=1, le=MAX_BATCHES)
    bn_batches: int = Field(default=10, ge=0, le=MAX_BATCHES)
    score_batches: int = Field(default=10, ge=1, le=MAX_BATCHES)
    score_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    top_k: int = Field(default=2, ge=1, le=1000)
    rungs: int = Field(default=2, ge=0, le=4)
    eta: int = Field(default=3, ge=2, le=8)
    latency_model: bool = True
    latency_margin: float = Field(default=0.1, ge=0, le=100)
    fill_budget: bool = True
    latency_slack: float = Field(default=0.03, ge=0, lt=0.5)
    latency_fit_samples: int = Field(default=10, ge=0, le=10_000)
    latency_anchor: bool = True
    baselines: tuple[Literal["uniform", "global", "lamp"], ...] = Field(
        default=("uniform", "global", "lamp"),
        max_length=3,
        json_schema_extra={"uniqueItems": True},
    )

    @model_validator(mode="after")
    def _distinct_baselines(self) -> SearchSettings:
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines must not repeat a name; got {list(self.baselines)}")
        return self


class FinetuneSettings(_Frozen):
    """Fine-tuning of the finalists (SGD with Nesterov momentum, cosine decay).

    Attributes:
        steps: optimizer steps per finalist (0: no fine-tuning).
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        distill: distil from the unpruned model (knowledge distillation).
        device: where finalists train, ``cpu`` or ``cuda`` (``None``: the worker's device).
    """

    steps: int = Field(default=200, ge=0, le=MAX_STEPS)
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    distill: bool = False
    device: DeviceName | None = None


class SearchSpec(_Frozen):
    """Everything a search needs besides the model and data."""

    constraints: Constraints
    space: SearchSpace = SearchSpace()
    search: SearchSettings = SearchSettings()
    finetune: FinetuneSettings = FinetuneSettings()
