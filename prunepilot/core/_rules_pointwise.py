"""Rules for pointwise, identity-like and tensor-creating ops."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._analysis import Analysis, Dims, record_inputs, tensor_refs
from ._capture import OpRecord
from ._registry import aten, first_input, ops, out_ref, rule, unbound

_NOT_SPREAD: frozenset[int] = frozenset()


@unbound
def elementwise(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """Broadcasting pointwise op: aligned dims of the same size are the same channels."""
    out = out_ref(rec)
    if out is None:
        return
    shapes = an.cap.shapes
    out_shape = shapes[out.node]
    nd = len(out_shape)
    ins = record_inputs(rec)
    names, broadcast = an.cap.names, an.broadcast
    if len(ins) == 1 and shapes[ins[0].node] == out_shape:
        node = ins[0].node
        if node not in names and node not in broadcast:
            # One activation of the output's shape (an activation function): every dim
            # passes as it is, as the general case below would find.
            same = an.peek(ins[0])
            for o in rec.outputs:
                if o is not None and shapes[o.node] == out_shape:
                    an.set(o, list(same))
            return
    per_dim: list[list[np.ndarray | None]] = [[] for _ in range(nd)]
    for r in ins:
        shape = shapes[r.node]
        dims = an.peek(r)
        if r.node in names:
            for d in dims:
                an.tag(d)
        if len(shape) > nd:
            an.pin_all([r], f"{rec.name} reduces a tracked tensor by broadcasting")
            continue
        spread = broadcast.get(r.node, _NOT_SPREAD)
        off = nd - len(shape)
        for j, s in enumerate(shape):
            if j in spread:  # expanded from size 1: adapts to any size, like broadcasting
                continue
            d = dims[j]
            if s == out_shape[j + off]:
                per_dim[j + off].append(d)
            elif d is not None and s > 0:
                an.atoms.pin(d, f"{rec.name} broadcasts a one-channel dimension")
    # (`join` of one array is that array: most dims have a single one)
    res: Dims = [
        arrs[0]
        if len(arrs) == 1
        else an.join(arrs, out_shape[i], rec, "combines it with a tensor of fixed size")
        for i, arrs in enumerate(per_dim)
    ]
    for o in rec.outputs:
        if o is not None and shapes[o.node] == out_shape:
            an.set(o, list(res))


@unbound
def _identity(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    src = tensor_refs(list(rec.args[:1]))
    if not src:
        return _creation(an, rec, b)
    dims = an.dims(src[0])
    for o in rec.outputs:
        if o is not None and an.shape(o) == an.shape(src[0]):
            an.set(o, list(dims))
        elif o is not None:
            an.set(o, [None] * len(an.shape(o)))


rule(
    *ops(
        "clone",
        "detach",
        "alias",
        "lift_fresh",
        "lift_fresh_copy",
        "_to_copy",
        "contiguous",
        "empty_like",
        "zeros_like",
        "ones_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "zero_",
        "fill_",
        "fill",
        "bernoulli_",
        "bernoulli",
        "uniform_",
        "normal_",
        "native_dropout",
        "dropout",
        "feature_dropout",
        "_softmax",
        "_log_softmax",
        "softmax",
        "log_softmax",
        "cumsum",
        "cumprod",
        "_safe_softmax",
        "resize_",
        "_conj",
        "_neg_view",
        "cauchy_",
        "exponential_",
        "geometric_",
        "log_normal_",
        "random_",
        "detach_",
        "requires_grad_",
    )
)(_identity)


@unbound
def _creation(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    for o in rec.outputs:
        if o is not None:
            an.set(o, [None] * len(an.shape(o)))


rule(
    *ops(
        "empty",
        "zeros",
        "ones",
        "full",
        "arange",
        "rand",
        "randn",
        "randint",
        "randperm",
        "scalar_tensor",
        "linspace",
        "logspace",
        "eye",
        "tensor",
        "empty_strided",
        "new_empty",
        "new_zeros",
        "new_ones",
        "new_full",
        "new_empty_strided",
        "tril_indices",
        "triu_indices",
        "_local_scalar_dense",
        "sym_size",
        "lift",
    )
)(_creation)


# Pointwise ops that ATen does not tag as such.
rule(
    *ops(
        "copy_",
        "copy",
        "hardswish",
        "hardswish_",
        "log_sigmoid_forward",
        "rrelu_with_noise",
        "rrelu_with_noise_",
        "rsub",
        "masked_fill",
        "masked_fill_",
        "where",
        "_masked_scale",
        "masked_scale",
        "_prelu_kernel",
    )
)(elementwise)


@rule(*ops("glu"))
def _glu(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """glu halves a dimension: channel i gates with channel i + n/2, so they go together."""
    _x, dims, _ = first_input(an, rec)
    d = b.get("dim", -1) % len(dims)
    a = dims[d]
    if a is not None:
        half = len(a) // 2
        an.atoms.unite(a[:half], a[half:])
        dims[d] = a[:half].copy()
    an.set(out_ref(rec), dims)


_POINTWISE_CACHE: dict[Any, bool] = {}


def _packet_pointwise(packet: Any) -> bool:
    hit = _POINTWISE_CACHE.get(packet)
    if hit is None:
        hit = any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
        _POINTWISE_CACHE[packet] = hit
    return hit


def is_pointwise(func: torch._ops.OpOverload) -> bool:
    """ATen's pointwise tag on any overload of the op or of its out-of-place form."""
    packet = func.overloadpacket
    if torch.Tag.pointwise in func.tags or _packet_pointwise(packet):
        return True
    name = packet.__name__
    if name.endswith("_") and not name.startswith("_"):
        base = getattr(aten, name[:-1], None)
        return base is not None and _packet_pointwise(base)
    return False
