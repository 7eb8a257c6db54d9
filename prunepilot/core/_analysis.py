"""Propagate channel atoms through a captured op list.

Each tensor dimension carries either an atom array (one atom per position: the position belongs
to a channel) or ``None`` (no channel identity: batch, spatial, sequence). Parameters and
buffers get fresh atoms on every dimension the first time they are seen; op rules in
``_rules`` unite, move or pin atoms. An op without a rule pins every atom it touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._atoms import FIXED, Atoms
from ._capture import Capture, OpRecord, Ref

__all__ = ["Analysis", "MacTerm", "analyze"]

Dims = list[np.ndarray | None]


@dataclass
class MacTerm:
    """Multiply-accumulates of one op, which scale with the kept fraction of some atoms."""

    module: str
    macs: int
    scale: list[np.ndarray] = field(default_factory=list)


@dataclass
class Analysis:
    """The state of channel propagation over one capture."""

    cap: Capture
    atoms: Atoms = field(default_factory=Atoms)
    vals: dict[int, Dims] = field(default_factory=dict)
    param_atoms: dict[int, list[np.ndarray]] = field(default_factory=dict)
    weightlike: set[int] = field(default_factory=set)
    segments: list[list[np.ndarray]] = field(default_factory=list)
    mac_terms: list[MacTerm] = field(default_factory=list)
    unknown_ops: dict[str, int] = field(default_factory=dict)
    broadcast: dict[int, set[int]] = field(default_factory=dict)  # node -> expanded dims
    # (node, dim) of parameter dims sharing another tensor's atoms -> whether they consume
    # and whether they produce channels (their roles cannot live on the shared atoms)
    adopted: dict[tuple[int, int], tuple[bool, bool]] = field(default_factory=dict)
    # Size attributes that follow no tensor: (module name, attribute, atoms it counts).
    sizes: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    module: str = ""

    # -- access ---------------------------------------------------------------------------
    def shape(self, ref: Any) -> tuple[int, ...]:
        return self.cap.shapes[ref.node]

    def dims(self, ref: Any) -> Dims:
        """Atom arrays of a tensor's dims; parameters get fresh atoms on first use."""
        node = ref.node
        got = self.vals.get(node)
        if got is not None:
            return list(got)
        shape = self.cap.shapes[node]
        if node in self.cap.names:
            fresh = [self.atoms.new(s) for s in shape]
            self.param_atoms[node] = fresh
            d: Dims = list(fresh)
            self.weightlike.add(node)
        else:
            d = [None] * len(shape)
        self.vals[node] = d
        return list(d)

    def peek(self, ref: Any) -> Dims:
        """`dims` for reading only: a known tensor's own list, not a copy (many-input ops)."""
        got = self.vals.get(ref.node)
        return got if got is not None else self.dims(ref)

    def adopt(self, ref: Any, like: Dims, inward: bool = False, produces: bool = False) -> Dims:
        """Atom arrays of a parameter that the op unites position by position with ``like``.

        A parameter first seen here (a norm's weight, a bias, a convolution's input dim, a
        depthwise convolution's output dim) shares the atoms of ``like`` where given instead
        of getting fresh atoms that would only be united with them: the same classes with
        fewer atoms. Its shared dims count as tagged channel dims with the roles given
        (``inward``: consumes channels; ``produces``), as its own fresh atoms tagged so would.
        """
        node = ref.node
        if node in self.vals or node not in self.cap.names:
            return self.dims(ref)
        shape = self.cap.shapes[node]
        if len(like) != len(shape):
            return self.dims(ref)
        fresh: list[np.ndarray] = []
        for i, s in enumerate(shape):
            a = like[i]
            if a is not None and a.shape == (s,):
                self.adopted[node, i] = (inward, produces)
            else:
                a = self.atoms.new(s)
            fresh.append(a)
        self.param_atoms[node] = fresh
        self.weightlike.add(node)
        self.vals[node] = list(fresh)
        return list(fresh)

    def wdims(self, ref: Any) -> list[np.ndarray]:
        """Atom arrays of a weight's dims; untracked dims read as pinned (``FIXED``) atoms."""
        shape = self.cap.shapes[ref.node]
        return [
            d if d is not None else np.full(shape[i], FIXED, dtype=np.int64)
            for i, d in enumerate(self.peek(ref))
        ]

    def set(self, ref: Ref | None, dims: Dims) -> None:
        """Store an op output's atom arrays, checking they fit its shape (catches rule bugs)."""
        if ref is None:
            return
        node = ref.node
        shape = self.cap.shapes[node]
        if len(dims) != len(shape):
            raise AssertionError(f"rule produced {len(dims)} dims for a {len(shape)}-d tensor")
        for i, d in enumerate(dims):  # (indexing: cheaper than a strict zip, on every op)
            if d is not None and d.shape != (shape[i],):
                raise AssertionError(f"rule produced atoms of shape {d.shape} for size {shape[i]}")
        self.vals[node] = dims

    # -- atom helpers ---------------------------------------------------------------------
    def join(
        self, arrays: list[np.ndarray | None], size: int, rec: OpRecord, why: str
    ) -> np.ndarray | None:
        """Unite same-size atom arrays; a mix with untracked (None) ones pins the tracked,
        for the reason "<op> <why>" (only formatted then: most joins pin nothing).

        A pinned result is returned as ``None``: its size can no longer change, and not
        carrying pinned atoms on keeps later ops from pinning more than they must.
        """
        tracked = [a for a in arrays if a is not None]
        if not tracked:
            return None
        for a in tracked[1:]:
            if a is not tracked[0]:
                self.atoms.unite(tracked[0], a)
        if len(tracked) < len(arrays) and size > 1:
            self.atoms.pin(tracked[0], f"{rec.name} {why}")
            return None
        return tracked[0]

    def contract(self, a: np.ndarray | None, b: np.ndarray | None, size: int) -> None:
        """Unite the two sides of a contraction (conv input/weight, matmul inner dim)."""
        if a is not None and b is not None:
            self.atoms.unite(a, b)
        elif a is not None or b is not None:
            side = a if a is not None else b
            assert side is not None
            self.atoms.unite(side, np.full(size, FIXED))

    def pin_all(self, refs: list[Any], reason: str) -> None:
        for r in refs:
            for d in self.dims(r):
                self.atoms.pin(d, reason)

    def tag(self, a: np.ndarray | None, inward: bool = False, produces: bool = False) -> None:
        """Note a parameter dim's role: consumer (``inward``) or creator of channels."""
        if a is None:
            return
        self.atoms.tagged.append(a)
        if inward:
            self.atoms.inward.append(a)
        if produces:
            self.atoms.producers.append(a)

    def macs(self, n: int, *scale: np.ndarray | None) -> None:
        self.mac_terms.append(MacTerm(self.module, int(n), [s for s in scale if s is not None]))


SchemaArg = tuple[str, int, bool, bool, Any]  # name, position, kwarg-only, has default, default
_SCHEMAS: dict[Any, list[SchemaArg]] = {}


def schema_args(func: torch._ops.OpOverload) -> list[SchemaArg]:
    """The op's schema arguments as `bind_schema` reads them (cached)."""
    got = _SCHEMAS.get(func)
    if got is None:
        got = _SCHEMAS[func] = [
            (
                a.name,
                i,
                a.kwarg_only,
                a.has_default_value(),
                a.default_value if a.has_default_value() else None,
            )
            for i, a in enumerate(func._schema.arguments)
        ]
    return got


def bind(
    func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Map an op call's arguments to schema names, filling defaults."""
    return bind_schema(schema_args(func), args, kwargs)


def bind_schema(
    schema: list[SchemaArg], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """`bind` given the op's schema arguments (`schema_args`)."""
    out: dict[str, Any] = {}
    n = len(args)
    for name, i, kwarg_only, has_default, default in schema:
        if i < n and not kwarg_only:
            out[name] = args[i]
        elif name in kwargs:
            out[name] = kwargs[name]
        elif has_default:
            out[name] = default
        else:
            out[name] = None
    return out


def tensor_refs(value: Any) -> list[Ref]:
    """All tensor references in a (possibly nested) argument value."""
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in tensor_refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in tensor_refs(v)]
    return []


def analyze(cap: Capture) -> Analysis:
    """Run every op's channel rule over a capture, then pin what reaches the outputs."""
    from ._rules import apply_rule

    an = Analysis(cap)
    for rec in cap.ops:
        an.module = rec.module
        apply_rule(an, rec)
    for node in cap.outputs:
        for d in an.dims(Ref(node)):
            an.atoms.pin(d, "it reaches a model output")
    for name, node, dim in cap.norm_inputs:
        dims = an.vals.get(node)
        atoms = dims[dim] if dims is not None and 0 <= dim < len(dims) else None
        if atoms is not None:
            an.sizes.append((name, "num_features", atoms))
    return an


def record_inputs(rec: OpRecord) -> list[Ref]:
    """The op's tensor arguments in order (args, then kwargs); do not modify the list."""
    if rec.inputs is None:
        rec.inputs = tensor_refs(list(rec.args)) + tensor_refs(rec.kwargs)
    return rec.inputs
