"""Rules for spatial ops: pooling, resampling, pixel and channel shuffles."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._analysis import Analysis, Dims, tensor_refs
from ._capture import OpRecord
from ._registry import aten, first_input, ops, out_ref, rule

_SPATIAL_OPS: dict[int, tuple[str, ...]] = {
    1: (
        "max_pool1d",
        "avg_pool1d",
        "adaptive_avg_pool1d",
        "adaptive_max_pool1d",
        "upsample_nearest1d",
        "upsample_linear1d",
        "_upsample_nearest_exact1d",
    ),
    2: (
        "max_pool2d_with_indices",
        "max_pool2d",
        "avg_pool2d",
        "_adaptive_avg_pool2d",
        "adaptive_avg_pool2d",
        "adaptive_max_pool2d",
        "upsample_nearest2d",
        "upsample_bilinear2d",
        "upsample_bicubic2d",
        "_upsample_nearest_exact2d",
        "_upsample_bilinear2d_aa",
        "_upsample_bicubic2d_aa",
        "fractional_max_pool2d",
        "lp_pool2d",
        "mkldnn_max_pool2d",
    ),
    3: (
        "max_pool3d_with_indices",
        "max_pool3d",
        "avg_pool3d",
        "_adaptive_avg_pool3d",
        "adaptive_avg_pool3d",
        "adaptive_max_pool3d",
        "upsample_nearest3d",
        "upsample_trilinear3d",
        "_upsample_nearest_exact3d",
    ),
}
_SPATIAL_DIMS = {p: n for n, names in _SPATIAL_OPS.items() for p in ops(*names)}


def _spatial(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    """Pooling/resampling over the trailing 1, 2 or 3 spatial dims; leading dims pass through."""
    _x, dims, shape = first_input(an, rec)
    keep = max(len(shape) - _SPATIAL_DIMS[rec.func.overloadpacket], 0)
    for d in dims[keep:]:
        an.atoms.pin(d, f"{rec.name} mixes a channel dimension with spatial positions")
    for o in rec.outputs:
        if o is not None:
            od = an.shape(o)
            an.set(
                o,
                list(dims[:keep]) + [None] * (len(od) - keep)
                if len(od) >= keep
                else [None] * len(od),
            )


rule(*_SPATIAL_DIMS)(_spatial)


@rule(*ops("grid_sampler_2d", "grid_sampler", "grid_sampler_3d"))
def _grid_sample(an: Analysis, rec: OpRecord, b: dict[str, Any]) -> None:
    x = tensor_refs(list(rec.args[:1]))[0]
    an.pin_all([b["grid"]], "it is a sampling grid")
    dims = an.dims(x)
    out = out_ref(rec)
    if out is None:
        return
    for d in dims[2:]:
        an.atoms.pin(d, f"{rec.name} mixes channels with positions")
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
        an.atoms.pin(d, f"{rec.name} mixes channels with positions")
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
