"""The registry of channel rules, and helpers every rule module shares.

A rule reads the atom arrays of an op's tensor inputs, unites atoms that must be removed
together, pins atoms whose removal the op cannot follow, and sets the atom arrays of the
outputs. Ops are recognised by their overload packet or by ATen's own ``pointwise`` tag,
never by name matching. An op with no rule pins all atoms it touches, with a reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._analysis import Analysis, record_inputs, tensor_refs
from ._capture import OpRecord, Ref

__all__ = [
    "RULES",
    "UNBOUND",
    "Rule",
    "arr",
    "aten",
    "first_input",
    "norm_dims",
    "ops",
    "out_ref",
    "rule",
    "unbound",
    "unknown",
]

aten = torch.ops.aten
Rule = Callable[[Analysis, OpRecord, dict[str, Any]], None]
RULES: dict[Any, Rule] = {}
# Rules that read no argument by name: they get an empty dict, sparing a schema binding on
# the most frequent ops (pointwise ones).
UNBOUND: set[Rule] = set()


def rule(*packets: Any) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for p in packets:
            if p is not None:
                RULES[p] = fn
        return fn

    return deco


def unbound(fn: Rule) -> Rule:
    """Mark a rule as reading no argument by name (see `UNBOUND`)."""
    UNBOUND.add(fn)
    return fn


def ops(*names: str) -> list[Any]:
    """Overload packets that exist in this torch build (names vary across versions)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def arr(a: np.ndarray | None) -> np.ndarray:
    assert a is not None
    return a


def out_ref(rec: OpRecord, i: int = 0) -> Ref | None:
    return rec.outputs[i] if i < len(rec.outputs) else None


def norm_dims(dims: Any, ndim: int) -> list[int]:
    if dims is None:
        return list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    if len(dims) == 0:
        return list(range(ndim))
    return [d % ndim if ndim else 0 for d in dims]


def first_input(
    an: Analysis, rec: OpRecord
) -> tuple[Ref, list[np.ndarray | None], tuple[int, ...]]:
    """The op's first tensor argument: its reference, atom arrays and shape."""
    x = rec.args[0] if rec.args else None
    if not isinstance(x, Ref):  # (e.g. a list of tensors: its first)
        x = tensor_refs(list(rec.args[:1]))[0]
    return x, an.dims(x), an.cap.shapes[x.node]


def unknown(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    name = rec.name
    an.unknown_ops[name] = an.unknown_ops.get(name, 0) + 1
    an.pin_all(record_inputs(rec), f"op {name} has no channel rule")
    for o in rec.outputs:
        if o is not None:
            an.set(o, [None] * len(an.shape(o)))
