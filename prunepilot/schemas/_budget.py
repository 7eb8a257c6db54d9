"""Budgets: how much of the original model a candidate may use, and where latency is timed.

Budgets are absolute numbers or percentages of the original model (``"50%"``).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from ._common import DeviceName, _Frozen, _short

__all__ = ["Budget", "BudgetField", "Constraints", "LatencyTarget"]

_BUDGETS = ("macs", "flops", "params", "latency_ms")
_FLOPS_PER_MAC = 2  # a multiply-add is two floating-point operations
_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


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

    Compute may be bounded in MACs, in FLOPs, or both (the tighter one holds); the search
    counts MACs, at 2 FLOPs per multiply-add (torch's ``flop_counter`` convention).

    Attributes:
        macs: multiply-accumulate bound (absolute or ``"25%"`` of the original).
        flops: floating-point operation bound, 2 per multiply-add: an absolute ``flops``
            is ``flops / 2`` MACs; a percentage is the same fraction of either.
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
                for name in _BUDGETS
            ]
        }
    )

    macs: BudgetField = None
    flops: BudgetField = None
    params: BudgetField = None
    latency_ms: BudgetField = None
    target: LatencyTarget = LatencyTarget()

    @model_validator(mode="after")
    def _any(self) -> Constraints:
        if all(getattr(self, name) is None for name in _BUDGETS):
            raise ValueError("give at least one constraint: macs, flops, params or latency_ms")
        return self

    def mac_budgets(self) -> list[Budget]:
        """The compute bounds in MACs: ``macs`` as given, then ``flops`` halved.

        A relative budget is the same fraction of the original's MACs or FLOPs, so a
        percentage passes unchanged; an absolute FLOPs bound allows half as many MACs.
        """
        out = [] if self.macs is None else [self.macs]
        if self.flops is not None:
            flops = self.flops
            out.append(flops if flops.relative else Budget(value=flops.value / _FLOPS_PER_MAC))
        return out
