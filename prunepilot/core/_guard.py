"""Watch a forward's own Python code for anything that depends on tensor sizes.

`trace` verifies its groups by pruning a copy and running it: a model's code may fix a size
that pruning changes (``x.view(1, 1280)``, ``self.hidden_dim`` in a reshape). That code can
only learn a size by asking a tensor (``x.shape``, ``x.size(1)``, ``len(x)``) or hold one as a
constant it passes to a size-taking op. A `ShapeGuard` (a torch-function mode, so it sees
calls made from Python, not the ops they decompose into) notes whether the forward did
either: when every call it made is one whose other arguments are values, dimension indices,
flags or spatial settings (`_SAFE`), the same Python runs unchanged on any pruned copy and
each op's sizes then follow from its inputs, which the channel rules keep consistent.
Standard leaf modules running prunepilot's shortcut forwards (`_fastleaf`) are trusted:
pruning updates every attribute their forwards read.

Code that reads sizes may also turn them into data (RAFT scales its correlation volume by
``1 / sqrt(num_channels)``): pruning then changes what the model computes without breaking
its forward. The guard logs the numbers passed as data (`ShapeGuard.values`); verification
compares the log of a pruned copy's forward with the original's (`first_difference`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ._fastleaf import trust

__all__ = ["ShapeGuard", "can_watch", "first_difference"]

log = logging.getLogger("prunepilot.core")

Check = Callable[[tuple[Any, ...], dict[str, Any]], bool]
T = torch.Tensor


def _any(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return True


def _groups_one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A convolution's ``groups`` must match its channels: only ``groups=1`` is size-free."""
    groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
    return type(groups) is int and groups == 1


def _getters(*names: str) -> list[Any]:
    return [getattr(T, n).__get__ for n in names]


def _present(owner: Any, *names: str) -> list[Any]:
    return [getattr(owner, n) for n in names if hasattr(owner, n)]


# Calls whose arguments other than tensors are values (scalars, flags, probabilities),
# dimension indices or spatial settings (kernel, stride, output size of pooling over the
# trailing dims: a channel dim pooled there is pinned by the channel rules), and reads of
# properties that pruning never changes (rank, dtype, device). Sizes, split sizes, group
# counts and shapes of new tensors are none of these.
_FREE: list[Any] = [
    *_present(torch, "add", "sub", "mul", "div", "neg", "relu", "relu_", "sigmoid", "tanh"),
    *_present(torch, "flatten", "cat", "concat", "concatenate", "mean", "sum"),
    *_present(T, "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg"),
    *_present(T, "__rsub__", "__rtruediv__", "__rdiv__"),
    *_present(T, "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"),
    *_present(T, "flatten", "mean", "sum", "softmax", "log_softmax"),
    *_present(T, "contiguous", "clone", "detach", "dim", "is_floating_point"),
    *_present(F, "relu", "relu_", "relu6", "silu", "gelu", "hardswish", "hardsigmoid"),
    *_present(F, "sigmoid", "tanh", "leaky_relu", "leaky_relu_", "elu", "selu", "celu"),
    *_present(F, "mish", "hardtanh", "hardtanh_", "softplus", "softmax", "log_softmax"),
    *_present(F, "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout"),
    *_present(F, "linear", "batch_norm", "instance_norm"),
    *_present(F, "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d"),
    *_present(F, "max_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"),
    *_present(F, "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d"),
    *_present(F, "adaptive_max_pool3d"),
    *_present(torch._C, "_set_grad_enabled"),
    *_getters("dtype", "device", "requires_grad", "is_cuda", "is_meta", "ndim", "layout"),
]
_SAFE: dict[Any, Check] = {
    **dict.fromkeys(_FREE, _any),
    **dict.fromkeys(_present(torch, "conv1d", "conv2d", "conv3d"), _groups_one),
}


def _scalars(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The arguments that are not tensors (numbers, and data lists for ``torch.tensor``)."""
    return tuple(a for a in (*args, *kwargs.values()) if not isinstance(a, torch.Tensor))


def _fill(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The fill value of ``full``-like calls (their size may follow the channels)."""
    return (args[1] if len(args) > 1 else kwargs.get("fill_value"),)


# Calls taking numbers as data (an operand, a clamp bound, a tensor's content): a number the
# code derives from a size (``x / x.shape[1]``, ``torch.tensor(num_channels)``) changes with
# the channels, and with it what the model computes, without breaking its forward.
_VALUES: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    **dict.fromkeys(
        [
            *_present(torch, "add", "sub", "rsub", "mul", "div", "true_divide", "pow"),
            *_present(torch, "clamp", "clamp_min", "clamp_max", "tensor", "as_tensor"),
            *_present(torch, "scalar_tensor", "floor_divide", "remainder", "fmod"),
            *_present(T, "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow"),
            *_present(T, "pow_", "true_divide", "floor_divide", "remainder", "fmod", "clamp"),
            *_present(T, "clamp_", "clamp_min", "clamp_max", "fill_", "masked_fill"),
            *_present(T, "__rsub__", "__rtruediv__", "__rdiv__", "__rpow__", "__rfloordiv__"),
            *_present(T, "__rmod__"),
        ],
        _scalars,
    ),
    **dict.fromkeys([*_present(torch, "full", "full_like"), *_present(T, "new_full")], _fill),
}


def first_difference(before: list[tuple[Any, Any]], after: list[tuple[Any, Any]]) -> str | None:
    """How two forwards' value logs (`ShapeGuard.values`) first differ, or ``None``."""
    for (f, a), (g, b) in zip(before, after, strict=False):
        if f is not g:
            return f"its code takes another path ({_name(g)} where it called {_name(f)})"
        if a != b and repr(a) != repr(b):  # repr: NaN equals itself
            return f"its code computes a value from a size ({_name(f)}: {a!r} becomes {b!r})"
    if len(before) != len(after):
        return "its code takes another path (it makes another number of calls)"
    return None


def _name(func: Any) -> str:
    """``Tensor.shape`` for a property read, else the function's name as users spell it
    (``torch.tensor``, ``Tensor.view``)."""
    owner: Any = getattr(func, "__self__", None)
    if type(owner).__name__ == "getset_descriptor":
        return f"Tensor.{owner.__name__}"
    name = str(getattr(func, "__qualname__", None) or repr(func))
    for internal, public in (("_VariableFunctionsClass.", "torch."), ("TensorBase.", "Tensor.")):
        if name.startswith(internal):
            return public + name[len(internal) :]
    return name


def can_watch() -> bool:
    """Whether a `ShapeGuard` would see every call: no other torch-function mode is active
    (one could answer calls itself) and torch functions are not disabled."""
    return torch._C._len_torch_function_stack() == 0 and torch._C._is_torch_function_enabled()


class ShapeGuard(TorchFunctionMode):
    """A torch-function mode noting whether the forward's code observed or passed a size,
    and logging the numbers it passes as data.

    Attributes:
        blind: no call so far read a tensor's size or passed one (see the module docs).
        culprit: the first call that did, by name (logged at debug level), when not blind.
        values: every call taking numbers as data (`_VALUES`) with those numbers, in
            order: verification compares a pruned copy's log with the original's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.blind = True
        self.culprit: str | None = None
        self.values: list[tuple[Any, tuple[Any, ...]]] = []
        self._trusted = False

    def __enter__(self) -> ShapeGuard:
        out = super().__enter__()
        self._trusted = trust(True)
        return out

    def __exit__(self, *exc: object) -> None:
        trust(self._trusted)
        super().__exit__(*exc)

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        if self.blind:
            check = _SAFE.get(func)
            if check is None or not check(args, kwargs):
                self.blind = False
                self.culprit = _name(func)
                log.debug("the forward's code reads or passes a size (%s): verify", self.culprit)
        take = _VALUES.get(func)
        if take is not None:
            self.values.append((func, take(args, kwargs)))
        return func(*args, **kwargs)
