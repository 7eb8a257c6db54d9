"""One channel rule per ATen op family.

A rule reads the atom arrays of an op's tensor inputs, unites atoms that must be removed
together, pins atoms whose removal the op cannot follow, and sets the atom arrays of the
outputs. Ops are recognised by their overload packet or by ATen's own ``pointwise`` tag,
never by name matching. An op with no rule pins all atoms it touches, with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._analysis import Analysis, Dims, bind, record_inputs, tensor_refs
from ._atoms import FIXED
from ._capture import OpRecord, Ref

__all__ = ["RULES", "apply_rule"]

aten = torch.ops.aten
Rule = Callable[[Analysis, OpRecord, dict[str, Any]], None]
RULES: dict[Any, Rule] = {}


def _rule(*packets: Any) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for p in packets:
            if p is not None:
                RULES[p] = fn
        return fn

    return deco


def _ops(*names: str) -> list[Any]:
    """Overload packets that exist in this torch build (names vary across versions)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def _arr(a: np.ndarray | None) -> np.ndarray:
    assert a is not None
    return a


def _out(rec: OpRecord, i: int = 0) -> Ref | None:
    return rec.outputs[i] if i < len(rec.outputs) else None


def _norm_dims(dims: Any, ndim: int) -> list[int]:
    if dims is None:
        return list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    if len(dims) == 0:
        return list(range(ndim))
    return [d % ndim if ndim else 0 for d in dims]


# ----------------------------------------------------------------------------------------
# elementwise and identity-like ops
def elementwise(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """Broadcasting pointwise op: aligned dims of the same size are the same channels."""
    out = _out(rec)
    if out is None:
        return
    out_shape = an.shape(out)
    nd = len(out_shape)
    per_dim: list[list[np.ndarray | None]] = [[] for _ in range(nd)]
    for r in record_inputs(rec):
        shape = an.shape(r)
        dims = an.dims(r)
        if r.node in an.cap.names:
            for d in dims:
                an.tag(d)
        if len(shape) > nd:
            an.pin_all([r], f"{rec.func} reduces a tracked tensor by broadcasting")
            continue
        for j, (s, d) in enumerate(zip(shape, dims, strict=True)):
            i = j + nd - len(shape)
            if s == out_shape[i]:
                per_dim[i].append(d)
            elif d is not None and s > 0:
                an.atoms.pin(d, f"{rec.func} broadcasts a one-channel dimension")
    res: Dims = [
        an.join(arrs, out_shape[i], f"{rec.func} combines it with a tensor of fixed size")
        for i, arrs in enumerate(per_dim)
    ]
    for o in rec.outputs:
        if o is not None and an.shape(o) == out_shape:
            an.set(o, list(res))


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


_rule(
    *_ops(
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


def _creation(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    for o in rec.outputs:
        if o is not None:
            an.set(o, [None] * len(an.shape(o)))


_rule(
    *_ops(
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
_rule(
    *_ops(
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
    )
)(elementwise)


@_rule(*_ops("glu"))
def _glu(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """glu halves a dimension: channel i gates with channel i + n/2, so they go together."""
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    d = b.get("dim", -1) % len(dims)
    a = dims[d]
    if a is not None:
        half = len(a) // 2
        an.atoms.unite(a[:half], a[half:])
        dims[d] = a[:half].copy()
    an.set(_out(rec), dims)


# ----------------------------------------------------------------------------------------
# reductions
@_rule(
    *_ops(
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
    x = tensor_refs(list(rec.args[:1]))[0]
    shape = an.shape(x)
    dims = an.dims(x)
    red = b.get("dim")
    if red is None and "dims" in b:
        red = b["dims"]
    if isinstance(red, Ref):  # e.g. max(self, other) is elementwise
        return elementwise(an, rec, b)
    keep = bool(b.get("keepdim", False))
    if red is None and len(rec.args) > 1 and isinstance(rec.args[1], Ref):
        return elementwise(an, rec, b)
    rd = set(_norm_dims(red, len(shape)))
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


@_rule(
    *_ops(
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
    x = tensor_refs(list(rec.args[:1]))[0]
    shape = an.shape(x)
    dims = an.dims(x)
    red = b.get("dim")
    rd = set(_norm_dims(red, len(shape)) if red is not None else range(len(shape)))
    for i in rd:
        an.atoms.pin(dims[i], f"{rec.func} returns positions along this dimension")
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


# ----------------------------------------------------------------------------------------
# views and layout
def reshape_dims(
    an: Analysis, dims: Dims, src: tuple[int, ...], dst: tuple[int, ...], where: str
) -> Dims:
    """Carry atoms through a reshape: merged dims repeat atoms, split dims keep the innermost."""
    out: Dims = [None] * len(dst)
    if math.prod(src) == 0:
        return out
    chunks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        ins, outs = [i], [j]
        pi, po = src[i], dst[j]
        i += 1
        j += 1
        while pi != po:
            if pi < po:
                ins.append(i)
                pi *= src[i]
                i += 1
            else:
                outs.append(j)
                po *= dst[j]
                j += 1
        chunks.append((ins, outs))
    if chunks:
        chunks[-1][0].extend(range(i, len(src)))
        chunks[-1][1].extend(range(j, len(dst)))
    else:
        return out
    for ins, outs in chunks:
        tracked = [k for k in ins if dims[k] is not None and src[k] > 1]
        if len(tracked) > 1:  # pinned dims keep their size: treat them as untracked
            tracked = [k for k in tracked if not an.atoms.pinned(_arr(dims[k]))] or tracked[:1]
        if not tracked:
            if len(ins) == 1 and len(outs) == 1 and dims[ins[0]] is not None:
                out[outs[0]] = dims[ins[0]]
            continue
        if len(ins) == 1 and len(outs) == 1:
            out[outs[0]] = dims[ins[0]]
            continue
        keep_dim = tracked[0]
        for k in tracked[1:]:
            an.atoms.pin(dims[k], f"{where} merges two channel dimensions")
        sizes = [src[k] for k in ins]
        view = [1] * len(ins)
        view[ins.index(keep_dim)] = src[keep_dim]
        a = dims[keep_dim]
        assert a is not None
        full = np.broadcast_to(a.reshape(view), sizes).reshape([dst[k] for k in outs])
        varying = [
            n
            for n in range(full.ndim)
            if full.shape[n] > 1 and not (full == full.take([0], axis=n)).all()
        ]
        if not varying:
            continue
        inner = varying[-1]
        moved = np.moveaxis(full, inner, -1).reshape(-1, full.shape[inner])
        for row in moved[1:]:
            an.atoms.unite(moved[0], row)
        out[outs[inner]] = moved[0].copy()
    return out


@_rule(
    *_ops(
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "view_copy",
        "flatten",
        "unflatten",
        "_reshape_copy",
    )
)
def _view(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    out = _out(rec)
    if out is None:
        return
    an.set(out, reshape_dims(an, an.dims(x), an.shape(x), an.shape(out), str(rec.func)))


@_rule(*_ops("permute", "permute_copy"))
def _permute(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    order = _norm_dims(b["dims"], len(dims))
    an.set(_out(rec), [dims[k] for k in order])


@_rule(*_ops("transpose", "transpose_", "transpose_copy", "swapaxes", "swapdims"))
def _transpose(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    if len(dims) < 2:
        an.set(_out(rec), dims)
        return
    d0 = b.get("dim0", 0) % len(dims)
    d1 = b.get("dim1", 1) % len(dims)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    an.set(_out(rec), dims)


@_rule(*_ops("t", "t_", "t_copy", "numpy_T", "mT", "adjoint"))
def _t(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    if len(dims) >= 2:
        dims[-1], dims[-2] = dims[-2], dims[-1]
    an.set(_out(rec), dims)


@_rule(*_ops("unsqueeze", "unsqueeze_", "unsqueeze_copy"))
def _unsqueeze(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    d = b["dim"] % (len(dims) + 1)
    dims.insert(d, None)
    an.set(_out(rec), dims)


@_rule(*_ops("squeeze", "squeeze_", "squeeze_copy"))
def _squeeze(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    shape = an.shape(x)
    sel = b.get("dim")
    cand = set(_norm_dims(sel, len(shape))) if sel is not None else set(range(len(shape)))
    gone = {i for i in cand if shape[i] == 1}
    an.set(_out(rec), [d for i, d in enumerate(dims) if i not in gone])


@_rule(*_ops("expand", "expand_copy", "expand_as", "broadcast_to"))
def _expand(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    shape = an.shape(x)
    out = _out(rec)
    if out is None:
        return
    oshape = an.shape(out)
    lead = len(oshape) - len(shape)
    res: Dims = [None] * lead
    for s, d, o in zip(shape, dims, oshape[lead:], strict=True):
        if s == o:
            res.append(d)
        else:
            an.atoms.pin(d, f"{rec.func} repeats a one-channel dimension")
            res.append(None)
    an.set(out, res)


@_rule(*_ops("slice", "slice_copy", "narrow", "narrow_copy"))
def _slice(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    shape = an.shape(x)
    d = b.get("dim", 0) % max(len(shape), 1)
    out = _out(rec)
    if out is None:
        return
    a = dims[d]
    if a is not None:
        if "length" in b:  # narrow
            start = b["start"] if isinstance(b["start"], int) else 0
            stop, step = start + b["length"], 1
        else:
            start = b.get("start") or 0
            stop = b.get("end")
            step = b.get("step") or 1
        start, stop, step = slice(start, stop, step).indices(shape[d])
        taken = a[start:stop:step]
        if taken.shape[0] != shape[d]:
            an.atoms.pin(a, f"{rec.func} takes a fixed range of channels")
        dims[d] = taken
    an.set(out, dims)


@_rule(*_ops("select", "select_copy"))
def _select(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    d = b["dim"] % len(dims)
    if an.shape(x)[d] > 1:
        an.atoms.pin(dims[d], f"{rec.func} picks one fixed channel")
    del dims[d]
    an.set(_out(rec), dims)


@_rule(
    *_ops(
        "split",
        "split_with_sizes",
        "unsafe_split",
        "unsafe_split_with_sizes",
        "split_copy",
        "split_with_sizes_copy",
        "tensor_split",
        "chunk",
    )
)
def _split(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    shape = an.shape(x)
    d = b.get("dim", 0) % len(shape)
    a = dims[d]
    outs = [o for o in rec.outputs if o is not None]
    sizes = [an.shape(o)[d] for o in outs]
    pos = 0
    segs: list[np.ndarray] = []
    for o, s in zip(outs, sizes, strict=True):
        od = list(dims)
        if a is not None:
            od[d] = a[pos : pos + s]
            segs.append(a[pos : pos + s])
        pos += s
        an.set(o, od)
    if a is not None and len(segs) > 1:
        if len(set(sizes)) == 1 and rec.func.overloadpacket in (aten.split, aten.unsafe_split):
            an.segments.append(segs)  # chunk(n): equal parts stay equal after pruning
        else:
            an.atoms.pin(a, f"{rec.func} splits channels at fixed sizes {sizes}")


@_rule(*_ops("unbind", "unbind_copy"))
def _unbind(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    d = b.get("dim", 0) % len(dims)
    if an.shape(x)[d] > 1:
        an.atoms.pin(dims[d], f"{rec.func} picks fixed channels")
    rest = dims[:d] + dims[d + 1 :]
    for o in rec.outputs:
        if o is not None:
            an.set(o, list(rest))


@_rule(*_ops("cat", "concat", "concatenate", "_cat"))
def _cat(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    refs = [r for r in tensor_refs(b["tensors"]) if an.shape(r) != (0,)]
    out = _out(rec)
    if out is None or not refs:
        return
    oshape = an.shape(out)
    d = b.get("dim", 0) % len(oshape)
    parts: list[np.ndarray] = []
    any_tracked = False
    for r in refs:
        a = an.dims(r)[d]
        if a is None:
            parts.append(np.full(an.shape(r)[d], FIXED, dtype=np.int64))
        else:
            any_tracked = True
            parts.append(a)
    res: Dims = []
    for i in range(len(oshape)):
        if i == d:
            res.append(np.concatenate(parts) if any_tracked else None)
        else:
            res.append(
                an.join(
                    [an.dims(r)[i] for r in refs],
                    oshape[i],
                    f"{rec.func} joins it with an untracked tensor",
                )
            )
    an.set(out, res)


@_rule(*_ops("stack", "hstack", "vstack"))
def _stack(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    refs = tensor_refs(b["tensors"])
    out = _out(rec)
    if out is None or not refs:
        return
    if rec.func.overloadpacket is not aten.stack:
        return _unknown(an, rec, b)
    oshape = an.shape(out)
    d = b.get("dim", 0) % len(oshape)
    ishape = an.shape(refs[0])
    res: Dims = [
        an.join(
            [an.dims(r)[i] for r in refs],
            ishape[i],
            f"{rec.func} joins it with an untracked tensor",
        )
        for i in range(len(ishape))
    ]
    res.insert(d, None)
    an.set(out, res)


@_rule(*_ops("flip"))
def _flip(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    for d in _norm_dims(b["dims"], len(dims)):
        a = dims[d]
        if a is not None:
            dims[d] = a[::-1].copy()
    an.set(_out(rec), dims)


@_rule(*_ops("roll"))
def _roll(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    rd = b.get("dims") or []
    for d in _norm_dims(rd, len(dims)) if rd else range(len(dims)):
        an.atoms.pin(dims[d], f"{rec.func} shifts channels by a fixed amount")
    an.set(_out(rec), dims)


@_rule(*_ops("repeat"))
def _repeat(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    reps = list(b["repeats"])
    lead = len(reps) - len(dims)
    res: Dims = [None] * lead
    for d, r in zip(dims, reps[lead:], strict=True):
        res.append(None if d is None else np.tile(d, r))
    an.set(_out(rec), res)


@_rule(
    *_ops(
        "constant_pad_nd",
        "reflection_pad1d",
        "reflection_pad2d",
        "reflection_pad3d",
        "replication_pad1d",
        "replication_pad2d",
        "replication_pad3d",
        "_pad_circular",
        "pad",
    )
)
def _pad(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    pad = list(b.get("pad") or b.get("padding") or [])
    for k in range(len(pad) // 2):
        d = len(dims) - 1 - k
        if (pad[2 * k] or pad[2 * k + 1]) and d >= 0 and dims[d] is not None:
            an.atoms.pin(dims[d], f"{rec.func} pads a channel dimension")
            dims[d] = None
    out = _out(rec)
    if out is not None:
        an.set(out, dims)


@_rule(*_ops("index_select"))
def _index_select(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    d = b["dim"] % len(dims)
    an.atoms.pin(dims[d], f"{rec.func} indexes channels by fixed positions")
    dims[d] = None
    an.atoms.pin(an.dims(b["index"])[0], "it is an index")
    an.set(_out(rec), dims)


@_rule(*_ops("index", "_unsafe_index"))
def _index(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    idx = list(b["indices"])
    out = _out(rec)
    if out is None:
        return
    pos = [i for i, t in enumerate(idx) if t is not None]
    for i in pos:
        an.atoms.pin(dims[i], f"{rec.func} indexes channels by fixed positions")
        for r in tensor_refs(idx[i]):
            an.pin_all([r], "it is an index")
    oshape = an.shape(out)
    rest = [d for i, d in enumerate(dims) if i not in pos]
    n_idx = len(oshape) - len(rest)
    contiguous = pos == list(range(pos[0], pos[-1] + 1)) if pos else True
    if contiguous and pos:
        res = dims[: pos[0]] + [None] * n_idx + dims[pos[-1] + 1 :]
    else:
        res = [*([None] * n_idx), *rest]
    if len(res) != len(oshape):
        an.pin_all([x], f"{rec.func} has an indexing layout prunepilot cannot follow")
        res = [None] * len(oshape)
    an.set(out, res)


# ----------------------------------------------------------------------------------------
# spatial ops: pooling, resampling, channel rearrangement
def _keep_leading(an: Analysis, rec: OpRecord, b: dict[str, Any], lead: int = 2) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    shape = an.shape(x)
    ch = len(shape) - lead - (len(shape) - 2 if len(shape) > 2 else 0)
    keep = max(min(lead, len(shape)), 0) if ch >= 0 else 0
    for d in dims[keep:]:
        an.atoms.pin(d, f"{rec.func} mixes a channel dimension with spatial positions")
    for o in rec.outputs:
        if o is None:
            continue
        od = an.shape(o)
        res = list(dims[:keep]) + [None] * (len(od) - keep)
        if len(od) < keep:
            res = [None] * len(od)
        an.set(o, res)


def _spatial(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """Pooling/resampling over trailing spatial dims; channels are dim -3 (or -4 for 3d)."""
    x = tensor_refs(list(rec.args[:1]))[0]
    shape = an.shape(x)
    name = rec.func.overloadpacket.__name__
    nsp = 3 if "3d" in name else 1 if "1d" in name else 2
    if name.startswith("_adaptive_avg_pool") and name.endswith("pool2d"):
        nsp = 2
    _keep_leading(an, rec, b, lead=max(len(shape) - nsp, 0))


_rule(
    *_ops(
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
        "upsample_nearest1d",
        "upsample_nearest2d",
        "upsample_nearest3d",
        "upsample_bilinear2d",
        "upsample_bicubic2d",
        "upsample_linear1d",
        "upsample_trilinear3d",
        "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d",
        "_upsample_nearest_exact3d",
        "_upsample_bilinear2d_aa",
        "_upsample_bicubic2d_aa",
        "fractional_max_pool2d",
        "lp_pool2d",
        "mkldnn_max_pool2d",
    )
)(_spatial)


@_rule(*_ops("grid_sampler_2d", "grid_sampler", "grid_sampler_3d"))
def _grid_sample(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    an.pin_all([b["grid"]], "it is a sampling grid")
    dims = an.dims(x)
    out = _out(rec)
    if out is None:
        return
    for d in dims[2:]:
        an.atoms.pin(d, f"{rec.func} mixes channels with positions")
    an.set(out, dims[:2] + [None] * (len(an.shape(out)) - 2))


@_rule(*_ops("pixel_shuffle", "pixel_unshuffle"))
def _pixel_shuffle(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    shape = an.shape(x)
    out = _out(rec)
    if out is None:
        return
    oshape = an.shape(out)
    c = len(shape) - 3
    for d in dims[c + 1 :]:
        an.atoms.pin(d, f"{rec.func} mixes channels with positions")
    a = dims[c]
    res: Dims = list(dims[:c]) + [None] * 3
    if a is not None:
        if rec.func.overloadpacket is aten.pixel_shuffle:
            r2 = shape[c] // oshape[c]
            blocks = a.reshape(oshape[c], r2)
            for k in range(1, r2):
                an.atoms.unite(blocks[:, 0], blocks[:, k])
            res[c] = blocks[:, 0].copy()
        else:
            r2 = oshape[c] // shape[c]
            res[c] = np.repeat(a, r2)
    an.set(out, res)


@_rule(*_ops("channel_shuffle", "native_channel_shuffle"))
def _channel_shuffle(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    dims = an.dims(x)
    g = int(b["groups"])
    a = dims[1]
    if a is not None:
        grid = a.reshape(g, -1)
        for k in range(1, g):
            an.atoms.unite(grid[0], grid[k])
        dims[1] = grid.T.reshape(-1).copy()
    an.set(_out(rec), dims)


# ----------------------------------------------------------------------------------------
# layers with weights
@_rule(
    *_ops(
        "convolution",
        "_convolution",
        "convolution_overrideable",
        "conv1d",
        "conv2d",
        "conv3d",
        "cudnn_convolution",
        "mkldnn_convolution",
        "_slow_conv2d_forward",
        "thnn_conv2d",
        "slow_conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "cudnn_convolution_transpose",
        "miopen_convolution",
        "_nnpack_spatial_convolution",
        "slow_conv_dilated2d",
        "slow_conv_transpose2d",
    )
)
def _conv(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x, w = b["input"], b["weight"]
    bias = b.get("bias")
    transposed = bool(b.get("transposed", False)) or "transpose" in str(rec.func.overloadpacket)
    groups = int(b.get("groups") or 1)
    xs, ws = an.shape(x), an.shape(w)
    xd, wd = an.dims(x), an.wdims(w)
    c = len(xs) - (len(ws) - 1)  # channel dim of the input (0 when unbatched)
    out = _out(rec)
    if out is None:
        return
    os_ = an.shape(out)
    for d in xd[c + 1 :]:
        an.atoms.pin(d, f"{rec.func} mixes channels with spatial positions")
    cin = xd[c]
    bd = an.dims(bias)[0] if isinstance(bias, Ref) else None
    k = math.prod(ws[2:])
    if not transposed:
        n_out, ig = ws[0], ws[1]
        an.tag(wd[0], produces=True)
        if groups == 1:
            an.contract(cin, wd[1], ig)
            an.tag(wd[1], inward=True)
        elif ig == 1:
            mult = n_out // groups
            src = cin if cin is not None else np.full(groups, FIXED)
            an.atoms.unite(np.repeat(src, mult), wd[0])
        else:
            an.contract(cin, np.tile(wd[1], groups), ig * groups)
            an.tag(wd[1], inward=True)
            an.segments.append(list(wd[0].reshape(groups, -1)))
        outc = wd[0]
        an.macs(math.prod(os_) * ig * k, wd[0], wd[1] if ig > 1 else None)
    else:
        n_in, og = ws[0], ws[1]
        an.tag(wd[0], inward=True)
        an.contract(cin, wd[0], n_in)
        if groups != 1:
            an.atoms.pin(wd[0], "grouped transposed convolution is not supported")
            an.atoms.pin(wd[1], "grouped transposed convolution is not supported")
            outc = np.full(og * groups, FIXED, dtype=np.int64)
        else:
            an.tag(wd[1], produces=True)
            outc = wd[1]
        an.macs(math.prod(xs) * og * k, wd[0], outc)
    if bd is not None:
        an.atoms.unite(bd, outc)
        an.tag(bd)
    an.set(out, list(xd[:c]) + [outc] + [None] * (len(os_) - c - 1))


def _matmul_like(
    an: Analysis, a: Ref, bm: Ref, out: Ref | None, rec: OpRecord, extra: Ref | None = None
) -> None:
    ad, bd = an.dims(a), an.dims(bm)
    ash, bsh = an.shape(a), an.shape(bm)
    if len(ash) < 2 or len(bsh) < 2:
        return _unknown(an, rec, {})
    an.contract(ad[-1], bd[-2], ash[-1])
    for r, dd, side in ((a, ad, "a"), (bm, bd, "b")):
        if r.node in an.weightlike:
            if side == "b":
                an.tag(dd[-1], produces=True)
                an.tag(dd[-2], inward=True)
            else:
                an.tag(dd[-2], produces=True)
                an.tag(dd[-1], inward=True)
    batch: Dims = []
    nb = max(len(ash), len(bsh)) - 2
    for i in range(nb):
        ia = i - (nb - (len(ash) - 2))
        ib = i - (nb - (len(bsh) - 2))
        cands = []
        sizes = []
        if ia >= 0:
            cands.append(ad[ia])
            sizes.append(ash[ia])
        if ib >= 0:
            cands.append(bd[ib])
            sizes.append(bsh[ib])
        batch.append(an.join(cands, max(sizes), f"{rec.func} batches it with an untracked tensor"))
    res = [*batch, ad[-2], bd[-1]]
    if extra is not None:
        ed = an.dims(extra)
        es = an.shape(extra)
        if extra.node in an.weightlike:
            for d in ed:
                an.tag(d)
        for j, d in enumerate(ed):
            i = j + len(res) - len(es)
            if i < 0 or d is None:
                continue
            if res[i] is None and es[j] > 1:
                an.atoms.pin(d, f"{rec.func} adds it to an untracked tensor")
            elif (ri := res[i]) is not None and es[j] == len(ri):
                an.atoms.unite(ri, d)
    nbatch = math.prod(an.shape(out)[:-2]) if out is not None else 1
    an.macs(nbatch * ash[-2] * ash[-1] * bsh[-1], ad[-1], ad[-2], bd[-1])
    if out is not None:
        an.set(out, res)


@_rule(*_ops("mm", "bmm", "matmul", "_addmm_activation", "addmm", "baddbmm", "addbmm"))
def _mm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    if "mat1" in b:
        return _matmul_like(an, b["mat1"], b["mat2"], _out(rec), rec, b.get("self"))
    if "batch1" in b:
        return _matmul_like(an, b["batch1"], b["batch2"], _out(rec), rec, b.get("self"))
    a = b.get("self")
    m2 = b.get("mat2", b.get("other"))
    if not isinstance(a, Ref) or not isinstance(m2, Ref):
        return _unknown(an, rec, b)
    _matmul_like(an, a, m2, _out(rec), rec)


@_rule(*_ops("embedding", "_embedding_bag", "embedding_bag"))
def _embedding(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    w = b["weight"]
    wd = an.wdims(w)
    an.tag(wd[1], produces=True)
    an.pin_all([b["indices"]], "it holds indices")
    out = _out(rec)
    if out is None:
        return
    os_ = an.shape(out)
    an.set(out, [*([None] * (len(os_) - 1)), wd[1]])


_BN = _ops(
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional",
    "_batch_norm_with_update",
    "_batch_norm_with_update_functional",
    "_batch_norm_no_update",
    "cudnn_batch_norm",
    "miopen_batch_norm",
    "batch_norm",
    "_batch_norm_impl_index",
    "instance_norm",
)


@_rule(*_BN)
def _batch_norm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = b["input"]
    xd = an.dims(x)
    xs = an.shape(x)
    c = 1 if len(xs) > 1 else 0
    C = xs[c]
    stats: list[np.ndarray | None] = [xd[c]]
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = b.get(name)
        if isinstance(t, Ref) and an.shape(t) == (C,):
            d = an.dims(t)[0]
            an.tag(d)
            stats.append(d)
    joined = an.join(stats, C, f"{rec.func} normalises channels that prunepilot cannot track")
    for d in xd[c + 1 :]:
        an.atoms.pin(d, f"{rec.func} normalises over this dimension")
    for i, o in enumerate(rec.outputs):
        if o is None:
            continue
        s = an.shape(o)
        if i == 0:
            an.set(o, list(xd[:c]) + [joined] + [None] * (len(s) - c - 1))
        elif s == (C,):
            an.set(o, [joined])
        else:
            an.set(o, [None] * len(s))


@_rule(*_ops("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm"))
def _layer_norm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = b["input"]
    xd = an.dims(x)
    k = len(b["normalized_shape"])
    w, bias = b.get("weight"), b.get("bias")
    for j in range(k):
        i = len(xd) - k + j
        arrs = [xd[i]]
        for t in (w, bias):
            if isinstance(t, Ref):
                d = an.dims(t)[j]
                an.tag(d)
                arrs.append(d)
        if len(arrs) == 1 and xd[i] is not None:
            an.atoms.pin(xd[i], f"{rec.func} without weights fixes its normalized_shape")
        xd[i] = an.join(arrs, an.shape(x)[i], f"{rec.func} normalises an untracked tensor")
    for n, o in enumerate(rec.outputs):
        if o is None:
            continue
        if n == 0:
            an.set(o, list(xd))
        else:
            an.set(o, list(xd[: len(xd) - k]) + [None] * (len(an.shape(o)) - len(xd) + k))


@_rule(*_ops("native_group_norm", "group_norm"))
def _group_norm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = b["input"]
    xd = an.dims(x)
    C = an.shape(x)[1]
    g = int(b.get("group") or b.get("num_groups") or 1)
    arrs = [xd[1]]
    for name in ("weight", "bias"):
        t = b.get(name)
        if isinstance(t, Ref):
            d = an.dims(t)[0]
            an.tag(d)
            arrs.append(d)
    j = an.join(arrs, C, f"{rec.func} normalises an untracked tensor")
    for d in xd[2:]:
        an.atoms.pin(d, f"{rec.func} normalises over this dimension")
    if j is not None:
        if g == C and C > 1:
            an.atoms.pin(j, "GroupNorm with one channel per group fixes the channel count")
        elif g > 1:
            an.segments.append(list(j.reshape(g, -1)))
    for n, o in enumerate(rec.outputs):
        if o is None:
            continue
        s = an.shape(o)
        an.set(o, [xd[0], j] + [None] * (len(s) - 2) if n == 0 else [None] * len(s))


@_rule(*_ops("_prelu_kernel", "prelu"))
def _prelu(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x, w = rec.args[0], rec.args[1]
    xd = an.dims(x)
    wd = an.dims(w)[0] if an.shape(w) else None
    if wd is not None and len(wd) > 1 and len(xd) > 1:
        an.tag(wd)
        xd[1] = an.join([xd[1], wd], len(wd), f"{rec.func} has channels prunepilot cannot track")
    an.set(_out(rec), xd)


# ----------------------------------------------------------------------------------------
# attention
@_rule(
    *_ops(
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_attention_math",
        "scaled_dot_product_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    )
)
def _sdpa(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    q, k, v = b["query"], b["key"], b["value"]
    qd, kd, vd = an.dims(q), an.dims(k), an.dims(v)
    qs, ks, vs = an.shape(q), an.shape(k), an.shape(v)
    an.contract(qd[-1], kd[-1], qs[-1])
    lead: Dims = []
    for i in range(len(qs) - 2):
        lead.append(an.join([qd[i], kd[i], vd[i]], qs[i], f"{rec.func} pairs heads inconsistently"))
    an.atoms.pin(kd[-2], f"{rec.func} attends over this dimension")
    an.atoms.pin(vd[-2], f"{rec.func} attends over this dimension")
    for name in ("attn_mask", "attn_bias"):
        if isinstance(b.get(name), Ref):
            an.pin_all([b[name]], "it is an attention mask")
    nb = math.prod(qs[:-2])
    an.macs(nb * qs[-2] * ks[-2] * qs[-1], qd[-1])
    an.macs(nb * qs[-2] * ks[-2] * vs[-1], vd[-1])
    for n, o in enumerate(rec.outputs):
        if o is None:
            continue
        s = an.shape(o)
        if n == 0:
            an.set(o, [*lead, qd[-2], vd[-1]])
        elif len(s) == len(qs) - 1:
            an.set(o, [*lead, qd[-2]])
        else:
            an.set(o, [None] * len(s))


@_rule(*_ops("_native_multi_head_attention"))
def _fused_mha(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """nn.MultiheadAttention's fused path: its width is one attribute, so it stays whole."""
    reason = "nn.MultiheadAttention ties its embedding width to its internal width"
    refs = record_inputs(rec)
    an.pin_all(refs, reason)
    q = b["query"]
    qs = an.shape(q)
    e = qs[-1]
    an.macs(math.prod(qs[:-1]) * e * 4 * e)
    an.macs(math.prod(qs[:-1]) * qs[-2] * e * 2)
    for n, o in enumerate(rec.outputs):
        if o is None:
            continue
        s = an.shape(o)
        if n == 0:
            pw = an.wdims(b["proj_weight"])[0]
            an.tag(pw, produces=True)
            an.set(o, [*([None] * (len(s) - 1)), pw])
        else:
            an.set(o, [None] * len(s))


# ----------------------------------------------------------------------------------------
def _unknown(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    name = str(rec.func)
    an.unknown_ops[name] = an.unknown_ops.get(name, 0) + 1
    an.pin_all(record_inputs(rec), f"op {name} has no channel rule")
    for o in rec.outputs:
        if o is not None:
            an.set(o, [None] * len(an.shape(o)))


def apply_rule(an: Analysis, rec: OpRecord) -> None:
    """Apply the rule for one recorded op (or pin everything if there is none)."""
    func = rec.func
    rule = RULES.get(func.overloadpacket)
    if rule is None and _is_pointwise(func):
        rule = elementwise
    if rule is None:
        if not any(o is not None for o in rec.outputs) and not record_inputs(rec):
            return
        rule = _unknown
    b = bind(func, rec.args, rec.kwargs)
    ins = record_inputs(rec)
    mutated = _mutated_view(an, rec)
    rule(an, rec, b)
    if ins and all(r.node in an.weightlike for r in ins):
        an.weightlike.update(o.node for o in rec.outputs if o is not None)
    if mutated is not None:
        an.pin_all([mutated, *ins], f"{func} writes into a view of another tensor")


_POINTWISE_CACHE: dict[Any, bool] = {}


def _packet_pointwise(packet: Any) -> bool:
    hit = _POINTWISE_CACHE.get(packet)
    if hit is None:
        hit = any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
        _POINTWISE_CACHE[packet] = hit
    return hit


def _is_pointwise(func: torch._ops.OpOverload) -> bool:
    """ATen's pointwise tag on any overload of the op or of its out-of-place form."""
    packet = func.overloadpacket
    if torch.Tag.pointwise in func.tags or _packet_pointwise(packet):
        return True
    name = packet.__name__
    if name.endswith("_") and not name.startswith("_"):
        base = getattr(aten, name[:-1], None)
        return base is not None and _packet_pointwise(base)
    return False


def _mutated_view(an: Analysis, rec: OpRecord) -> Ref | None:
    args = rec.func._schema.arguments
    if not args or args[0].alias_info is None or not args[0].alias_info.is_write:
        return None
    first = rec.args[0] if rec.args else None
    if isinstance(first, Ref) and first.node in an.cap.bases:
        return Ref(an.cap.bases[first.node])
    return None
