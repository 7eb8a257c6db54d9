"""Rules for spatial ops: pooling, resampling, pixel and channel shuffles."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._analysis import Analysis, Dims, tensor_refs
from ._capture import OpRecord
from ._registry import aten, first_input, ops, out_ref, rule


def _keep_leading(an: Analysis, rec: OpRecord, b: dict[str, Any], lead: int = 2) -> None:
    _x, dims, shape = first_input(an, rec)
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


rule(
    *ops(
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


@rule(*ops("grid_sampler_2d", "grid_sampler", "grid_sampler_3d"))
def _grid_sample(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    an.pin_all([b["grid"]], "it is a sampling grid")
    dims = an.dims(x)
    out = out_ref(rec)
    if out is None:
        return
    for d in dims[2:]:
        an.atoms.pin(d, f"{rec.func} mixes channels with positions")
    an.set(out, dims[:2] + [None] * (len(an.shape(out)) - 2))


@rule(*ops("pixel_shuffle", "pixel_unshuffle"))
def _pixel_shuffle(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, shape = first_input(an, rec)
    out = out_ref(rec)
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


@rule(*ops("channel_shuffle", "native_channel_shuffle"))
def _channel_shuffle(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    _x, dims, _ = first_input(an, rec)
    g = int(b["groups"])
    a = dims[1]
    if a is not None:
        grid = a.reshape(g, -1)
        for k in range(1, g):
            an.atoms.unite(grid[0], grid[k])
        dims[1] = grid.T.reshape(-1).copy()
    an.set(out_ref(rec), dims)
