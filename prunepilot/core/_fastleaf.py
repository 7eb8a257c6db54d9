"""Shortcut forwards for standard leaf modules of prunepilot's own meta copies.

A forward of a meta copy (capture, verification) runs every ATen op through a Python dispatch
mode, a round trip of several microseconds per op. For standard leaf modules (convolutions,
eval-mode batch norm, activations, global average pooling) the ops their forward produces are
known: `install` gives such modules of a meta copy a forward that builds those ops' arguments
itself, runs them through the active mode's `MetaRunner` and reports them to the mode
(`Sink.note`), exactly as dispatch would have: same overloads, arguments, outputs and order.

Only prunepilot's copies get these forwards (never a user's model). A shortcut applies only
while a `Sink` mode is the only dispatch mode and no torch-function mode is active (a
`_guard.ShapeGuard` watching the model's code is turned off inside them: `trust`); anything
unusual (other input types or ranks, padding modes, training-mode norms) or any error runs the
module's own forward instead, so failures keep their usual messages.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from ._fastmeta import MetaRunner

__all__ = ["Sink", "activate", "install", "trust"]

aten = torch.ops.aten
Tensor = torch.Tensor
_PLAIN = frozenset({Tensor, nn.Parameter})
_META = torch.device("meta")
_no_dispatch = torch._C._DisableTorchDispatch
_dispatch_depth = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_no_torch_function = torch._C.DisableTorchFunction


class Sink(Protocol):
    """A dispatch mode that lets leaf shortcuts run ops through its runner."""

    @property
    def runner(self) -> MetaRunner | None:
        """Answers the ops (`MetaRunner.answer`); no shortcuts without one."""

    @property
    def records(self) -> bool:
        """Whether it keeps the ops it is told of; if not, a shortcut may skip ops whose
        outputs the module's result does not depend on (batch norm's saved statistics)."""

    def note(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Account for one op that ran outside dispatch (as if it had been dispatched)."""


class _State(threading.local):
    """Per thread, as torch's mode stacks are: traces in other threads keep their own."""

    sink: Sink | None = None  # the mode shortcuts report to
    trusted = False  # run shortcut forwards with torch-function modes off


_STATE = _State()


def trust(on: bool) -> bool:
    """Run shortcut forwards with torch-function modes off (``on``), so that a mode watching
    the model's own code (`_guard.ShapeGuard`) does not see theirs; returns the previous."""
    prev = _STATE.trusted
    _STATE.trusted = on
    return prev


def activate(sink: Sink | None) -> Sink | None:
    """Make ``sink`` the mode shortcuts report to (``None``: none); returns the previous."""
    prev = _STATE.sink
    _STATE.sink = sink
    return prev


def _sink() -> Sink | None:
    sink = _STATE.sink
    if sink is None or _dispatch_depth() != 1 or _function_modes():
        return None
    return sink


def _quiet(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` with dispatch modes off; ``NotImplemented`` when it raises (a shape
    rule's size check: the module's own forward, run instead, reports it as usual)."""
    try:
        with _no_dispatch():
            return call(*args)
    except Exception:
        return NotImplemented


def _emit(sink: Sink, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Answer one op from the sink runner's shape rules or memo (`MetaRunner.answer`)
    outside dispatch, then note it. ``NotImplemented`` (nothing noted) when it needs its
    kernel (which may run ops of its own) or fails: the module's own forward runs it."""
    runner = sink.runner
    if runner is None:
        return NotImplemented
    out = _quiet(runner.answer, func, args, kwargs)
    if out is not NotImplemented:
        sink.note(func, args, kwargs, out)
    return out


_NONE = object()


def _attr(mod: nn.Module, name: str) -> Any:
    """``getattr(mod, name)`` for a standard module, looking in its tensor tables directly
    rather than through ``Module.__getattr__`` (a plain attribute, such as an old-style
    weight norm's weight, still comes first)."""
    d = mod.__dict__
    if name in d:
        return d[name]
    got = mod._parameters.get(name, _NONE)
    if got is _NONE:
        got = mod._buffers.get(name, _NONE)
    return getattr(mod, name) if got is _NONE else got


def _plain(x: Any) -> bool:
    return type(x) in _PLAIN and x.is_meta


def _conv(mod: nn.modules.conv._ConvNd, x: Any) -> Any:
    sink = _sink()
    if sink is not None and _plain(x) and mod.padding_mode == "zeros":
        w = _attr(mod, "weight")
        pad = mod.padding
        if not isinstance(pad, str) and x.ndim == w.ndim:
            n = w.ndim - 2
            args = (
                x,
                w,
                _attr(mod, "bias"),
                list(mod.stride),
                list(pad),
                list(mod.dilation),
                False,
                [0] * n,
                mod.groups,
            )
            out = _emit(sink, aten.convolution.default, args, {})
            if out is not NotImplemented:
                return out
    return type(mod).forward(mod, x)


_BN_RANK: dict[type[nn.Module], tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3),
    nn.BatchNorm2d: (4,),
    nn.BatchNorm3d: (5,),
}


def _batch_norm(mod: nn.modules.batchnorm._BatchNorm, x: Any) -> Any:
    sink = _sink()
    if sink is not None and _plain(x) and not mod.training and mod.eps >= 0:
        mean, var = _attr(mod, "running_mean"), _attr(mod, "running_var")
        if mean is not None and var is not None and x.ndim in _BN_RANK[type(mod)]:
            weight, bias = _attr(mod, "weight"), _attr(mod, "bias")
            if not sink.records:  # the output alone: no reserve buffer or saved statistics
                runner = sink.runner
                out = NotImplemented
                if runner is not None:
                    out = _quiet(runner.batch_norm_output, (x, weight, bias, mean, var))
                return type(mod).forward(mod, x) if out is NotImplemented else out
            # dispatch's ops: the reserve buffer (``aten.empty``, which recording skips),
            # then the norm
            momentum = 0.0 if mod.momentum is None else mod.momentum
            norm = (x, weight, bias, mean, var, False, momentum, mod.eps)
            outs = _emit(sink, aten.native_batch_norm.default, norm, {})
            if outs is not NotImplemented:
                return outs[0]
    return type(mod).forward(mod, x)


def _pointwise(
    op: Callable[[nn.Module], tuple[Any, dict[str, Any]]],
) -> Callable[[nn.Module, Any], Any]:
    """A forward running one pointwise op on its input: ``op(mod)`` gives the overload and
    keyword arguments."""

    def forward(mod: nn.Module, x: Any) -> Any:
        sink = _sink()
        if sink is not None and _plain(x):
            func, kwargs = op(mod)
            out = _emit(sink, func, (x,), kwargs)
            if out is not NotImplemented:
                return out
        return type(mod).forward(mod, x)

    return forward


def _inplace(name: str) -> Callable[[nn.Module], tuple[Any, dict[str, Any]]]:
    out, inplace = getattr(aten, name).default, getattr(aten, name + "_").default
    return lambda mod: (inplace if mod.inplace else out, {})


def _gelu(mod: nn.Module) -> tuple[Any, dict[str, Any]]:
    approximate = mod.approximate
    return aten.gelu.default, ({} if approximate == "none" else {"approximate": approximate})


def _global_avg_pool(mod: nn.AdaptiveAvgPool2d, x: Any) -> Any:
    sink = _sink()
    if sink is not None and _plain(x) and x.ndim == 4 and mod.output_size in (1, (1, 1)):
        out = _emit(sink, aten.mean.dim, (x, [-1, -2], True), {})
        if out is not NotImplemented:
            return out
    return type(mod).forward(mod, x)


FORWARDS: dict[type[nn.Module], Callable[[Any, Any], Any]] = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    **dict.fromkeys(_BN_RANK, _batch_norm),
    nn.ReLU: _pointwise(_inplace("relu")),
    nn.SiLU: _pointwise(_inplace("silu")),
    nn.Hardswish: _pointwise(_inplace("hardswish")),
    nn.Hardsigmoid: _pointwise(_inplace("hardsigmoid")),
    nn.Sigmoid: _pointwise(lambda mod: (aten.sigmoid.default, {})),
    nn.Tanh: _pointwise(lambda mod: (aten.tanh.default, {})),
    nn.GELU: _pointwise(_gelu),
    nn.AdaptiveAvgPool2d: _global_avg_pool,
}


# The forwards the shortcuts stand for: a class whose forward was replaced keeps its own.
_ORIGINAL: dict[type[nn.Module], Any] = {cls: cls.forward for cls in FORWARDS}


class _Shortcut:
    """A module's shortcut forward, holding the module weakly: a bound method in the
    module's own ``__dict__`` would make a reference cycle, keeping every meta copy (and
    the capture hanging off it) alive until the cyclic garbage collector traverses them."""

    __slots__ = ("fwd", "mod")

    def __init__(self, fwd: Callable[[Any, Any], Any], mod: nn.Module) -> None:
        self.fwd = fwd
        self.mod = weakref.ref(mod)

    def __call__(self, x: Any) -> Any:
        if _STATE.trusted and type(x) in _PLAIN:
            with _no_torch_function():
                return self.fwd(self.mod(), x)
        return self.fwd(self.mod(), x)


def install(mods: list[nn.Module]) -> None:
    """Give the standard leaf modules among ``mods`` (modules of a meta copy) their shortcut
    forward (an instance attribute; the class's forward stays the fallback)."""
    for m in mods:
        cls = type(m)
        fwd = FORWARDS.get(cls)
        if fwd is not None and "forward" not in m.__dict__ and cls.forward is _ORIGINAL[cls]:
            m.__dict__["forward"] = _Shortcut(fwd, m)
