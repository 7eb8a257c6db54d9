"""Rules for attention: scaled dot-product and fused multi-head attention."""

from __future__ import annotations

import math
from typing import Any

from ._analysis import Analysis, Dims, record_inputs
from ._capture import OpRecord, Ref
from ._registry import ops, rule


@rule(
    *ops(
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
        lead.append(an.join([qd[i], kd[i], vd[i]], qs[i], rec, "pairs heads inconsistently"))
    an.atoms.pin(kd[-2], f"{rec.name} attends over this dimension")
    an.atoms.pin(vd[-2], f"{rec.name} attends over this dimension")
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


@rule(*ops("_native_multi_head_attention"))
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
