"""Record a model's dataflow at the ATen level by running it once under a dispatch mode.

The capture sees the ops left after autograd decompositions (``aten.convolution``,
``aten.addmm``, ``aten.native_batch_norm``, ...) with real tensors, so it works through Python
control flow, functional calls and modules called more than once. It never modifies the model:
global module hooks (removed on exit) only note which module is running each op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ._fastleaf import Sink, activate
from ._fastmeta import MetaRunner
from ._guard import ShapeGuard, can_watch
from ._modules import tensorless_norm

__all__ = ["Capture", "OpRecord", "Ref", "capture"]


class Ref:
    """A tensor argument or output of a recorded op, by node id (hashable; do not modify)."""

    __slots__ = ("node",)

    def __init__(self, node: int) -> None:  # a plain class: cheaper than a frozen dataclass
        self.node = node

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and other.node == self.node

    def __hash__(self) -> int:
        return hash((Ref, self.node))

    def __repr__(self) -> str:
        return f"Ref(node={self.node})"


@dataclass(slots=True)
class OpRecord:
    """One ATen op call: its overload, arguments (tensors as `Ref`) and outputs."""

    func: torch._ops.OpOverload
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[Ref | None]
    module: str
    inputs: list[Ref] | None = None  # tensor arguments in order (args, then kwargs)

    @property
    def name(self) -> str:
        """``str(func)`` (e.g. ``aten.add.Tensor``), cached per overload (rules' reasons)."""
        func = self.func
        got = _OP_NAMES.get(id(func))
        if got is None or got[0] is not func:
            got = _OP_NAMES[id(func)] = (func, str(func))
        return got[1]


_OP_NAMES: dict[int, tuple[Any, str]] = {}  # id(overload) -> (overload, its name)


@dataclass
class Capture:
    """Everything recorded while the model ran once."""

    ops: list[OpRecord] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # torch.Size per node
    names: dict[int, str] = field(default_factory=dict)  # node -> parameter/buffer FQN
    bases: dict[int, int] = field(default_factory=dict)  # view node -> base node
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    output: Any = None
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)  # as named_parameters
    meta: bool = False  # ran on the meta device (shapes only)
    shared: bool = False  # some parameter or buffer is registered under several names
    # The forward's own code never read a tensor's size nor passed one to an op
    # (`ShapeGuard`): it runs unchanged on any pruned copy.
    blind: bool = False
    # The numbers the forward's code passed as data (`ShapeGuard.values`); None: not watched.
    values: list[tuple[Any, tuple[Any, ...]]] | None = None
    # Instance norms holding no tensor (their ``num_features`` follows no tensor): per call,
    # the module's name, its input's node and that input's channel dim.
    norm_inputs: list[tuple[str, int, int]] = field(default_factory=list)


_NO_TENSOR = frozenset(
    {"int", "SymInt", "float", "bool", "str", "number", "Scalar", "Layout", "Device"}
    | {"MemoryFormat", "Generator", "Dimname", "ScalarType"}
)
# id(overload) -> (overload, `_tensor_args`): by id, as overloads hash in Python; the
# entry keeps the overload alive, so its id stays its own.
_TENSOR_ARGS: dict[int, tuple[Any, tuple[int, ...]]] = {}


def _tensor_args(func: Any) -> tuple[int, ...]:
    """Positions of an op's arguments that may hold tensors (by schema type)."""
    try:
        arguments = func._schema.arguments
    except AttributeError:
        return tuple(range(64))

    def scalar(t: str) -> bool:  # e.g. "Optional[List[int]]"
        return t.replace("Optional[", "").replace("List[", "").rstrip("]") in _NO_TENSOR

    return tuple(i for i, a in enumerate(arguments) if not a.kwarg_only and not scalar(str(a.type)))


# A new uninitialised tensor (a batch norm's reserve buffer on every call): it has no
# channels and no data, and its uses register it like any other tensor.
_EMPTY = torch.ops.aten.empty.memory_format


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # see MetaMode: an eager recording mode, no torch._disable_dynamo wrapper

    records = True  # leaf shortcuts note every op

    def __init__(
        self,
        cap: Capture,
        known: dict[int, str],
        module_stack: list[str],
        runner: MetaRunner | None = None,
    ) -> None:
        super().__init__()
        self.cap = cap
        self.known = known
        self.ref_of: dict[int, Ref] = {}  # id(tensor) -> its node
        self.shapes = cap.shapes  # one per node
        self.names = cap.names
        self.keep: list[torch.Tensor] = []  # strong refs so ids stay unique while tracing
        self.module_stack = module_stack
        self.runner = runner
        self._outer: Sink | None = None

    def ref(self, t: torch.Tensor) -> Ref:
        key = id(t)
        r = self.ref_of.get(key)
        if r is not None:
            return r
        shapes = self.shapes
        n = len(shapes)
        r = self.ref_of[key] = Ref(n)
        shapes.append(t.shape)  # a torch.Size: a tuple
        self.keep.append(t)
        name = self.known.get(key)
        if name is not None:
            self.names[n] = name
        base = t._base
        if base is not None:
            b = self.ref_of.get(id(base))
            if b is not None:
                self.cap.bases[n] = b.node
        return r

    def node(self, t: torch.Tensor) -> int:
        return self.ref(t).node

    def _arg(self, a: Any, found: list[Ref]) -> Any:
        if isinstance(a, torch.Tensor):
            r = self.ref(a)
            found.append(r)
            return r
        if isinstance(a, (list, tuple)) and a:
            # one pass (a concatenation may list many tensors); a sequence holding neither
            # tensors nor sequences is kept as it is
            out: list[Any] = []
            hit = False
            for x in a:
                if isinstance(x, torch.Tensor):
                    r = self.ref(x)
                    found.append(r)
                    out.append(r)
                    hit = True
                elif isinstance(x, (list, tuple)):
                    out.append(self._arg(x, found))
                    hit = True
                else:
                    out.append(x)
            return type(a)(out) if hit else a
        return a

    def __enter__(self) -> _Recorder:
        out = super().__enter__()
        fast = self.runner is not None and not self.runner.check
        self._outer = activate(self if fast else None)
        return out

    def __exit__(self, *exc: object) -> None:
        activate(self._outer)
        super().__exit__(*exc)

    def _record(
        self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], list[Ref]]:
        """Register an op's tensor arguments (before it runs: an in-place op returns the same
        object); returns the arguments with tensors as `Ref` and the refs in order."""
        arg = self._arg
        found: list[Ref] = []
        got = _TENSOR_ARGS.get(id(func))
        if got is None or got[0] is not func:
            got = _TENSOR_ARGS[id(func)] = (func, _tensor_args(func))
        pos = got[1]
        if pos:
            rl = list(args)
            ref = self.ref
            n = len(rl)
            for i in pos:
                if i < n:
                    a = rl[i]
                    if isinstance(a, torch.Tensor):
                        r = ref(a)
                        found.append(r)
                        rl[i] = r
                    elif a is not None:
                        rl[i] = arg(a, found)
            rargs = tuple(rl)
        else:
            rargs = tuple(args)
        rkwargs = {k: arg(v, found) for k, v in kwargs.items()} if kwargs else {}
        return rargs, rkwargs, found

    def _finish(
        self,
        func: torch._ops.OpOverload,
        rargs: tuple[Any, ...],
        rkwargs: dict[str, Any],
        found: list[Ref],
        out: Any,
    ) -> None:
        if isinstance(out, torch.Tensor):
            outs: list[Ref | None] = [self.ref(out)]
        else:
            flat = out if isinstance(out, (tuple, list)) else tree_flatten(out)[0]
            if any(isinstance(o, (tuple, list)) for o in flat):
                flat = tree_flatten(out)[0]
            outs = [self.ref(o) if isinstance(o, torch.Tensor) else None for o in flat]
        module = self.module_stack[-1] if self.module_stack else ""
        self.cap.ops.append(OpRecord(func, rargs, rkwargs, outs, module, found))

    def note(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Record an op a leaf shortcut ran (`_fastleaf`) as if it had been dispatched."""
        self._finish(func, *self._record(func, args, kwargs), out)

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        runner = self.runner
        if func is _EMPTY:  # not recorded (see `capture`)
            return runner(func, args, kwargs) if runner is not None else func(*args, **kwargs)
        rargs, rkwargs, found = self._record(func, args, kwargs)
        out = runner(func, args, kwargs) if runner is not None else func(*args, **kwargs)
        self._finish(func, rargs, rkwargs, found, out)
        return out


@contextmanager
def _norm_inputs(
    norms: dict[int, str], seen: list[tuple[str, torch.Tensor, int]]
) -> Iterator[None]:
    """Note the input (and its channel dim) of every call of the modules in ``norms``."""

    def pre(mod: nn.Module, args: Any) -> None:
        name = norms.get(id(mod))
        if name is None or not isinstance(mod, nn.modules.instancenorm._InstanceNorm):
            return
        if args and isinstance(args[0], torch.Tensor):
            x = args[0]
            seen.append((name, x, x.dim() - mod._get_no_batch_dim()))  # its channel dim

    handle = nn.modules.module.register_module_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _module_tracker(
    model: nn.Module, stack: list[str], names: dict[int, str] | None = None
) -> Iterator[None]:
    if names is None:
        names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}

    def pre(mod: nn.Module, _args: Any) -> None:
        stack.append(names.get(id(mod), stack[-1] if stack else ""))

    def post(mod: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()


def capture(
    model: nn.Module,
    inputs: tuple[Any, ...],
    call: Callable[..., Any] | None = None,
    runner: MetaRunner | None = None,
    modules: bool = True,
    watch: bool = False,
) -> Capture:
    """Run ``model(*inputs)`` once and record every ATen op with tensor identities.

    Creating an empty tensor (``aten.empty``) is not recorded: its output has no channels
    (as every created tensor) and a later use registers it.

    Args:
        model: the module to run; its parameters and buffers are named in the record.
        inputs: positional inputs (tensors, or nested tuples/lists/dicts of tensors).
        call: what to call instead of ``model`` (defaults to ``model`` itself).
        runner: runs the ops instead of ATen (fast shape-only execution on the meta device).
        modules: note which module runs each op (`OpRecord.module`, for per-module MACs);
            without it the forward skips the global module hooks.
        watch: watch the forward's Python code for sizes it reads or passes and numbers
            it passes as data (`Capture.blind`, `Capture.values`); only when no other
            torch-function mode is active.

    Returns:
        The recorded ops, shapes, parameter names and the model output.
    """
    cap = Capture()
    known: dict[int, str] = {}  # tensor -> its first name, as named_parameters gives it
    mod_names: dict[int, str] = {}  # module -> its last name
    buffers: list[tuple[str, torch.Tensor]] = []  # as named_buffers gives them
    params: list[tuple[str, torch.Tensor]] = []  # as named_parameters gives them
    todo: list[tuple[str, nn.Module]] = [("", model)]  # named_modules(remove_duplicate=False)
    norms: dict[int, str] = {}  # tensorless instance norms (rare: only they get a hook)
    while todo:
        mname, mod = todo.pop()
        mod_names[id(mod)] = mname
        if not mod._modules and tensorless_norm(mod):
            norms.setdefault(id(mod), mname)
        prefix = mname + "." if mname else ""
        if mod._modules:  # most modules are leaves
            todo.extend((prefix + n, c) for n, c in reversed(mod._modules.items()) if c is not None)
        for tensors, found in ((mod._parameters, params), (mod._buffers, buffers)):
            for k, t in tensors.items() if tensors else ():
                if t is not None:
                    if id(t) in known:
                        cap.shared = True
                        continue
                    known[id(t)] = prefix + k
                    found.append((prefix + k, t))
    stack: list[str] = []
    rec = _Recorder(cap, known, stack, runner)
    for leaf in tree_flatten(inputs)[0]:
        if isinstance(leaf, torch.Tensor):
            cap.inputs.append(rec.node(leaf))
    fn = call if call is not None else model
    # Train-mode BN updates its statistics; meta tensors hold no values to restore.
    saved = {n: b.clone() for n, b in buffers if not b.is_meta}
    try:
        tracker = _module_tracker(model, stack, mod_names) if modules else nullcontext()
        guard = ShapeGuard() if watch and can_watch() else None
        seen: list[tuple[str, torch.Tensor, int]] = []
        noted = _norm_inputs(norms, seen) if norms else nullcontext()
        with torch.no_grad(), tracker, noted, rec, guard if guard is not None else nullcontext():
            out = fn(*inputs)
        cap.norm_inputs = [
            (name, rec.ref_of[id(x)].node, dim) for name, x, dim in seen if id(x) in rec.ref_of
        ]
        if guard is not None:
            cap.blind, cap.values = guard.blind, guard.values
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers() if saved else ():
                if n in saved and b.shape == saved[n].shape:
                    b.copy_(saved[n])
    cap.output = out
    cap.params = {n: tuple(p.shape) for n, p in params}  # after the forward: lazy layers
    for leaf in tree_flatten(out)[0]:
        if isinstance(leaf, torch.Tensor) and id(leaf) in rec.ref_of:
            cap.outputs.append(rec.ref_of[id(leaf)].node)
    return cap
