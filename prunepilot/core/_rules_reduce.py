"""Rules for reductions and ops that return positions."""

from __future__ import annotations

from typing import Any

from ._analysis import Analysis, Dims
from ._capture import OpRecord, Ref
from ._registry import first_input, norm_dims, ops, rule
from ._rules_pointwise import elementwise


@rule(
    *ops(
        "sum",
        "mean",
        "amax",
        "amin",
        "var",
        "std",
        "var_mean",
        "std_mean",
        "prod",
        "max",
        "min",
        "logsumexp",
        "linalg_vector_norm",
        "norm",
        "any",
        "all",
        "nansum",
        "nanmean",
        "count_nonzero",
        "aminmax",
    )
)
def _reduce(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, shape = first_input(an, rec)
    red = b.get("dim")
    if red is None and "dims" in b:
        red = b["dims"]
    if isinstance(red, Ref):  # e.g. max(self, other) is elementwise
        return elementwise(an, rec, b)
    keep = bool(b.get("keepdim", False))
    if red is None and len(rec.args) > 1 and isinstance(rec.args[1], Ref):
        return elementwise(an, rec, b)
    rd = set(norm_dims(red, len(shape)))
    res: Dims = []
    for i, d in enumerate(dims):
        if i in rd:
            if keep:
                res.append(None)
        else:
            res.append(d)
    for o in rec.outputs:
        if o is None:
            continue
        if len(an.shape(o)) == len(res):
            an.set(o, list(res))
        else:
            an.set(o, [None] * len(an.shape(o)))


@rule(
    *ops(
        "argmax",
        "argmin",
        "topk",
        "sort",
        "argsort",
        "kthvalue",
        "median",
        "mode",
        "cummax",
        "cummin",
        "msort",
    )
)
def _ordering(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """Ops whose results are positions along a dimension: that dimension cannot shrink."""
    _x, dims, shape = first_input(an, rec)
    red = b.get("dim")
    rd = set(norm_dims(red, len(shape)) if red is not None else range(len(shape)))
    for i in rd:
        an.atoms.pin(dims[i], f"{rec.name} returns positions along this dimension")
    for o in rec.outputs:
        if o is None:
            continue
        od = an.shape(o)
        if len(od) == len(shape):
            an.set(o, [None if i in rd else d for i, d in enumerate(dims)])
        elif len(od) == len(shape) - len(rd):
            an.set(o, [d for i, d in enumerate(dims) if i not in rd])
        else:
            an.set(o, [None] * len(od))
