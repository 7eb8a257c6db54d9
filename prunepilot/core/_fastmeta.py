"""Run ATen ops on meta tensors cheaply.

Tracing and verification run the model on the meta device (shapes only), where ATen's own
meta kernels for common layers are Python decompositions costing ~0.1-1 ms per call (batch
norm, layer norm, broadcasting pointwise ops). `MetaRunner` answers those ops from short
shape rules that check what the kernels check (so a pruned model whose sizes no longer fit
still fails), and answers every other repeated non-aliasing op from a memo keyed by the
metadata of its arguments (meta kernels are pure functions of it). Everything else runs the
real meta kernel. A rule that does not apply (non-contiguous or mixed-dtype inputs, unusual
arguments) returns ``NotImplemented`` and the kernel runs instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ._fastleaf import Sink, activate

__all__ = ["MetaMode", "MetaRunner", "meta_empty"]

aten = torch.ops.aten
Tensor = torch.Tensor
_META = torch.device("meta")
_PLAIN = frozenset({Tensor, torch.nn.Parameter})  # no tensor subclasses with their own dispatch
_LOW = (torch.float16, torch.bfloat16)
Shortcut = Callable[[tuple[Any, ...], dict[str, Any]], Any]


def _acc(dtype: torch.dtype) -> torch.dtype:
    """The computation dtype ATen's norm kernels use for their statistics."""
    return torch.float32 if dtype in _LOW else dtype


_STRIDES: dict[tuple[int, ...], tuple[int, ...]] = {}


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides ``torch.empty(shape)`` gives (sizes 0 and 1 count as 1), cached."""
    got = _STRIDES.get(shape)
    if got is None:
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = strides[i + 1] * max(shape[i + 1], 1)
        got = _STRIDES[shape] = tuple(strides)
    return got


def meta_empty(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """``torch.empty(shape, dtype, device="meta")``; ``empty_strided`` with cached strides
    skips the stride computation and is about twice as fast."""
    if type(shape) is not tuple and type(shape) is not torch.Size:
        shape = tuple(shape)
    return torch.empty_strided(shape, _contiguous_strides(shape), dtype=dtype, device=_META)


def _plain(t: Any) -> bool:
    """A contiguous floating tensor on the meta device."""
    return (
        type(t) in _PLAIN  # exact types: no subclass with a dispatch of its own
        and t.is_meta
        and t.is_floating_point()
        and t.is_contiguous()
    )


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        off = n - len(s)
        for i, d in enumerate(s):
            o = out[off + i]
            if d != o:
                if o == 1:
                    out[off + i] = d
                elif d != 1:
                    raise RuntimeError(
                        f"The size of tensor a ({o}) must match the size of tensor b ({d}) at "
                        f"non-singleton dimension {off + i}"
                    )
    return tuple(out)


def _get(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


# -- pointwise ------------------------------------------------------------------------------
_POINTWISE_NAMES = (
    "abs",
    "add",
    "clamp",
    "clamp_max",
    "clamp_min",
    "div",
    "elu",
    "erf",
    "exp",
    "gelu",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "leaky_relu",
    "log",
    "maximum",
    "minimum",
    "mish",
    "mul",
    "neg",
    "pow",
    "reciprocal",
    "relu",
    "relu6",
    "rsqrt",
    "sigmoid",
    "silu",
    "softplus",
    "sqrt",
    "square",
    "sub",
    "tanh",
)
# Argument types that are numbers or strings ("number" is how schemas print Scalar).
_SCALAR_TYPES = frozenset(
    {"Scalar", "Scalar?", "number", "number?", "float", "float?", "int", "int?", "bool", "str"}
    | {"str?"}
)


def _pointwise_overloads() -> dict[Any, bool]:
    """Overloads taking tensors and numbers only, returning one tensor -> whether in place."""
    found: dict[Any, bool] = {}
    for base in _POINTWISE_NAMES:
        for name in (base, base + "_"):
            packet = getattr(aten, name, None)
            if packet is None:
                continue
            for ov in packet.overloads():
                op = getattr(packet, ov)
                sch = op._schema
                arguments = list(sch.arguments)
                if len(sch.returns) != 1 or str(sch.returns[0].type) != "Tensor":
                    continue
                if not arguments or str(arguments[0].type) != "Tensor":
                    continue
                types = [str(a.type) for a in arguments]
                if any(t != "Tensor" and t not in _SCALAR_TYPES for t in types):
                    continue
                if any(a.alias_info is not None and a.alias_info.is_write for a in arguments[1:]):
                    continue
                ret = sch.returns[0].alias_info
                found[op] = ret is not None and ret.is_write
    return found


def _make_pointwise(inplace: bool) -> Shortcut:
    def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self = args[0]
        if not _plain(self):
            return NotImplemented
        dtype = self.dtype
        if len(args) == 1 and not kwargs:  # unary: the input's shape
            return self if inplace else meta_empty(self.shape, dtype)
        shapes = [tuple(self.shape)]
        for a in (*args[1:], *kwargs.values()):
            if isinstance(a, Tensor):
                if not _plain(a) or a.dtype != dtype:
                    return NotImplemented
                shapes.append(tuple(a.shape))
            elif a is not None and not isinstance(a, (bool, int, float, str)):
                return NotImplemented
        shape = _broadcast(shapes)
        if inplace:
            if shape != shapes[0]:
                raise RuntimeError(
                    f"output with shape {list(shapes[0])} doesn't match the broadcast shape "
                    f"{list(shape)}"
                )
            return self
        return meta_empty(shape, dtype)

    return run


# -- layers ---------------------------------------------------------------------------------
def _check_vec(t: Any, n: int, what: str, dtype: torch.dtype | None = None) -> bool:
    """Whether an optional per-channel tensor fits; raises when its size is wrong."""
    if t is None:
        return True
    if type(t) not in _PLAIN or not t.is_meta:
        return False
    if t.ndim != 1 or t.shape[0] != n:
        raise RuntimeError(f"{what} should contain {n} elements not {t.numel()}")
    return dtype is None or t.dtype == dtype


_BN_VECS = tuple(enumerate(("weight", "bias", "running_mean", "running_var"), start=1))


def _batch_norm_out(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Batch norm's checks and its output alone (``NotImplemented``: the kernel's case)."""
    x = args[0]
    if not _plain(x):
        return NotImplemented
    shape = x.shape
    if len(shape) < 2:
        return NotImplemented
    c = shape[1]
    for i, name in _BN_VECS:
        if not _check_vec(_get(args, kwargs, i, name, None), c, name):
            return NotImplemented
    return meta_empty(shape, x.dtype)


def _batch_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    out = _batch_norm_out(args, kwargs)
    if out is NotImplemented:
        return out
    c, acc = out.shape[1], _acc(out.dtype)
    return out, meta_empty((c,), acc), meta_empty((c,), acc)


def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    ns = tuple(_get(args, kwargs, 1, "normalized_shape", ()))
    if not _plain(x) or not ns or not all(isinstance(s, int) for s in ns):
        return NotImplemented
    k = len(ns)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != ns:
        raise RuntimeError(
            f"Given normalized_shape={list(ns)}, expected input with shape [*, "
            f"{', '.join(map(str, ns))}], but got input of size{list(x.shape)}"
        )
    for i, name in ((2, "weight"), (3, "bias")):
        t = _get(args, kwargs, i, name, None)
        if t is None:
            continue
        if type(t) not in _PLAIN or not t.is_meta:
            return NotImplemented
        if tuple(t.shape) != ns:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of "
                f"shape {list(t.shape)} and normalized_shape = {list(ns)}"
            )
    stats = (*x.shape[: x.ndim - k], *([1] * k))
    acc = _acc(x.dtype)
    return meta_empty(x.shape, x.dtype), meta_empty(stats, acc), meta_empty(stats, acc)


def _ints(v: Any, n: int) -> Sequence[int] | None:
    """``v`` as ``n`` ints (one int or a one-element sequence is repeated); else ``None``."""
    t = type(v)
    if t is list or t is tuple:
        if len(v) == 1:
            v = v[0]
        elif len(v) == n:
            for i in v:
                if not isinstance(i, int):
                    return None
            return v
        else:
            return None
    return [v] * n if isinstance(v, int) else None


def _convolution(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) != 9 or kwargs:
        return NotImplemented
    x, w, b, stride, padding, dilation, transposed, _, groups = args
    if transposed is not False or not isinstance(groups, int):
        return NotImplemented
    if not (_plain(x) and _plain(w)):
        return NotImplemented
    xs, ws, dtype = x.shape, w.shape, x.dtype
    if dtype != w.dtype or len(xs) != len(ws) or len(xs) < 3:
        return NotImplemented
    n = len(xs) - 2
    s, p, d = _ints(stride, n), _ints(padding, n), _ints(dilation, n)
    if s is None or p is None or d is None:
        return NotImplemented
    out_c = ws[0]
    if groups < 1 or out_c % groups or xs[1] != ws[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(ws)}, expected input"
            f"{list(xs)} to have {ws[1] * groups} channels, but got {xs[1]} "
            "channels instead"
        )
    if b is not None and not _check_vec(b, out_c, "bias", dtype):
        return NotImplemented
    out = [xs[0], out_c]
    for i in range(n):
        size = (xs[2 + i] + 2 * p[i] - d[i] * (ws[2 + i] - 1) - 1) // s[i] + 1
        if size <= 0:
            raise RuntimeError(f"convolution output size is too small ({size})")
        out.append(size)
    return meta_empty(out, dtype)


def _addmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bias, m1, m2 = args[:3]
    if not all(type(t) in _PLAIN and t.is_meta for t in (bias, m1, m2)):
        return NotImplemented
    if not (bias.dtype == m1.dtype == m2.dtype and m1.is_floating_point()):
        return NotImplemented
    if m1.ndim != 2 or m2.ndim != 2 or m1.shape[1] != m2.shape[0]:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({m1.shape[0]}x{m1.shape[1]} and "
            f"{m2.shape[0]}x{m2.shape[1]})"
        )
    shape = (m1.shape[0], m2.shape[1])
    if _broadcast([tuple(bias.shape), shape]) != shape:
        raise RuntimeError(f"bias of shape {list(bias.shape)} does not broadcast to {list(shape)}")
    return meta_empty(shape, m1.dtype)


def _softmax(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    last = _get(args, kwargs, 2, "dtype", None)
    if not _plain(x) or last not in (None, False):
        return NotImplemented
    dim = _get(args, kwargs, 1, "dim", None)
    if not isinstance(dim, int) or not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        return NotImplemented
    return meta_empty(x.shape, x.dtype)


def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    dims = _get(args, kwargs, 1, "dim", None)
    keep = _get(args, kwargs, 2, "keepdim", False)
    if not _plain(x) or kwargs.get("dtype") is not None or not isinstance(keep, bool):
        return NotImplemented
    if not isinstance(dims, (list, tuple)) or not dims or not x.ndim:
        return NotImplemented
    if not all(isinstance(d, int) and -x.ndim <= d < x.ndim for d in dims):
        return NotImplemented
    red = {d % x.ndim for d in dims}
    if len(red) != len(dims):
        return NotImplemented
    shape = [1 if i in red else s for i, s in enumerate(x.shape) if keep or i not in red]
    return meta_empty(shape, x.dtype)


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    tensors = _get(args, kwargs, 0, "tensors", None)
    dim = _get(args, kwargs, 1, "dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int):
        return NotImplemented
    first = tensors[0]
    if not _plain(first):
        return NotImplemented
    dtype, ref = first.dtype, first.shape
    nd = len(ref)
    if nd == 0 or not -nd <= dim < nd:
        return NotImplemented
    dim %= nd
    head, tail = ref[:dim], ref[dim + 1 :]
    total = 0
    bad = -1  # the first tensor whose other sizes differ (reported once all are checked)
    for k, t in enumerate(tensors):  # one pass: a concatenation may have many inputs
        if type(t) not in _PLAIN or not t.is_meta or t.dtype != dtype or not t.is_contiguous():
            return NotImplemented
        shape = t.shape
        if len(shape) != nd:
            return NotImplemented
        if bad < 0 and (shape[:dim] != head or shape[dim + 1 :] != tail):
            bad = k
        total += shape[dim]
    if bad >= 0:
        shape = tensors[bad].shape
        i = next(i for i in range(nd) if i != dim and shape[i] != ref[i])
        raise RuntimeError(
            f"Sizes of tensors must match except in dimension {dim}. Expected size "
            f"{ref[i]} but got size {shape[i]} for tensor number {bad} in the list."
        )
    out = list(ref)
    out[dim] = total
    return meta_empty(out, dtype)


def _empty_like_kernel(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``aten.empty.memory_format`` on the meta device (batch norm's reserve buffer)."""
    size = args[0] if args else kwargs.get("size")
    dtype = kwargs.get("dtype")
    if (
        kwargs.get("device") != _META
        or kwargs.get("layout") not in (None, torch.strided)
        or kwargs.get("memory_format") not in (None, torch.contiguous_format)
        or not isinstance(size, (list, tuple))
        or not all(isinstance(s, int) and s >= 0 for s in size)
    ):
        return NotImplemented
    return meta_empty(size, dtype if dtype is not None else torch.get_default_dtype())


def _shortcuts() -> dict[Any, Shortcut]:
    table: dict[Any, Shortcut] = {
        op: _make_pointwise(inplace) for op, inplace in _pointwise_overloads().items()
    }
    table[aten.native_batch_norm.default] = _batch_norm
    legit = getattr(aten, "_native_batch_norm_legit_no_training", None)
    if legit is not None:
        table[legit.default] = lambda a, k: _batch_norm(a[:5], {})
    table[aten.native_layer_norm.default] = _layer_norm
    table[aten.convolution.default] = _convolution
    table[aten.addmm.default] = _addmm
    table[aten._softmax.default] = lambda a, k: _softmax(a[:2], {})
    safe = getattr(aten, "_safe_softmax", None)
    if safe is not None:
        table[safe.default] = _softmax
    table[aten.mean.dim] = _mean
    table[aten.cat.default] = _cat
    table[aten.empty.memory_format] = _empty_like_kernel
    return table


SHORTCUTS: dict[Any, Shortcut] = _shortcuts()
# The same by ``id`` of the overload: overloads hash in Python (a call per lookup), and
# these live as long as the table holds them, so their ids stay theirs.
_BY_ID: dict[int, Shortcut] = {id(op): fn for op, fn in SHORTCUTS.items()}


# -- memo -----------------------------------------------------------------------------------
def _memoizable(func: Any) -> bool:
    """Ops whose outputs are fresh tensors and which write nothing."""
    sch = func._schema
    if any(r.alias_info is not None for r in sch.returns):
        return False
    if any(a.alias_info is not None and a.alias_info.is_write for a in sch.arguments):
        return False
    return not func._schema.is_mutable and torch.Tag.nondeterministic_seeded not in func.tags


class _NoKey(Exception):
    pass


def _sig(a: Any) -> Any:
    if isinstance(a, Tensor):
        if type(a) not in _PLAIN or not a.is_meta:
            raise _NoKey
        return (tuple(a.shape), a.stride(), a.storage_offset(), a.dtype)
    if isinstance(a, (list, tuple)):
        return (type(a), *(_sig(x) for x in a))
    if a is None or isinstance(a, (bool, int, float, str, torch.dtype, torch.device)):
        return a
    if isinstance(a, (torch.memory_format, torch.layout)):
        return a
    raise _NoKey


class MetaRunner:
    """Runs ATen ops whose tensors are all on the meta device (see the module docstring).

    Args:
        check: also run the real kernel for every answered op and compare output
            metadata (shape, strides, dtype); raises ``AssertionError`` on a difference.
            For tests only.
    """

    def __init__(self, check: bool = False) -> None:
        self.memo: dict[Any, tuple[bool, list[tuple[tuple[int, ...], tuple[int, ...], Any]]]] = {}
        # id(overload) -> (overload, whether memoizable); the entry keeps the overload
        # alive, so its id (also the memo's key) stays its own
        self._pure: dict[int, tuple[Any, bool]] = {}
        self.check = check

    def answer(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The op's outputs from a shape rule or the memo, as `__call__` gives them, without
        running a kernel (whose own ops a dispatch mode would see); else ``NotImplemented``.
        Call it with dispatch modes disabled (its empty outputs are ops too)."""
        key = id(func)
        fast = _BY_ID.get(key)
        if fast is not None:
            out = fast(args, kwargs)
            if out is not NotImplemented:
                return out
        pure = self._pure.get(key)
        if pure is None or not pure[1]:
            return NotImplemented  # not memoizable, or never run yet
        try:
            got = self.memo.get((key, _sig(args), _sig(tuple(kwargs.items())) if kwargs else ()))
        except (_NoKey, TypeError):
            return NotImplemented
        if got is None:
            return NotImplemented
        single, metas = got
        outs = [torch.empty_strided(s, st, dtype=dt, device=_META) for s, st, dt in metas]
        return outs[0] if single else tuple(outs)

    def batch_norm_output(self, args: tuple[Any, ...]) -> Any:
        """The output of an inference batch norm of ``(x, weight, bias, mean, var)`` alone,
        checked as the kernel checks it; ``NotImplemented`` when no rule applies. For modes
        that keep no ops (the leaf shortcuts are off in ``check`` mode). Call it with
        dispatch modes disabled."""
        return _batch_norm_out(args, {})

    def __call__(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fid = id(func)
        fast = _BY_ID.get(fid)
        if fast is not None:
            out = fast(args, kwargs)
            if out is not NotImplemented:
                if self.check:
                    _same_meta(func, out, func(*args, **kwargs))
                return out
        got_pure = self._pure.get(fid)
        if got_pure is None:
            got_pure = self._pure[fid] = (func, _memoizable(func))
        if not got_pure[1]:
            return func(*args, **kwargs)
        try:
            key = (fid, _sig(args), _sig(tuple(kwargs.items())) if kwargs else ())
            got = self.memo.get(key)
        except (_NoKey, TypeError):
            return func(*args, **kwargs)
        if got is not None:
            single, metas = got
            outs = [torch.empty_strided(s, st, dtype=dt, device=_META) for s, st, dt in metas]
            out = outs[0] if single else tuple(outs)
            if self.check:
                _same_meta(func, out, func(*args, **kwargs))
            return out
        out = func(*args, **kwargs)
        single = isinstance(out, Tensor)
        items = [out] if single else out
        if isinstance(items, (list, tuple)) and all(type(o) in _PLAIN and o.is_meta for o in items):
            self.memo[key] = (
                single and isinstance(out, Tensor),
                [(tuple(o.shape), o.stride(), o.dtype) for o in items],
            )
            if not single and not isinstance(out, tuple):
                del self.memo[key]  # a list result: keep the kernel's own type
        return out


def _same_meta(func: Any, got: Any, want: Any) -> None:
    a = [got] if isinstance(got, Tensor) else list(got)
    b = [want] if isinstance(want, Tensor) else list(want)
    ma = [(tuple(t.shape), t.stride(), t.dtype) for t in a]
    mb = [(tuple(t.shape), t.stride(), t.dtype) for t in b]
    if ma != mb or type(got) is not type(want):
        raise AssertionError(f"{func}: fast meta gave {ma}, the kernel {mb}")


class MetaMode(TorchDispatchMode):
    """Runs every op of a forward through a `MetaRunner` (no recording); leaf-module
    shortcuts of meta copies (`_fastleaf`) run theirs through it directly."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Not wrapped in torch._disable_dynamo (a few µs per op): these modes only run
        # eager shape-propagation forwards, never inside torch.compile.
        return False

    def __init__(self, runner: MetaRunner) -> None:
        super().__init__()
        self.runner = runner
        self._outer: Sink | None = None

    def __enter__(self) -> MetaMode:
        out = super().__enter__()
        self._outer = activate(None if self.runner.check else self)
        return out

    def __exit__(self, *exc: object) -> None:
        activate(self._outer)
        super().__exit__(*exc)

    records = False  # it only runs ops

    def note(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Nothing to account for: this mode only runs ops."""

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return self.runner(func, args, kwargs or {})
