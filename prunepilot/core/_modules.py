"""Keep standard modules' size attributes in step with their (pruned) tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

__all__ = ["all_modules", "sync_module_attrs", "sync_modules", "tensorless_norm"]


def all_modules(model: nn.Module) -> list[nn.Module]:
    """``list(model.modules())``: every module once, in the same (pre-)order, faster."""
    seen: set[int] = set()
    out: list[nn.Module] = []
    stack = [model]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        kids = m._modules
        if kids:  # most modules are leaves
            stack.extend(c for c in reversed(kids.values()) if c is not None)
    return out


def tensorless_norm(mod: nn.Module) -> bool:
    """An instance norm without weights or running statistics: pruning slices no tensor of
    it, so its ``num_features`` must follow the channels of its input (from the trace)."""
    return (
        isinstance(mod, nn.modules.instancenorm._InstanceNorm)
        and mod._parameters.get("weight") is None
        and mod._buffers.get("running_mean") is None
    )


def sync_module_attrs(model: nn.Module) -> None:
    """Update ``in/out_channels``, ``groups``, ``num_features``... from current tensor shapes.

    Called after slicing tensors (pruning) and after resizing them (loading a pruned
    checkpoint), so the result is a plain model of standard layers whose attributes match.
    """
    sync_modules(all_modules(model))


def sync_modules(mods: Iterable[nn.Module]) -> None:
    """`sync_module_attrs` for the given modules only (those whose tensors changed)."""
    for mod in mods:
        sync = _SYNC.get(type(mod), _MISSING)
        if sync is _MISSING:
            sync = _SYNC[type(mod)] = _sync_for(type(mod))
        if sync is not None:
            sync(mod)


# Size attributes are plain values: set them as ``Module.__setattr__`` ends up doing (it only
# adds checks for tensors and submodules), several times faster over a model's layers.
_set = object.__setattr__


def _sync_linear(mod: nn.Linear) -> None:
    out_f, in_f = mod.weight.shape
    _set(mod, "in_features", in_f)
    _set(mod, "out_features", out_f)


def _sync_bilinear(mod: nn.Bilinear) -> None:
    out_f, in1, in2 = mod.weight.shape
    _set(mod, "out_features", out_f)
    _set(mod, "in1_features", in1)
    _set(mod, "in2_features", in2)


def _sync_bn(mod: nn.modules.batchnorm._NormBase) -> None:
    ref = mod.weight if mod.weight is not None else mod.running_mean
    if ref is not None:
        _set(mod, "num_features", ref.shape[0])


def _sync_ln(mod: nn.LayerNorm | nn.RMSNorm) -> None:
    if mod.weight is not None:
        _set(mod, "normalized_shape", tuple(mod.weight.shape))


def _sync_gn(mod: nn.GroupNorm) -> None:
    if mod.weight is not None:
        _set(mod, "num_channels", mod.weight.shape[0])


def _sync_embedding(mod: nn.Embedding) -> None:
    num, dim = mod.weight.shape
    _set(mod, "num_embeddings", num)
    _set(mod, "embedding_dim", dim)


def _sync_prelu(mod: nn.PReLU) -> None:
    _set(mod, "num_parameters", mod.weight.numel())


_MISSING: Any = object()
_SYNC: dict[type, Callable[[Any], None] | None] = {}


def _sync_for(cls: type) -> Callable[[Any], None] | None:
    """The attribute update for a module class (first matching base wins)."""
    table: list[tuple[type, Callable[[Any], None]]] = [
        (nn.modules.conv._ConvNd, _sync_conv),
        (nn.Linear, _sync_linear),
        (nn.Bilinear, _sync_bilinear),
        (nn.modules.batchnorm._NormBase, _sync_bn),
        (nn.LayerNorm, _sync_ln),
        (nn.GroupNorm, _sync_gn),
        (nn.Embedding, _sync_embedding),
        (nn.PReLU, _sync_prelu),
        (nn.RMSNorm, _sync_ln),
    ]
    return next((fn for base, fn in table if issubclass(cls, base)), None)


def _sync_conv(mod: nn.modules.conv._ConvNd) -> None:
    w = mod.weight
    groups = mod.groups
    if mod.transposed:
        _set(mod, "in_channels", w.shape[0])
        _set(mod, "out_channels", w.shape[1] * groups)
        return
    if groups > 1 and mod.in_channels == groups:
        # Depthwise-like: each input channel owns a block of `mult` outputs; removing a
        # channel removes its whole group.
        mult = mod.out_channels // groups
        groups = w.shape[0] // mult
        _set(mod, "groups", groups)
        _set(mod, "in_channels", groups)
    else:
        _set(mod, "in_channels", w.shape[1] * groups)
    _set(mod, "out_channels", w.shape[0])
