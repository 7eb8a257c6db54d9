"""Rules for views and layout: reshape, permute, slice, split, cat, index, pad."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._analysis import Analysis, Dims, tensor_refs
from ._atoms import FIXED
from ._capture import OpRecord
from ._registry import arr, aten, first_input, norm_dims, ops, out_ref, rule, unknown


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
            tracked = [k for k in tracked if not an.atoms.pinned(arr(dims[k]))] or tracked[:1]
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
        a = dims[keep_dim]
        assert a is not None
        if len(ins) > 1:  # (a dim split alone needs no broadcast)
            sizes = [src[k] for k in ins]
            view = [1] * len(ins)
            view[ins.index(keep_dim)] = src[keep_dim]
            a = np.broadcast_to(a.reshape(view), sizes)
        full = a.reshape([dst[k] for k in outs])
        varying = [
            n
            for n in range(full.ndim)
            if full.shape[n] > 1 and not (full == full.take([0], axis=n)).all()
        ]
        if not varying:
            continue
        inner = varying[-1]
        if inner != full.ndim - 1:
            full = np.moveaxis(full, inner, -1)
        moved = full.reshape(-1, full.shape[-1])
        # Every row with the first, as one edge array (the same edges as row by row).
        an.atoms.unite(np.repeat(moved[:1], len(moved) - 1, axis=0), moved[1:])
        out[outs[inner]] = moved[0].copy()
    return out


@rule(
    *ops(
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
    out = out_ref(rec)
    if out is None:
        return
    _x, dims, shape = first_input(an, rec)
    an.set(out, reshape_dims(an, dims, shape, an.shape(out), rec.name))


@rule(*ops("permute", "permute_copy"))
def _permute(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    order = norm_dims(b["dims"], len(dims))
    an.set(out_ref(rec), [dims[k] for k in order])


@rule(*ops("transpose", "transpose_", "transpose_copy", "swapaxes", "swapdims"))
def _transpose(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    if len(dims) < 2:
        an.set(out_ref(rec), dims)
        return
    d0 = b.get("dim0", 0) % len(dims)
    d1 = b.get("dim1", 1) % len(dims)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    an.set(out_ref(rec), dims)


@rule(*ops("t", "t_", "t_copy", "numpy_T", "mT", "adjoint"))
def _t(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    if len(dims) >= 2:
        dims[-1], dims[-2] = dims[-2], dims[-1]
    an.set(out_ref(rec), dims)


@rule(*ops("unsqueeze", "unsqueeze_", "unsqueeze_copy"))
def _unsqueeze(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    d = b["dim"] % (len(dims) + 1)
    dims.insert(d, None)
    an.set(out_ref(rec), dims)


@rule(*ops("squeeze", "squeeze_", "squeeze_copy"))
def _squeeze(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, shape = first_input(an, rec)
    sel = b.get("dim")
    cand = set(norm_dims(sel, len(shape))) if sel is not None else set(range(len(shape)))
    gone = {i for i in cand if shape[i] == 1}
    an.set(out_ref(rec), [d for i, d in enumerate(dims) if i not in gone])


@rule(*ops("expand", "expand_copy", "expand_as", "broadcast_to"))
def _expand(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x, dims, shape = first_input(an, rec)
    out = out_ref(rec)
    if out is None:
        return
    oshape = an.shape(out)
    lead = len(oshape) - len(shape)
    res: Dims = [None] * lead
    spread = set(range(lead))
    for i, (s, d, o) in enumerate(zip(shape, dims, oshape[lead:], strict=True)):
        if s == o:
            res.append(d)
        else:
            an.atoms.pin(d, f"{rec.name} repeats a one-channel dimension")
            res.append(None)
            spread.add(lead + i)
    an.set(out, res)
    an.broadcast[out.node] = spread | an.broadcast.get(x.node, set())


@rule(*ops("slice", "slice_copy", "narrow", "narrow_copy"))
def _slice(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, shape = first_input(an, rec)
    d = b.get("dim", 0) % max(len(shape), 1)
    out = out_ref(rec)
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
            an.atoms.pin(a, f"{rec.name} takes a fixed range of channels")
        dims[d] = taken
    an.set(out, dims)


@rule(*ops("select", "select_copy"))
def _select(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x, dims, _ = first_input(an, rec)
    d = b["dim"] % len(dims)
    if an.shape(x)[d] > 1:
        an.atoms.pin(dims[d], f"{rec.name} picks one fixed channel")
    del dims[d]
    an.set(out_ref(rec), dims)


@rule(
    *ops(
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
    _x, dims, shape = first_input(an, rec)
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
            an.atoms.pin(a, f"{rec.name} splits channels at fixed sizes {sizes}")


@rule(*ops("unbind", "unbind_copy"))
def _unbind(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x, dims, _ = first_input(an, rec)
    d = b.get("dim", 0) % len(dims)
    if an.shape(x)[d] > 1:
        an.atoms.pin(dims[d], f"{rec.name} picks fixed channels")
    rest = dims[:d] + dims[d + 1 :]
    for o in rec.outputs:
        if o is not None:
            an.set(o, list(rest))


@rule(*ops("cat", "concat", "concatenate", "_cat"))
def _cat(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    shapes = an.cap.shapes
    refs = [r for r in tensor_refs(b["tensors"]) if shapes[r.node] != (0,)]
    out = out_ref(rec)
    if out is None or not refs:
        return
    oshape = an.shape(out)
    d = b.get("dim", 0) % len(oshape)
    dims = [an.peek(r) for r in refs]
    parts: list[np.ndarray] = []
    any_tracked = False
    for r, rd in zip(refs, dims, strict=True):
        a = rd[d]
        if a is None:
            parts.append(np.full(shapes[r.node][d], FIXED, dtype=np.int64))
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
                    [rd[i] for rd in dims],
                    oshape[i],
                    rec,
                    "joins it with an untracked tensor",
                )
            )
    an.set(out, res)


@rule(*ops("stack", "hstack", "vstack"))
def _stack(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    refs = tensor_refs(b["tensors"])
    out = out_ref(rec)
    if out is None or not refs:
        return
    if rec.func.overloadpacket is not aten.stack:
        return unknown(an, rec, b)
    oshape = an.shape(out)
    d = b.get("dim", 0) % len(oshape)
    ishape = an.shape(refs[0])
    res: Dims = [
        an.join(
            [an.dims(r)[i] for r in refs],
            ishape[i],
            rec,
            "joins it with an untracked tensor",
        )
        for i in range(len(ishape))
    ]
    res.insert(d, None)
    an.set(out, res)


@rule(*ops("flip"))
def _flip(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    for d in norm_dims(b["dims"], len(dims)):
        a = dims[d]
        if a is not None:
            dims[d] = a[::-1].copy()
    an.set(out_ref(rec), dims)


@rule(*ops("roll"))
def _roll(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    rd = b.get("dims") or []
    for d in norm_dims(rd, len(dims)) if rd else range(len(dims)):
        an.atoms.pin(dims[d], f"{rec.name} shifts channels by a fixed amount")
    an.set(out_ref(rec), dims)


@rule(*ops("repeat"))
def _repeat(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    reps = list(b["repeats"])
    lead = len(reps) - len(dims)
    res: Dims = [None] * lead
    for d, r in zip(dims, reps[lead:], strict=True):
        res.append(None if d is None else np.tile(d, r))
    an.set(out_ref(rec), res)


@rule(
    *ops(
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
    _x, dims, _ = first_input(an, rec)
    pad = list(b.get("pad") or b.get("padding") or [])
    for k in range(len(pad) // 2):
        d = len(dims) - 1 - k
        if (pad[2 * k] or pad[2 * k + 1]) and d >= 0 and dims[d] is not None:
            an.atoms.pin(dims[d], f"{rec.name} pads a channel dimension")
            dims[d] = None
    out = out_ref(rec)
    if out is not None:
        an.set(out, dims)


@rule(*ops("index_select"))
def _index_select(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    d = b["dim"] % len(dims)
    an.atoms.pin(dims[d], f"{rec.name} indexes channels by fixed positions")
    dims[d] = None
    an.atoms.pin(an.dims(b["index"])[0], "it is an index")
    an.set(out_ref(rec), dims)


@rule(*ops("index", "_unsafe_index"))
def _index(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x, dims, _ = first_input(an, rec)
    idx = list(b["indices"])
    out = out_ref(rec)
    if out is None:
        return
    pos = [i for i, t in enumerate(idx) if t is not None]
    for i in pos:
        an.atoms.pin(dims[i], f"{rec.name} indexes channels by fixed positions")
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
        an.pin_all([x], f"{rec.name} has an indexing layout prunepilot cannot follow")
        res = [None] * len(oshape)
    an.set(out, res)
