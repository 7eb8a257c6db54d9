"""Meta copies of a model: its modules with every tensor an empty meta tensor.

Tracing runs such a copy (shapes only, no compute) and verification prunes and runs more of
them; both need it fast, so standard modules are copied attribute by attribute.
"""

from __future__ import annotations

import copy
import weakref
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ._fastleaf import install
from ._modules import all_modules
from .errors import TraceError

__all__ = ["meta_copy"]

_META = torch.device("meta")


def _refuse_lazy(model: nn.Module, mods: list[nn.Module]) -> None:
    """Lazy modules get their sizes from the first forward, which tracing must not run on
    the user's model (it never modifies it): ask for that forward first."""

    def uninitialized(m: nn.Module) -> bool:
        tensors = (*m._parameters.values(), *m._buffers.values())
        return any(isinstance(t, _LAZY) for t in tensors)

    if not any(uninitialized(m) for m in mods):
        return
    found = [(n, type(m).__name__) for n, m in model.named_modules() if uninitialized(m)]
    name, kind = found[0]
    raise TraceError(
        f"{len(found)} lazy module(s) are not initialized yet (e.g. {name or 'the model'!r}, "
        f"a {kind}); run model(*example_inputs) once so they get their sizes, then trace"
    )


_LAZY = nn.parameter.UninitializedTensorMixin  # type: ignore[attr-defined]  # is_lazy's test


_make_subclass = torch.Tensor._make_subclass
# A module's hook registries (the mappings of a fresh module's state but its tensor and
# submodule tables), as the read-only empty stand-ins meta copies share. (Its set of
# non-persistent buffer names stays its own: assigning a buffer updates it.)
_EMPTY_REGISTRIES: dict[str, Any] = {
    k: MappingProxyType({})
    for k, v in nn.Module().__dict__.items()
    if isinstance(v, dict) and k not in ("_parameters", "_buffers", "_modules")
}
_REGISTRY_KEYS = frozenset(_EMPTY_REGISTRIES)
# Values deepcopy returns unchanged; module dicts holding tensors or submodules; containers
# copied as new empty ones when empty (module hook registries).
_ATOMIC = frozenset(
    {int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.memory_format}
)
_TENSOR_DICTS = frozenset({"_parameters", "_buffers", "_modules"})
_CONTAINERS = frozenset({dict, OrderedDict, set})
# Classes defining any of these copy themselves their own way (deepcopy is used for them).
_CUSTOM_COPY = ("__deepcopy__", "__reduce_ex__", "__reduce__", "__getstate__", "__slots__")
_PLAIN_MODULE: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
# Module.__setstate__ is ``__dict__.update`` plus adding hook registries that old pickles
# lack (a subset of these keys); a convolution's also adds a missing ``padding_mode``.
_SETSTATE_KEYS = frozenset(nn.Module().__dict__)
_DICT_SETSTATE: dict[Any, frozenset[str]] = {
    nn.Module.__setstate__: _SETSTATE_KEYS,
    nn.modules.conv._ConvNd.__setstate__: _SETSTATE_KEYS | {"padding_mode"},
}


def _plain_module(cls: type) -> bool:
    """Whether ``copy.deepcopy`` copies instances of ``cls`` as it does plain modules:
    ``Module.__getstate__`` (its ``__dict__``) then ``__setstate__``."""
    got = _PLAIN_MODULE.get(cls)
    if got is None:
        got = _PLAIN_MODULE[cls] = not any(
            name in vars(k)
            for k in cls.__mro__
            if k is not object and k is not nn.Module
            for name in _CUSTOM_COPY
        )
    return got


def meta_copy(model: nn.Module, mods: list[nn.Module] | None = None) -> nn.Module:
    """A copy whose tensors live on the meta device: shapes only, no data, no compute.

    Equivalent to ``copy.deepcopy`` with every parameter and buffer replaced by an empty meta
    tensor, but copies standard modules attribute by attribute (plain values are shared, as
    deepcopy would return them unchanged), which is several times faster. A module's hook
    registries, when all empty, become shared read-only empty ones (`_EMPTY_REGISTRIES`):
    the copies only run forwards, and registering a hook on one fails instead of reaching
    others. Standard leaf modules of the copy get shortcut forwards (`_fastleaf.install`).
    ``mods``: the model's `all_modules` when the caller has them.
    """
    memo: dict[int, Any] = {}
    mods = all_modules(model) if mods is None else mods
    empty_like = torch.empty_like
    for m in mods:
        for p in m._parameters.values():
            if p is not None and id(p) not in memo:
                if type(p) is not nn.Parameter and isinstance(p, _LAZY):
                    _refuse_lazy(model, mods)  # raises: tracing must not initialize them
                # what nn.Parameter(data, requires_grad) returns, without its Python detour
                memo[id(p)] = _make_subclass(
                    nn.Parameter, empty_like(p, device=_META), p.requires_grad
                )
        for b in m._buffers.values():
            if b is not None and id(b) not in memo:
                if type(b) is not torch.Tensor and isinstance(b, _LAZY):
                    _refuse_lazy(model, mods)
                memo[id(b)] = empty_like(b, device=_META)
    if not all(map(_plain_module, set(map(type, mods)))):
        out = copy.deepcopy(model, memo)
        install(all_modules(out))
        return out
    for m in mods:
        memo[id(m)] = object.__new__(type(m))

    def value(k: str, v: Any) -> Any:
        t = type(v)
        if k in _TENSOR_DICTS and isinstance(v, dict):
            if t is dict:
                return {n: None if x is None else memo[id(x)] for n, x in v.items()}
            return t((n, None if x is None else memo[id(x)]) for n, x in v.items())
        return copy.deepcopy(v, memo)

    atomic, containers = _ATOMIC, _CONTAINERS
    registries, empty = _REGISTRY_KEYS, _EMPTY_REGISTRIES
    n_registries = len(registries)
    dict_setstate = _DICT_SETSTATE
    copies = []
    for m in mods:
        own = m.__dict__
        state = own.copy()  # atomic values (and tuples of them) stay shared
        seen = 0  # hook registries found, all empty so far (else -1)
        for k, v in own.items():
            t = type(v)
            if t in atomic or (t is tuple and atomic.issuperset(map(type, v))):
                continue
            if k in registries:
                if v:
                    seen = -1
                    state[k] = copy.deepcopy(v, memo)
                elif seen >= 0:
                    seen += 1
                    state[k] = empty[k]
                else:
                    state[k] = t()
                continue
            state[k] = t() if t in containers and not v else value(k, v)
        if seen != n_registries:  # not all present and empty: each its own container
            for k in registries & own.keys():
                if state[k] is empty[k]:
                    state[k] = type(own[k])()
        state.pop("_compiled_call_impl", None)  # as Module.__getstate__ drops it
        new = memo[id(m)]
        needs = dict_setstate.get(type(new).__setstate__)
        if needs is not None and state.keys() >= needs:
            new.__dict__.update(state)  # what its __setstate__ does given those keys
        else:
            new.__setstate__(state)
        copies.append(new)
    install(copies)
    return memo[id(model)]
