"""Rules for layers with weights: convolution, matmul, embedding, normalisation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._analysis import Analysis, Dims
from ._atoms import FIXED
from ._capture import OpRecord, Ref
from ._registry import ops, out_ref, rule, unknown

_TRANSPOSED = set(
    ops(
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "cudnn_convolution_transpose",
        "slow_conv_transpose2d",
    )
)


@rule(
    *ops(
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
    transposed = bool(b.get("transposed", False)) or rec.func.overloadpacket in _TRANSPOSED
    groups = int(b.get("groups") or 1)
    shapes = an.cap.shapes
    xs, ws = shapes[x.node], shapes[w.node]
    xd = an.peek(x)
    c = len(xs) - (len(ws) - 1)  # channel dim of the input (0 when unbatched)
    cin = xd[c]
    is_ref = isinstance(w, Ref)
    if not transposed and cin is not None and is_ref:
        # Weight dims that would only be united with the input's channels share its atoms:
        # the input dim of a dense convolution, the output dim of a depthwise one.
        rest = [None] * (len(ws) - 2)
        if groups == 1:
            an.adopt(w, [None, cin, *rest], inward=True)
        elif ws[1] == 1 and groups == ws[0]:
            an.adopt(w, [cin, None, *rest], produces=True)
    wd = an.wdims(w)
    # Dims sharing another tensor's atoms have their roles noted on adoption: tagging them
    # (a shared weight called again on another input) would tag that tensor's atoms too.
    shared0 = is_ref and (w.node, 0) in an.adopted
    shared1 = is_ref and (w.node, 1) in an.adopted
    out = out_ref(rec)
    if out is None:
        return
    os_ = shapes[out.node]
    for d in xd[c + 1 :]:
        if d is not None:  # (spatial dims rarely carry channels: no reason to format)
            an.atoms.pin(d, f"{rec.name} mixes channels with spatial positions")
    k = math.prod(ws[2:])
    if not transposed:
        n_out, ig = ws[0], ws[1]
        if not shared0:
            an.tag(wd[0], produces=True)
        if groups == 1:
            if wd[1] is not cin:
                an.contract(cin, wd[1], ig)
                if not shared1:
                    an.tag(wd[1], inward=True)
        elif ig == 1:
            if wd[0] is not cin:
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
    bd = an.adopt(bias, [outc])[0] if isinstance(bias, Ref) else None
    if bd is not None:
        if bd is not outc:
            an.atoms.unite(bd, outc)
        an.tag(bd)
    an.set(out, [*xd[:c], outc, *([None] * (len(os_) - c - 1))])


def _matmul_like(
    an: Analysis, a: Ref, bm: Ref, out: Ref | None, rec: OpRecord, extra: Ref | None = None
) -> None:
    ad, bd = an.dims(a), an.dims(bm)
    ash, bsh = an.shape(a), an.shape(bm)
    if len(ash) < 2 or len(bsh) < 2:
        return unknown(an, rec, {})
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
        batch.append(an.join(cands, max(sizes), rec, "batches it with an untracked tensor"))
    res = [*batch, ad[-2], bd[-1]]
    if extra is not None:
        es = an.shape(extra)
        aligned = [
            res[i] if (i := j + len(res) - len(es)) >= 0 and res[i] is not None else None
            for j in range(len(es))
        ]
        ed = an.adopt(extra, aligned)
        if extra.node in an.weightlike:
            for d in ed:
                an.tag(d)
        for j, d in enumerate(ed):
            i = j + len(res) - len(es)
            if i < 0 or d is None:
                continue
            if res[i] is None and es[j] > 1:
                an.atoms.pin(d, f"{rec.name} adds it to an untracked tensor")
            elif (ri := res[i]) is not None and es[j] == len(ri) and ri is not d:
                an.atoms.unite(ri, d)
    nbatch = math.prod(an.shape(out)[:-2]) if out is not None else 1
    an.macs(nbatch * ash[-2] * ash[-1] * bsh[-1], ad[-1], ad[-2], bd[-1])
    if out is not None:
        an.set(out, res)


@rule(*ops("mm", "bmm", "matmul", "_addmm_activation", "addmm", "baddbmm", "addbmm"))
def _mm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    if "mat1" in b:
        return _matmul_like(an, b["mat1"], b["mat2"], out_ref(rec), rec, b.get("self"))
    if "batch1" in b:
        return _matmul_like(an, b["batch1"], b["batch2"], out_ref(rec), rec, b.get("self"))
    a = b.get("self")
    m2 = b.get("mat2", b.get("other"))
    if not isinstance(a, Ref) or not isinstance(m2, Ref):
        return unknown(an, rec, b)
    _matmul_like(an, a, m2, out_ref(rec), rec)


@rule(*ops("embedding", "_embedding_bag", "embedding_bag"))
def _embedding(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    w = b["weight"]
    wd = an.wdims(w)
    an.tag(wd[1], produces=True)
    an.pin_all([b["indices"]], "it holds indices")
    out = out_ref(rec)
    if out is None:
        return
    os_ = an.shape(out)
    an.set(out, [*([None] * (len(os_) - 1)), wd[1]])


_BN = ops(
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


@rule(*_BN)
def _batch_norm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = b["input"]
    shapes = an.cap.shapes
    xd = an.peek(x)
    xs = shapes[x.node]
    c = 1 if len(xs) > 1 else 0
    C = xs[c]
    xc = xd[c]
    stats: list[np.ndarray | None] = [xc]
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = b.get(name)
        if isinstance(t, Ref) and shapes[t.node] == (C,):
            d = an.adopt(t, [xc])[0]
            an.tag(d)
            stats.append(d)
    joined = an.join(stats, C, rec, "normalises channels that prunepilot cannot track")
    for d in xd[c + 1 :]:
        if d is not None:
            an.atoms.pin(d, f"{rec.name} normalises over this dimension")
    for i, o in enumerate(rec.outputs):
        if o is None:
            continue
        s = shapes[o.node]
        if i == 0:
            an.set(o, [*xd[:c], joined, *([None] * (len(s) - c - 1))])
        elif s == (C,):
            an.set(o, [joined])
        else:
            an.set(o, [None] * len(s))


@rule(*ops("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm"))
def _layer_norm(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = b["input"]
    xd = an.dims(x)
    k = len(b["normalized_shape"])
    w, bias = b.get("weight"), b.get("bias")
    affine = [an.adopt(t, xd[len(xd) - k :]) for t in (w, bias) if isinstance(t, Ref)]
    for j in range(k):
        i = len(xd) - k + j
        arrs = [xd[i]]
        for td in affine:
            d = td[j]
            an.tag(d)
            arrs.append(d)
        if len(arrs) == 1 and xd[i] is not None:
            an.atoms.pin(xd[i], f"{rec.name} without weights fixes its normalized_shape")
        xd[i] = an.join(arrs, an.shape(x)[i], rec, "normalises an untracked tensor")
    for n, o in enumerate(rec.outputs):
        if o is None:
            continue
        if n == 0:
            an.set(o, list(xd))
        else:
            an.set(o, list(xd[: len(xd) - k]) + [None] * (len(an.shape(o)) - len(xd) + k))


@rule(*ops("native_group_norm", "group_norm"))
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
    j = an.join(arrs, C, rec, "normalises an untracked tensor")
    for d in xd[2:]:
        an.atoms.pin(d, f"{rec.name} normalises over this dimension")
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
