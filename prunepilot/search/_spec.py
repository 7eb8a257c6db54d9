"""The search's specification: budgets, the target device, the search space and settings.

Everything here is a pydantic v2 model because it crosses process boundaries (Ray workers)
and the network (the service's job spec). Budgets are absolute numbers or percentages of
the original model (``"50%"``).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

__all__ = [
    "Budget",
    "Constraints",
    "FinetuneSettings",
    "LatencyTarget",
    "SearchSettings",
    "SearchSpace",
    "SearchSpec",
]

_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")
_DEVICE_PATTERN = r"^(cpu|cuda(:0)?)$"
_INDEXED_CUDA = re.compile(r"^cuda:[0-9]+$")
_MAX_DEVICE_CHARS = 32
_MAX_IGNORE = 256
_MAX_PATTERN = 200
# hard bounds: anything beyond is a typo or an attack (the operator's limits are lower)
MAX_SEED = 2**32 - 1  # numpy's RandomState (Optuna's samplers) takes seeds below 2**32
MAX_STEPS = 10**7
MAX_BATCHES = 100_000
MAX_TRIALS = 100_000


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Budget(_Frozen):
    """An upper bound: an absolute amount, or a fraction of the original model's.

    Written as a number (absolute: MACs, parameters or milliseconds) or a string
    ``"25%"`` (relative). ``Budget.parse`` accepts both.
    """

    value: float = Field(gt=0)
    relative: bool = False

    @classmethod
    def parse(cls, raw: Any) -> Budget:
        """A budget from ``"50%"``, ``0.5`` with ``relative``, or an absolute number."""
        if isinstance(raw, Budget):
            return raw
        if isinstance(raw, dict):
            return cls.model_validate(raw)
        given = raw
        if isinstance(raw, str):
            m = _PERCENT.match(raw)
            if m:
                pct = float(m.group(1))
                if not 0 < pct <= 100:
                    raise ValueError(
                        f"a percentage budget must be in (0%, 100%]; got {_short(raw)}"
                    )
                return cls(value=pct / 100, relative=True)
            try:
                raw = float(raw)
            except ValueError:
                raise ValueError(
                    "a budget is a positive number or a percentage such as '50%'; got "
                    f"{_short(raw)}"
                ) from None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(
                f"a budget is a positive number or a percentage such as '50%'; got {_short(raw)}"
            )
        try:
            value = float(raw)
        except OverflowError:  # an int beyond float's range
            value = math.inf
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                "a budget is a finite positive number or a percentage such as '50%'; got "
                f"{_short(given)}"
            )
        return cls(value=value)

    @model_validator(mode="after")
    def _relative(self) -> Budget:
        if self.relative and (self.value > 1 or _percent_text(self.value) is None):
            raise ValueError(
                "a relative budget is a fraction in (0, 1] that a percentage such as '50%' "
                f"writes exactly; got {self.value!r}"
            )
        return self

    def limit(self, original: float) -> float:
        """The absolute bound, given the original model's amount."""
        return self.value * original if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def _percent_text(value: float) -> str | None:
    """The shortest ``"N%"`` that parses back to exactly ``value`` (``None``: none does).

    Stored specs are parsed again by the runner, so a relative budget must survive the
    round trip bit for bit (``:g`` would round ``12.3456789%`` and write ``1e-05%``).
    """
    for digits in range(1, 18):
        text = format(Decimal(f"{value * 100:.{digits}g}"), "f")
        if float(text) / 100 == value:
            return f"{text}%"
    return None


def _short(raw: Any) -> str:
    """``repr`` of a value, cut short (a huge number must not flood the error)."""
    text = repr(raw)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} chars)"


def _budget_or_none(raw: Any) -> Budget | None:
    return None if raw is None else Budget.parse(raw)


def _dump_budget(b: Budget | None) -> str | float | None:
    if b is None:
        return None
    return _percent_text(b.value) if b.relative else b.value


BudgetField = Annotated[
    Budget | None,
    BeforeValidator(_budget_or_none),
    PlainSerializer(_dump_budget, return_type=str | float | None),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                # a percentage in (0%, 100%] that `Budget.parse` takes (at most 300 zeros
                # after the point: a smaller share would round to 0)
                {
                    "type": "string",
                    "pattern": r"^ *(?:0*(?:[1-9][0-9]?(?:\.[0-9]+)?|100(?:\.0+)?)"
                    r"|0*\.0{0,300}[1-9][0-9]*) *% *$",
                },
                {"type": "null"},
            ],
            "description": "an absolute amount, or a percentage of the original ('50%')",
        }
    ),
]


def _device(raw: str) -> str:
    """``cpu`` or ``cuda``: a device type, not a local index (``cuda:0`` is read as ``cuda``).

    An evaluator on Ray holds one GPU, which it sees as ``cuda:0`` whatever the GPU's index
    on its node (Ray sets ``CUDA_VISIBLE_DEVICES``), so ``cuda:1`` names nothing there.
    """
    if raw in ("cpu", "cuda"):
        return raw
    if raw == "cuda:0":
        return "cuda"
    if _INDEXED_CUDA.match(raw):
        raise ValueError(
            f"device {_short(raw)} names a GPU by its index, but each GPU evaluator holds one "
            "GPU and sees it as cuda:0; write 'cuda' (the evaluator's own GPU) or 'cpu'"
        )
    raise ValueError(f"device must be 'cpu' or 'cuda' (the evaluator's own GPU); got {_short(raw)}")


DeviceName = Annotated[
    str,
    StringConstraints(max_length=_MAX_DEVICE_CHARS),
    AfterValidator(_device),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DEVICE_PATTERN,
            "description": "'cpu' or 'cuda' (the evaluator's own GPU; 'cuda:0' means the same)",
        }
    ),
]


class LatencyTarget(_Frozen):
    """Where and how latency is measured.

    Attributes:
        device: ``cpu`` or ``cuda``: the measuring evaluator's own GPU.
        batch_size: the batch measured (example inputs are resized along dim 0).
        dtype: ``fp32``, ``fp16`` or ``bf16`` (parameters and floating inputs cast).
        threads: CPU threads while measuring (``None``: torch's current setting).
        memory_format: ``contiguous`` (NCHW) or ``channels_last`` (4-d inputs only).
        warmup: untimed runs before measuring.
        repeats: timed runs; the median is reported.
    """

    device: DeviceName = "cpu"
    batch_size: int = Field(default=1, ge=1, le=4096)
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    threads: int | None = Field(default=None, ge=1, le=1024)
    memory_format: Literal["contiguous", "channels_last"] = "contiguous"
    warmup: int = Field(default=5, ge=0, le=10_000)
    repeats: int = Field(default=20, ge=1, le=10_000)


class Constraints(_Frozen):
    """Budgets that must all hold; at least one is required.

    Attributes:
        flops: MACs bound (absolute or ``"25%"`` of the original).
        params: parameter-count bound.
        latency_ms: latency bound in milliseconds, or a percentage of the original
            model's latency measured on ``target``.
        target: the device and settings latency is measured with.
    """

    # at least one budget (what `_any` checks), stated for clients
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("flops", "params", "latency_ms")
            ]
        }
    )

    flops: BudgetField = None
    params: BudgetField = None
    latency_ms: BudgetField = None
    target: LatencyTarget = LatencyTarget()

    @model_validator(mode="after")
    def _any(self) -> Constraints:
        if self.flops is None and self.params is None and self.latency_ms is None:
            raise ValueError("give at least one constraint: flops, params or latency_ms")
        return self


class SearchSpace(_Frozen):
    """Per-group keep ratios the search chooses from.

    Attributes:
        min_ratio: the smallest fraction of a group's channels kept.
        max_ratio: the largest fraction kept (1.0: the group may stay whole); not below
            ``min_ratio``.
        step: keep ratios are ``min_ratio + k * step`` up to ``max_ratio``.
        round_to: kept channel counts are multiples of this (e.g. 8 for tensor cores).
        ignore: module, parameter or group-id patterns (``fnmatch``) never pruned.
        tie: one shared ratio for groups of identical structure (same width and the same
            kinds and shapes of producing layers): fewer dimensions, faster search.
    """

    min_ratio: float = Field(default=0.1, gt=0, le=1)
    max_ratio: float = Field(default=1.0, gt=0, le=1)
    step: float = Field(default=0.05, ge=0.001, le=1)  # at most 1000 ratios on the grid
    round_to: int = Field(default=1, ge=1, le=4096)
    ignore: tuple[Annotated[str, StringConstraints(min_length=1, max_length=_MAX_PATTERN)], ...] = (
        Field(default=(), max_length=_MAX_IGNORE)
    )
    tie: bool = False

    @model_validator(mode="after")
    def _order(self) -> SearchSpace:
        if self.min_ratio > self.max_ratio:
            raise ValueError(
                f"min_ratio ({self.min_ratio}) must not exceed max_ratio ({self.max_ratio})"
            )
        return self

    def choices(self) -> tuple[float, ...]:
        """The keep ratios on the grid, ascending (``max_ratio`` only when on the grid)."""
        out: list[float] = []
        k = 0
        while True:
            r = round(self.min_ratio + k * self.step, 6)
            if r > self.max_ratio + 1e-9:
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
