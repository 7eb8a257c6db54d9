"""The result of tracing: coupled channel groups and what each removal costs or saves."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ._analysis import Analysis, MacTerm
from ._atoms import FIXED, Atoms, components, first_index, unique
from .errors import PlanError

__all__ = ["ChannelGraph", "ChannelGroup", "Member", "build_graph"]

Plan = Mapping[str, Sequence[int]]
_BIG = np.iinfo(np.int64).max  # no pinned root (`_RunFacts.pin_lo`)


def _member(
    name: str,
    dim: int,
    role: Literal["out", "in"],
    roots: np.ndarray,
    group: _Channels,
    span: int,
) -> Member:
    """``Member(...)`` without the frozen dataclass's per-field ``__setattr__`` (hot path)."""
    m = object.__new__(Member)
    m.__dict__.update(
        name=name, dim=dim, role=role, size=int(roots.size), _roots=roots, _group=group, _span=span
    )
    return m


class _Channels:
    """A group's map from atom class roots to its channel numbers."""

    __slots__ = ("_keys", "_order", "_vals", "n")

    def __init__(self, order: np.ndarray) -> None:
        self.n = int(order.size)
        self._order = order
        self._keys: np.ndarray | None = None  # sorted on first use (members are lazy too)
        self._vals: np.ndarray | None = None

    def of(self, roots: np.ndarray) -> np.ndarray:
        """The channel of every root (-1 for roots that are not this group's channels)."""
        if self.n == 0:
            return np.full(roots.size, -1, dtype=np.int64)
        if self._keys is None or self._vals is None:
            self._vals = np.argsort(self._order, kind="stable")
            self._keys = self._order[self._vals]
        i = np.minimum(np.searchsorted(self._keys, roots), self.n - 1)
        return np.where(self._keys[i] == roots, self._vals[i], -1)


@dataclass(frozen=True)
class Member:
    """One tensor slice a group touches: a dimension of a parameter or buffer.

    Attributes:
        name: fully qualified parameter or buffer name.
        dim: the dimension the group's channels occupy.
        role: ``"out"`` for tensors that produce the channel, ``"in"`` for consumers.
        size: the tensor's size along ``dim`` (positions of other groups included).
    """

    name: str
    dim: int
    role: Literal["out", "in"]
    size: int
    _roots: np.ndarray = field(repr=False, compare=False)  # atom class root per position
    _group: _Channels = field(repr=False, compare=False)
    # Distinct group channels when they fill every position, else 0 (other groups' or
    # pinned positions always remain, so removing channels never empties this dim).
    _span: int = field(default=-1, repr=False, compare=False)

    @functools.cached_property
    def _chan(self) -> np.ndarray:
        """Group channel per position, -1: another group's or pinned."""
        return self._group.of(self._roots)

    @functools.cached_property
    def _counts(self) -> np.ndarray:
        """Positions per group channel."""
        chan = self._chan
        return np.bincount(chan[chan >= 0], minlength=self._group.n)

    def indices(self, channels: Iterable[int]) -> list[int]:
        """Positions along ``dim`` that the given group channels occupy (sorted)."""
        wanted = np.fromiter((int(c) for c in channels), dtype=np.int64)
        if wanted.size == 0:
            return []
        return np.flatnonzero(np.isin(self._chan, wanted)).tolist()

    def channel_of_positions(self) -> np.ndarray:
        """The group channel at every position along ``dim`` (-1 for other groups' or pinned)."""
        return self._chan.copy()


class _MemberRows:
    """What a traced graph's members are built from, shared by its groups: per member dim
    its name, dim, role, atom class roots and span (see `Member`)."""

    __slots__ = ("consumer", "dims", "names", "roots", "spans")

    def __init__(
        self,
        names: list[str],
        dims: list[int],
        consumer: list[bool],
        roots: list[np.ndarray],
        spans: list[int],
    ) -> None:
        self.names = names
        self.dims = dims
        self.consumer = consumer
        self.roots = roots
        self.spans = spans


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Channels that must be removed together.

    Attributes:
        id: stable identifier (``"<first producer parameter>:<dim>"``).
        channels: number of removable channels.
        prunable: whether any channel may be removed.
        reason: why not (or why some positions are pinned), else ``None``.
        members: every parameter/buffer slice the channels occupy (built on first use).
        blocks: channels form this many blocks (e.g. groups of a grouped conv, parts of a
            ``chunk``); a valid plan removes the same fraction of every block, so for equal
            blocks the same number from each (see `cells` and `quantum`).
        unit: channels go in aligned runs of this length (1: any channel alone).
        pinned: positions in this group's tensors that can never be removed.
    """

    id: str
    channels: int
    prunable: bool
    reason: str | None
    blocks: int = 1
    unit: int = 1
    pinned: int = 0
    _cells: tuple[tuple[int, ...], ...] = field(default=(), repr=False)
    _constraints: tuple[tuple[tuple[int, ...], ...], ...] = field(default=(), repr=False)
    # Members are built on first use (tracing alone never needs them): the shared rows,
    # this group's entries in them, its channel map; and the smallest positive span.
    _rows: _MemberRows | None = field(default=None, repr=False)
    _entries: tuple[int, ...] = field(default=(), repr=False)
    _chans: _Channels | None = field(default=None, repr=False)
    _min_span: int = field(default=0, repr=False)

    @functools.cached_property
    def members(self) -> tuple[Member, ...]:
        """Every parameter/buffer slice the channels occupy: producers first, trace order."""
        r, chans = self._rows, self._chans
        if r is None or chans is None:
            return ()
        return tuple(
            _member(
                r.names[i],
                r.dims[i],
                "in" if r.consumer[i] else "out",
                r.roots[i],
                chans,
                r.spans[i],
            )
            for i in self._entries
        )

    def _key(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.channels,
            self.prunable,
            self.reason,
            self.blocks,
            self.unit,
            self.pinned,
            self.members,
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is ChannelGroup and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.id, self.channels))

    def check(self, remove: Sequence[int]) -> None:
        """Raise `PlanError` unless removing ``remove`` keeps this group's structure valid."""
        if not self.prunable:
            raise PlanError(f"group {self.id!r} is not prunable: {self.reason}")
        bad = [
            c for c in remove if not isinstance(c, (int, np.integer)) or not 0 <= c < self.channels
        ]
        if bad:
            raise PlanError(f"group {self.id!r} has channels 0..{self.channels - 1}; got {bad[:5]}")
        if len(set(remove)) != len(remove):
            raise PlanError(f"group {self.id!r}: channel indices repeat")
        gone = {int(c) for c in remove}
        for segs in self._constraints:
            counts = [sum(1 for c in seg if c in gone) for seg in segs]
            if len(set(counts)) > 1:
                raise PlanError(
                    f"group {self.id!r} is split into {len(segs)} equal parts (e.g. by chunk) "
                    f"that must lose the same number of positions; this plan removes {counts}. "
                    f"Remove the same fraction of every block: {self.quantum} channels at a time"
                )
        idx = np.fromiter((int(c) for c in remove), dtype=np.int64)
        if not 0 < self._min_span <= idx.size:
            return  # every member keeps positions of other groups or more channels
        for m in self.members:
            if m._span == 0 or m._span > idx.size:
                continue  # positions of other groups, pinned or not removed remain
            if int(m._counts[idx].sum()) >= m.size:
                raise PlanError(
                    f"group {self.id!r}: removing {len(remove)} channels would empty "
                    f"{m.name} dim {m.dim}; keep at least one channel"
                )

    @functools.cached_property
    def cells(self) -> tuple[tuple[int, ...], ...]:
        """Channel indices of each block (one block holding all channels when unconstrained)."""
        return self._cells or (tuple(range(self.channels)),)

    def per_cell(self, steps: int) -> list[int]:
        """Channels to take from each block to remove ``steps`` quanta (same fraction of each)."""
        return [steps * len(cell) * self.quantum // self.channels for cell in self.cells]

    @property
    def quantum(self) -> int:
        """Smallest number of channels a valid plan removes: the same fraction of every block."""
        g = math.gcd(*(len(c) for c in self.cells)) or 1
        return self.channels // g


@dataclass
class ChannelGraph:
    """Coupled channel groups of a traced model, with analytic MACs/params for any plan."""

    groups: list[ChannelGroup]
    shapes: dict[str, tuple[int, ...]]
    unknown_ops: dict[str, int]
    macs_total: int
    _gid: dict[str, int] = field(repr=False, default_factory=dict)
    _offset: list[int] = field(repr=False, default_factory=list)
    # per cost term: its MACs and the channel slots of each scaling dim, built on first use
    # from ``_term_src`` (see `_mac_terms`)
    _terms: list[tuple[int, list[np.ndarray]]] | None = field(repr=False, default=None)
    _term_src: tuple[Any, ...] = field(repr=False, default=())
    # every parameter/buffer with the channel slots of each of its traced dims (see
    # `_param_slots`), built on first use from ``_tensor_src``
    _tensors: list[tuple[str, list[np.ndarray]]] | None = field(repr=False, default=None)
    _tensor_src: tuple[Any, ...] = field(repr=False, default=())
    # every traced parameter/buffer dim (name, dim); [channel slot of every position of each
    # distinct atom array, where each array starts, the array of every dim]
    _dims: list[tuple[str, int]] = field(repr=False, default_factory=list)
    _dim_slots: list[np.ndarray] = field(repr=False, default_factory=list)
    # module size attributes that follow no tensor: (module, attribute, channel slots)
    _sizes: list[tuple[str, str, np.ndarray]] = field(repr=False, default_factory=list)

    def group(self, gid: str) -> ChannelGroup:
        """The group with this id; `PlanError` names close matches when unknown."""
        i = self._gid.get(gid)
        if i is None:
            near = [g.id for g in self.groups if gid.split(":")[0] in g.id][:5]
            raise PlanError(
                f"unknown group id {gid!r}" + (f"; did you mean {near}?" if near else "")
            )
        return self.groups[i]

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def check(self, plan: Plan) -> None:
        """Validate a plan ``{group_id: [channel indices]}`` against every group's constraints."""
        if not isinstance(plan, Mapping):
            raise PlanError("a plan maps group ids to lists of channel indices")
        for gid, remove in plan.items():
            self.group(gid).check(list(remove))

    def _cuts(self, plan: Plan, validate: bool = True) -> dict[str, dict[int, int]]:
        """Positions ``plan`` removes: ``{tensor name: {dim: count}}`` (validated unless
        ``validate`` is false: every group's `ChannelGroup.check` passed already)."""
        mask = self._removed(plan, validate)
        out: dict[str, dict[int, int]] = {}
        if not self._dims or not plan:
            return out
        slots, starts, dim_array = self._dim_slots
        counts = np.add.reduceat(mask[slots].astype(np.int64), starts)[dim_array]
        for i in np.flatnonzero(counts).tolist():
            name, d = self._dims[i]
            out.setdefault(name, {})[d] = int(counts[i])
        return out

    def _module_sizes(self, plan: Plan) -> dict[tuple[str, str], int]:
        """Size attributes of tensorless modules (an instance norm's ``num_features``)
        after ``plan``: ``{(module, attribute): value}`` (``plan`` already validated)."""
        if not self._sizes:
            return {}
        mask = self._removed(plan, validate=False)
        out: dict[tuple[str, str], int] = {}
        for module, attr, slots in self._sizes:  # a module called twice: its first call
            out.setdefault((module, attr), int(slots.size - mask[slots].sum()))
        return out

    def _removed(self, plan: Plan, validate: bool = True) -> np.ndarray:
        if validate:
            self.check(plan)
        mask = np.zeros(self._offset[-1] + 1 if self._offset else 1, dtype=bool)
        for gid, remove in plan.items():
            base = self._offset[self._gid[gid]]
            idx = np.asarray(list(remove), dtype=np.int64)
            mask[base + idx] = True
        return mask

    @staticmethod
    def _kept(mask: np.ndarray, pos: np.ndarray) -> float:
        if pos.size == 0:
            return 1.0
        return float(1.0 - mask[pos].mean())

    def macs(self, plan: Plan | None = None) -> int:
        """Multiply-accumulates after applying ``plan`` (conv, linear, matmul, attention)."""
        if not plan:
            return self.macs_total
        mask = self._removed(plan)
        if self._terms is None:
            self._terms = _mac_terms(*self._term_src) if self._term_src else []
        total = 0.0
        for n, scales in self._terms:
            f = float(n)
            for s in scales:
                f *= self._kept(mask, s)
            total += f
        return round(total)

    def params(self, plan: Plan | None = None) -> int:
        """Parameter count after applying ``plan``."""
        mask = self._removed(plan or {})
        if self._tensors is None:
            self._tensors = _param_slots(*self._tensor_src)
        total = 0.0
        for name, dims in self._tensors:
            f = float(np.prod(self.shapes[name]))
            for s in dims:
                f *= self._kept(mask, s)
            total += f
        return round(total)

    def summary(self) -> str:
        """A human-readable table of groups."""
        lines = [f"{len(self.groups)} groups, {len(self.prunable)} prunable"]
        for g in self.groups:
            state = f"{g.channels:5d} ch" + (f" blocks={g.blocks}" if g.blocks > 1 else "")
            why = "" if g.prunable else f"  (fixed: {g.reason})"
            lines.append(f"  {g.id:50s} {state}  {len(g.members):3d} members{why}")
        if self.unknown_ops:
            lines.append("ops without a channel rule: " + ", ".join(sorted(self.unknown_ops)))
        return "\n".join(lines)


def _mac_terms(
    slot: np.ndarray, all_roots: np.ndarray, mac_terms: list[MacTerm]
) -> list[tuple[int, list[np.ndarray]]]:
    """Every cost term's MACs and the channel slots of each of its scaling dims (``slot``:
    channel slot of every class root): what `ChannelGraph.macs` scales."""
    scales_all = [s for t in mac_terms for s in t.scale]
    flat = slot[all_roots[np.concatenate(scales_all)]] if scales_all else np.zeros(0, np.int64)
    at = 0
    terms: list[tuple[int, list[np.ndarray]]] = []
    for t in mac_terms:
        scales = []
        for s in t.scale:
            scales.append(flat[at : at + s.size])
            at += s.size
        terms.append((t.macs, scales))
    return terms


def _param_slots(
    slots_u: np.ndarray,
    lo_u: list[int],
    hi_u: list[int],
    c_name: list[str],
    c_u: list[int],
    params: list[str],
) -> list[tuple[str, list[np.ndarray]]]:
    """Every parameter/buffer with the channel slots of each of its traced dims (in trace
    order, then the ones the forward never used): what `ChannelGraph.params` scales by."""
    per_name: dict[str, list[np.ndarray]] = {}
    for name, k in zip(c_name, c_u, strict=True):
        per_name.setdefault(name, []).append(slots_u[lo_u[k] : hi_u[k]])
    known = set(params)
    tensors = [(name, per_name[name]) for name in per_name if name in known]
    tensors += [(name, []) for name in params if name not in per_name]  # unused by the forward
    return tensors


def build_graph(an: Analysis, params: Mapping[str, tuple[int, ...]]) -> ChannelGraph:
    """Group atom classes into channel groups with members, constraints and cost terms.

    A sequence of passes over flat arrays, each taking and returning small records: atom
    classes, candidate dims, member dims, blocks of roots, rows, roles, group labels, runs
    of rows per group, split constraints, per-run facts, then the groups themselves.
    """
    cls = _classes(an.atoms)
    cand = _candidates(an, cls.all_roots)
    raw = _member_dims(cls, cand)
    blk = _blocks(cls, cand, raw)
    rows = _rows(raw, blk)
    roles = _roles(raw)
    glabel = _group_labels(blk, rows, roles)
    runs = _group_runs(raw, blk, rows, roles, glabel)
    segs = _segments(an, cls, blk, glabel)
    facts = _run_facts(raw, blk, roles, glabel, runs)
    made = _make_groups(cls, raw, blk, roles, glabel, runs, segs, facts)
    return _assemble(an, params, cls, cand, made)


@dataclass(slots=True)
class _Classes:
    """Atom classes: every atom's class root, the pinned roots and per-atom rule tags."""

    n: int  # number of atoms
    all_roots: np.ndarray  # class root of every atom
    fixed_root: int  # the class root of FIXED
    why: np.ndarray  # per class root: index of its pin reason in ``texts``, -1: free
    texts: list[str]
    pinned: np.ndarray  # per class root: pinned (FIXED's too)
    tagged: np.ndarray  # per atom: tagged by a rule (its dim is a meaningful channel)
    inward: np.ndarray  # per atom: consumes a channel (role "in")
    produces: np.ndarray  # per atom: an output channel of a conv/linear weight


def _classes(atoms: Atoms) -> _Classes:
    """Pass 1: class roots, pin state and rule tags, as flat arrays over atoms."""
    n = atoms.size
    all_roots = atoms.all_roots()
    fixed_root = int(all_roots[FIXED])
    why, texts = atoms.class_reasons()  # per class root: index of its pin reason, -1: free
    pinned_flag = why >= 0
    pinned_flag[fixed_root] = True
    flags = []
    for arrays in (atoms.tagged, atoms.inward, atoms.producers):
        f = np.zeros(n, dtype=bool)
        if arrays:  # a norm's weight, bias and statistics tag one shared array: once each
            f[np.concatenate(list({id(a): a for a in arrays}.values()))] = True
        flags.append(f)
    tagged, inward, produces = flags
    return _Classes(n, all_roots, fixed_root, why, texts, pinned_flag, tagged, inward, produces)


@dataclass(slots=True)
class _Candidates:
    """Every traced parameter/buffer dim with positions ("candidate"), in trace order, as
    parallel lists. Dims sharing one atom array (a norm's weight, bias and statistics) are
    read once: distinct arrays ("u") in order of first use, ``c_u`` the array of every dim."""

    node_names: list[str]  # every traced parameter/buffer, in trace order
    c_name: list[str]  # per candidate: its tensor's name
    c_dim: list[int]  # per candidate: its dim
    c_u: list[int]  # per candidate: its distinct array
    cand_u: np.ndarray  # ``c_u`` as an array
    n_u: int  # number of distinct arrays
    sizes_u: np.ndarray  # per distinct array: its size
    starts_u: np.ndarray  # per distinct array: where it starts in ``every``
    lo_u: list[int]  # ``starts_u`` as a list
    hi_u: list[int]  # per distinct array: where it ends in ``every``
    every: np.ndarray  # the distinct arrays' atoms, concatenated
    r_u: np.ndarray  # class root of each of them
    idx_a: np.ndarray  # adopted candidates (dims sharing another tensor's atoms)
    role_a: np.ndarray  # their roles noted on adoption: (inward, produces)


def _candidates(an: Analysis, all_roots: np.ndarray) -> _Candidates:
    """Pass 2: the traced parameter/buffer dims with positions, and the adopted ones."""
    cat = np.concatenate
    names = an.cap.names
    param_atoms = an.param_atoms
    node_names = [names[node] for node in param_atoms]
    n_dims = np.fromiter(map(len, param_atoms.values()), dtype=np.int64, count=len(node_names))
    dims_all = [a for dims in param_atoms.values() for a in dims]
    flat_size = np.fromiter([a.size for a in dims_all], dtype=np.int64, count=len(dims_all))
    dim_at = np.cumsum(n_dims) - n_dims  # each node's first dim in ``dims_all``
    c_name = np.repeat(np.array(node_names, dtype=object), n_dims).tolist()
    c_dim = (np.arange(flat_size.size) - np.repeat(dim_at, n_dims)).tolist()
    cand_of = np.arange(flat_size.size)  # dims_all dim -> candidate
    if not flat_size.all():
        has = flat_size > 0
        cand_of = np.cumsum(has) - 1
        keep_l = np.flatnonzero(has).tolist()
        dims_all = [dims_all[i] for i in keep_l]
        c_name = [c_name[i] for i in keep_l]
        c_dim = [c_dim[i] for i in keep_l]
    u_index: dict[int, int] = {}
    c_u = [u_index.setdefault(id(a), len(u_index)) for a in dims_all]
    u_arrays = list({id(a): a for a in dims_all}.values())
    cand_u = np.asarray(c_u, dtype=np.int64)
    sizes_u = np.fromiter((a.size for a in u_arrays), dtype=np.int64, count=len(u_arrays))
    starts_u = np.concatenate(([0], np.cumsum(sizes_u)[:-1])).astype(np.int64)
    every = cat(u_arrays) if u_arrays else np.zeros(0, np.int64)
    r_u = all_roots[every]
    # Adopted dims with positions (candidates) and their roles: (inward, produces).
    adopted = an.adopted
    idx_a = np.zeros(0, dtype=np.int64)
    role_a = np.zeros((0, 2), dtype=bool)
    if adopted:
        dim_of = dict(zip(param_atoms, dim_at.tolist(), strict=True))
        pre = np.fromiter(
            [dim_of[node] + d for node, d in adopted], dtype=np.int64, count=len(adopted)
        )
        ok = flat_size[pre] > 0
        idx_a = cand_of[pre[ok]]
        role_a = np.array(list(adopted.values()), dtype=bool).reshape(-1, 2)[ok]
    lo_u = starts_u.tolist()
    hi_u = (starts_u + sizes_u).tolist()
    return _Candidates(
        node_names, c_name, c_dim, c_u, cand_u, len(u_arrays), sizes_u, starts_u, lo_u, hi_u,
        every, r_u, idx_a, role_a,
    )  # fmt: skip


@dataclass(slots=True)
class _Raw:
    """The member dims ("raw"), in trace order, and their canonical dims: the first of the
    dims reading the same atom array, which alone goes through the row passes."""

    nraw: int  # number of member dims
    raw_u: np.ndarray  # per dim: its distinct array
    raw_name: list[str]  # per dim: its tensor's name
    raw_dim: list[int]  # per dim: its dim
    raw_roots: list[np.ndarray]  # per dim: class root of every position (read-only views)
    is_in: np.ndarray  # per dim: consumes channels
    is_prod: np.ndarray  # per dim: produces channels
    canon_of: np.ndarray  # every dim -> its canonical
    canon: list[int]  # the canonical dims, in order
    canon_e: np.ndarray  # ``canon`` as an array


def _member_dims(cls: _Classes, cand: _Candidates) -> _Raw:
    """Pass 3: which candidates are member dims, with their roles and canonical dims."""
    cand_u, sizes_u, starts_u = cand.cand_u, cand.sizes_u, cand.starts_u
    every, r_u, idx_a, role_a = cand.every, cand.r_u, cand.idx_a, cand.role_a
    # Atoms per class, plus one for a class holding atoms of an adopted dim (which stand for
    # fresh atoms of their own): a parameter dim another one shares is coupled to it. (Only
    # "more than one" is read.)
    class_size = np.bincount(cls.all_roots, minlength=cls.n)
    if idx_a.size:
        shared = np.zeros(cand.n_u, dtype=bool)
        shared[cand_u[idx_a]] = True
        class_size[r_u[np.repeat(shared, sizes_u)]] += 1

    # Relevant member dims ("raw"): tagged by a rule or coupled to anything; a size-1 dim
    # that no layer creates is never a channel to remove. Dims sharing another tensor's
    # atoms read as their own tagged atoms with the roles noted on adoption.
    if cand.n_u:
        stacked = np.stack(
            (cls.produces[every], cls.tagged[every], cls.inward[every], class_size[r_u] > 1)
        )
        per_u = np.add.reduceat(stacked, starts_u, axis=1) > 0
        any_prod, any_tag, any_in, any_coupled = per_u[:, cand_u]
    else:
        any_prod = any_tag = any_in = any_coupled = np.zeros(0, dtype=bool)
    if idx_a.size:
        any_in[idx_a] = role_a[:, 0]
        any_prod[idx_a] = role_a[:, 1]
        any_tag[idx_a] = True
    keep = (any_tag | any_coupled) & ~((sizes_u[cand_u] == 1) & ~any_prod)
    sel = np.flatnonzero(keep)
    sel_l = sel.tolist()
    raw_u = cand_u[sel]
    raw_name = [cand.c_name[i] for i in sel_l]
    raw_dim = [cand.c_dim[i] for i in sel_l]
    u_roots = [r_u[lo:hi] for lo, hi in zip(cand.lo_u, cand.hi_u, strict=True)]  # views
    raw_roots = [u_roots[k] for k in raw_u.tolist()]

    # Dims reading the same atoms (a conv's output channels, the norm after it and the next
    # conv's input, all sharing one atom array) have the same rows: only the first of them
    # ("canonical") goes through the row passes, with the roles of them all.
    _, first_at, inverse = np.unique(raw_u, return_index=True, return_inverse=True)
    canon_of = first_at[inverse].astype(np.int64)  # every dim -> its canonical
    canon = np.sort(first_at).tolist()  # in order: each is its own canonical
    return _Raw(
        len(sel_l), raw_u, raw_name, raw_dim, raw_roots, any_in[sel], any_prod[sel],
        canon_of, canon, np.asarray(canon, dtype=np.int64),
    )  # fmt: skip


@dataclass(slots=True)
class _Blocks:
    """Roots cut into blocks, and every canonical dim's positions as the blocks they run
    through ("pieces", in order)."""

    bounds_r: np.ndarray  # block ``b`` holds roots ``bounds_r[b]`` up to ``bounds_r[b + 1]``
    blen: np.ndarray  # per block: its number of roots
    nb: int  # number of blocks
    pinned_b: np.ndarray  # per block: pinned
    fixed_b: int  # the block of FIXED's root
    pos_b: np.ndarray  # per piece: its block
    pos_e: np.ndarray  # per piece: its canonical dim
    pieces: np.ndarray  # per canonical dim: its number of pieces
    pos_start: np.ndarray  # per canonical dim: its first piece


def _blocks(cls: _Classes, cand: _Candidates, raw: _Raw) -> _Blocks:
    """Pass 4: positions as blocks of roots.

    Most dims' roots are runs r, r+1, ... (a layer's fresh atoms), so the row passes work on
    "blocks": the intervals of roots between the ends of every canonical dim's runs (and
    wherever pinning changes). A dim holds a block whole or not at all, and every per-root
    property read below is the same on all of a block's roots, so a block stands for its
    roots until channels are listed.
    """
    r_u, starts_u, canon_e = cand.r_u, cand.starts_u, raw.canon_e
    pinned_flag, fixed_root = cls.pinned, cls.fixed_root
    p_all = r_u.size
    brk = np.ones(p_all, dtype=bool)  # where a run of consecutive roots starts
    if p_all:
        np.not_equal(r_u[1:], r_u[:-1] + 1, out=brk[1:])
        brk[starts_u] = True
    run_at = np.flatnonzero(brk)
    run_len = np.diff(np.append(run_at, p_all))
    run_lo = np.searchsorted(run_at, starts_u)  # each array's first run
    run_n = np.diff(np.append(run_lo, run_at.size))
    canon_u = raw.raw_u[canon_e]
    c_runs = _ranges(run_lo[canon_u], run_n[canon_u])
    c_root, c_len = r_u[run_at[c_runs]], run_len[c_runs]
    c_end = c_root + c_len
    flips = np.flatnonzero(pinned_flag[1:] != pinned_flag[:-1]) + 1
    bounds_r = unique(np.concatenate((c_root, c_end, flips, [fixed_root, fixed_root + 1])))
    blen = np.diff(bounds_r)
    pinned_b = pinned_flag[bounds_r[:-1]]
    fixed_b = int(np.searchsorted(bounds_r, fixed_root))
    # Pieces: every canonical dim's positions as the blocks they run through, in order.
    b_lo = np.searchsorted(bounds_r, c_root)
    b_n = np.searchsorted(bounds_r, c_end) - b_lo
    pos_b = _ranges(b_lo, b_n)
    pos_e = np.repeat(np.repeat(canon_e, run_n[canon_u]), b_n)
    pieces = np.bincount(pos_e, minlength=raw.nraw)[canon_e]
    pos_start = np.cumsum(pieces) - pieces
    return _Blocks(bounds_r, blen, blen.size, pinned_b, fixed_b, pos_b, pos_e, pieces, pos_start)


@dataclass(slots=True)
class _Rows:
    """Rows (entry, block): the distinct blocks of each canonical dim, in order of first
    appearance."""

    row_e: np.ndarray  # per row: its canonical dim
    row_b: np.ndarray  # per row: its block
    distinct: np.ndarray  # per dim (canonical ones filled): its distinct positions


def _rows(raw: _Raw, blk: _Blocks) -> _Rows:
    """Pass 5: rows from pieces. Most dims' roots strictly increase along the dim: each
    block once, in order (then the pieces are the rows)."""
    pos_b, pos_e, pos_start, pieces = blk.pos_b, blk.pos_e, blk.pos_start, blk.pieces
    back = np.flatnonzero(pos_b[1:] <= pos_b[:-1]) + 1
    unordered = set(pos_e[back[pos_e[back] == pos_e[back - 1]]].tolist())
    if unordered:
        apps = []
        ends = (pos_start + pieces).tolist()
        for i, lo, hi in zip(raw.canon, pos_start.tolist(), ends, strict=True):
            r = pos_b[lo:hi]
            if i in unordered:
                _, first = first_index(r)
                r = r[np.sort(first)]
            apps.append(r)
        row_e = np.repeat(raw.canon_e, [a.size for a in apps])
        row_b = np.concatenate(apps)
    else:
        row_e, row_b = pos_e, pos_b
    distinct = np.bincount(row_e, weights=blk.blen[row_b], minlength=raw.nraw).astype(np.int64)
    return _Rows(row_e, row_b, distinct)


@dataclass(slots=True)
class _Roles:
    """Roles of the member dims, and of the rows each canonical dim stands for."""

    consumer: np.ndarray  # per dim: consumes channels and produces none
    produces: np.ndarray  # per canonical dim: any dim sharing its rows produces channels
    neither: np.ndarray  # per canonical dim: one of them neither produces nor consumes
    rank: np.ndarray  # per canonical dim: where its rows sort within a group


def _roles(raw: _Raw) -> _Roles:
    """Pass 6: per canonical dim, whether any dim sharing its rows produces channels, or
    neither produces nor consumes them (a norm's weight), and where its rows sort within a
    group: by the first of its dims in (consumer, trace order), as the dims themselves sort."""
    nraw, canon_of = raw.nraw, raw.canon_of
    consumer = raw.is_in & ~raw.is_prod
    neither = ~consumer & ~raw.is_prod
    rank_key = consumer.astype(np.int64) * nraw + np.arange(nraw)
    is_prod = np.bincount(canon_of, weights=raw.is_prod, minlength=nraw) > 0
    neither = np.bincount(canon_of, weights=neither, minlength=nraw) > 0
    np.minimum.at(rank_key, canon_of, rank_key.copy())
    rank = np.zeros(nraw, dtype=np.int64)
    rank[np.argsort(rank_key, kind="stable")] = np.arange(nraw)
    return _Roles(consumer, is_prod, neither, rank)


def _group_labels(blk: _Blocks, rows: _Rows, roles: _Roles) -> np.ndarray:
    """Pass 7: the group key of every block (its group's smallest block; -2: FIXED, shared
    by every group).

    Classes created by the same layer (conv/linear output dim) form one group; classes no
    layer creates group by the per-channel tensors they share. Consumers (a conv reading a
    concatenation) are members of every group whose channels they read.
    """
    nb = blk.nb
    free = rows.row_b != blk.fixed_b
    ue, ur = rows.row_e[free], rows.row_b[free]
    prod_rows, neither_rows = roles.produces[ue], roles.neither[ue]
    produced = np.zeros(nb, dtype=bool)
    produced[ur[prod_rows]] = True
    covered = produced.copy()
    covered[ur[neither_rows]] = True
    ea: list[np.ndarray] = []
    eb: list[np.ndarray] = []
    for sel in (prod_rows, neither_rows & ~produced[ur], ~covered[ur]):
        idx = np.flatnonzero(sel)  # link each dim's selected blocks to its first one
        e = ue[idx]
        later = np.zeros(idx.size, dtype=bool)
        later[1:] = e[1:] == e[:-1]
        lead = idx[np.maximum.accumulate(np.where(later, 0, np.arange(idx.size)))]
        ea.append(ur[lead[later]])
        eb.append(ur[idx[later]])
    # A group's key: its smallest block (that of its smallest root).
    label = components(nb, np.concatenate(ea), np.concatenate(eb))
    glabel = np.full(nb, -2, dtype=np.int64)  # -2: FIXED, shared by every group
    glabel[ur] = label[ur]
    return glabel


@dataclass(slots=True)
class _Runs:
    """Rows of group blocks sorted by group ("runs", one per group), then producers ("out")
    before consumers, then trace order."""

    row_e: np.ndarray  # per row: its canonical dim
    row_b: np.ndarray  # per row: its block
    row_k: np.ndarray  # per row: its group key
    has_fixed: np.ndarray  # per dim: one of its rows is FIXED's block
    span: list[int]  # per dim: its distinct positions when all hold one group's unpinned
    # channels (others never empty: positions of other groups or pinned ones remain), else 0
    run_keys: list[int]  # per run: its group key
    bounds: list[int]  # where each run starts in the rows (one more than runs)
    order: list[int]  # the runs in order of their first member dim (ties: by key)


def _group_runs(raw: _Raw, blk: _Blocks, rows: _Rows, roles: _Roles, glabel: np.ndarray) -> _Runs:
    """Pass 8: rows sorted into one run per group, and the groups' order as traced."""
    nraw, canon_of = raw.nraw, raw.canon_of
    if nraw:
        row_k = glabel[rows.row_b]
        has_fixed = np.zeros(nraw, dtype=bool)
        has_fixed[rows.row_e[row_k == -2]] = True
        has_fixed = has_fixed[canon_of]
        distinct = rows.distinct[canon_of]
        keep = row_k >= 0
        row_e, row_b, row_k = rows.row_e[keep], rows.row_b[keep], row_k[keep]
        present = np.zeros(blk.nb, dtype=bool)
        present[row_k] = True
        dense = np.cumsum(present) - 1  # group key -> 0, 1, ...
        sort_key = dense[row_k] * nraw + roles.rank[row_e]
        if sort_key.size and sort_key.max() < (1 << 16):  # radix sort
            sort_key = sort_key.astype(np.uint16)
        elif sort_key.size and sort_key.max() < (1 << 32):
            sort_key = sort_key.astype(np.uint32)
        o = np.argsort(sort_key, kind="stable")
        row_e, row_b, row_k = row_e[o], row_b[o], row_k[o]
        # A member dim whose positions all hold one group's unpinned channels (others never
        # empty: positions of other groups or pinned ones remain).
        pos_k = np.where(blk.pinned_b[blk.pos_b], -3, glabel[blk.pos_b])
        lo_k = np.minimum.reduceat(pos_k, blk.pos_start)
        whole = np.zeros(nraw, dtype=bool)
        whole[raw.canon_e] = (lo_k == np.maximum.reduceat(pos_k, blk.pos_start)) & (lo_k >= 0)
        whole = whole[canon_of]
        span = np.where(whole, distinct, 0).tolist()
    else:
        row_e = row_b = row_k = np.zeros(0, np.int64)
        has_fixed = np.zeros(0, dtype=bool)
        span = []
    run_keys, bounds = _runs(row_k) if row_k.size else ([], [0])
    # Groups in order of their first member dim (ties: by key), as traced.
    first_entry = np.minimum.reduceat(row_e, bounds[:-1]).tolist() if run_keys else []
    order = sorted(range(len(run_keys)), key=lambda j: (first_entry[j], run_keys[j]))
    return _Runs(row_e, row_b, row_k, has_fixed, span, run_keys, bounds, order)


@dataclass(slots=True)
class _Segments:
    """Equal-split constraints (chunk, grouped conv), by the groups whose channels they hold."""

    roots: list[list[np.ndarray]]  # per constraint: class root of every segment position
    of: dict[int, list[int]]  # group key -> the constraints holding its channels


def _segments(an: Analysis, cls: _Classes, blk: _Blocks, glabel: np.ndarray) -> _Segments:
    """Pass 9: which groups' channels every equal-split constraint holds."""
    all_roots, bounds_r, nb = cls.all_roots, blk.bounds_r, blk.nb
    seg_roots = [[all_roots[s] for s in segs] for segs in an.segments]
    seg_of: dict[int, list[int]] = {}
    for j, segs in enumerate(seg_roots):
        xs = np.concatenate(segs) if segs else np.zeros(0, np.int64)
        bx = np.searchsorted(bounds_r, xs, side="right") - 1  # block of each root
        gl = np.where((bx >= 0) & (bx < nb), glabel[np.clip(bx, 0, max(nb - 1, 0))], -2)
        for key in unique(gl[(gl >= 0) & ~cls.pinned[xs]]).tolist():
            seg_of.setdefault(key, []).append(j)
    return _Segments(seg_roots, seg_of)


@dataclass(slots=True)
class _RunFacts:
    """Per run (group), computed for all rows at once: see `_run_facts`."""

    ordered_all: list[int]  # every run's member dims in order, flat
    ob: list[int]  # where each run's member dims start in ``ordered_all``
    first_holds: list[bool]  # its first member holds every block of the group
    touches_fixed: list[bool]  # it touches FIXED
    chan_rows: np.ndarray  # the roots of its first member's unpinned blocks, flat
    cb: list[int]  # where each run's channels start in ``chan_rows``
    pin_lo: list[int]  # its first member's smallest pinned root (`_BIG`: none)
    pinned_first: list[int]  # its first member's pinned positions, its own or FIXED


def _run_facts(
    raw: _Raw, blk: _Blocks, roles: _Roles, glabel: np.ndarray, runs: _Runs
) -> _RunFacts:
    """Pass 10: per run (group), vectorised over all rows: its member dims in order;
    whether its first member holds every block of the group (a layer's output channels:
    then its channels are the roots of that member's unpinned blocks in order, and its
    smallest pinned root is noted); whether it touches FIXED; and the pinned positions of
    its first member that are its own or FIXED."""
    row_e, row_b, row_k, bounds = runs.row_e, runs.row_b, runs.row_k, runs.bounds
    bounds_r, blen, pinned_b = blk.bounds_r, blk.blen, blk.pinned_b
    nrows = row_b.size
    n_runs = len(runs.run_keys)
    starts_run = np.asarray(bounds[:-1], dtype=np.int64)
    new_entry = np.ones(nrows, dtype=bool)
    new_entry[1:] = (row_e[1:] != row_e[:-1]) | (row_k[1:] != row_k[:-1])
    ehead = np.flatnonzero(new_entry)  # first row of each (run, canonical dim)
    hb = np.searchsorted(ehead, bounds).tolist()
    ordered_all, ob = _member_order(row_e[ehead], np.diff(hb), raw.canon_of, roles.consumer)
    ehead_l = [*ehead.tolist(), nrows]
    first_end = [ehead_l[hb[j] + 1] for j in range(n_runs)]
    step = np.zeros(nrows + 1, dtype=np.int64)
    np.add.at(step, starts_run, 1)
    np.add.at(step, np.asarray(first_end, dtype=np.int64), -1)
    in_first = np.cumsum(step[:-1]) > 0
    marked = np.zeros(blk.nb, dtype=bool)
    marked[row_b[in_first]] = True
    row_pin = pinned_b[row_b]
    first_holds = np.logical_and.reduceat(marked[row_b], starts_run).tolist() if nrows else []
    touches_fixed = (
        np.logical_or.reduceat(runs.has_fixed[row_e], starts_run).tolist() if nrows else []
    )
    chan_sel = in_first & ~row_pin
    chan_len = blen[row_b[chan_sel]]
    chan_rows = _ranges(bounds_r[row_b[chan_sel]], chan_len)
    cb = [0, *np.cumsum(np.add.reduceat(np.where(chan_sel, blen[row_b], 0), starts_run)).tolist()]
    row_root = bounds_r[row_b]  # a block's smallest root
    pin_lo = (
        np.minimum.reduceat(np.where(in_first & row_pin, row_root, _BIG), starts_run).tolist()
        if nrows
        else []
    )
    if nrows:  # the pieces of every run's first member dim
        pieces, pos_start = blk.pieces, blk.pos_start
        at_canon = np.zeros(raw.nraw, dtype=np.int64)
        at_canon[raw.canon_e] = np.arange(raw.canon_e.size)
        first_ci = at_canon[row_e[starts_run]]
        fb = blk.pos_b[_ranges(pos_start[first_ci], pieces[first_ci])]
        fk = np.repeat(np.asarray(runs.run_keys, dtype=np.int64), pieces[first_ci])
        gk = glabel[fb]
        own_pinned = np.where(pinned_b[fb] & ((gk == fk) | (gk == -2)), blen[fb], 0)
        fp_starts = np.cumsum(pieces[first_ci]) - pieces[first_ci]
        pinned_first = np.add.reduceat(own_pinned, fp_starts).tolist()
    else:
        pinned_first = []
    return _RunFacts(
        ordered_all, ob, first_holds, touches_fixed, chan_rows, cb, pin_lo, pinned_first
    )


@dataclass(slots=True)
class _Made:
    """The groups, in order of runs, with what ordering them and filling slots needs."""

    groups: list[ChannelGroup]
    first_name: list[str]  # per group: its first member's tensor
    group_roots: list[np.ndarray]  # per group: class root of every channel


def _make_groups(
    cls: _Classes,
    raw: _Raw,
    blk: _Blocks,
    roles: _Roles,
    glabel: np.ndarray,
    runs: _Runs,
    segs: _Segments,
    facts: _RunFacts,
) -> _Made:
    """Pass 11: one `ChannelGroup` per run: its channels, pin reason, prunability and
    split constraints."""
    n, fixed_root, why, texts = cls.n, cls.fixed_root, cls.why, cls.texts
    pinned_flag = cls.pinned
    raw_name, raw_dim = raw.raw_name, raw.raw_dim
    bounds_r, blen, pinned_b, fixed_b = blk.bounds_r, blk.blen, blk.pinned_b, blk.fixed_b
    row_b, bounds, run_keys, span = runs.row_b, runs.bounds, runs.run_keys, runs.span
    seg_roots, seg_of = segs.roots, segs.of
    ordered_all, ob, first_holds = facts.ordered_all, facts.ob, facts.first_holds
    touches_fixed, chan_rows, cb = facts.touches_fixed, facts.chan_rows, facts.cb
    pin_lo, pinned_first = facts.pin_lo, facts.pinned_first
    big = _BIG
    consumer_l = roles.consumer.tolist()
    rows = _MemberRows(raw_name, raw_dim, consumer_l, raw.raw_roots, span)
    groups: list[ChannelGroup] = []
    first_name: list[str] = []  # per group: its first member's tensor
    group_roots: list[np.ndarray] = []  # per group: class root of every channel
    lookup = np.full(n, -1, dtype=np.int64)  # class root -> channel (of the current group)
    root_label: np.ndarray | None = None  # group key of every root, when segments need it
    for run in runs.order:
        key = run_keys[run]
        ordered = ordered_all[ob[run] : ob[run + 1]]
        if first_holds[run]:
            order = chan_rows[cb[run] : cb[run + 1]]
            lo_pin = pin_lo[run]
            if touches_fixed[run]:
                lo_pin = min(lo_pin, fixed_root)
            pinned_root = lo_pin if lo_pin != big else None
        else:  # the group's roots in order of first appearance
            rs = row_b[bounds[run] : bounds[run + 1]]
            _, fi = first_index(rs)
            in_order = rs[np.sort(fi)]
            if touches_fixed[run]:
                in_order = np.concatenate((in_order, [fixed_b]))
            pin_mask = pinned_b[in_order]
            kept = in_order[~pin_mask]
            order = _ranges(bounds_r[kept], blen[kept])
            pinned_root = int(bounds_r[in_order[pin_mask]].min()) if pin_mask.any() else None
        nch = int(order.size)
        chans = _Channels(order)
        has_out = not consumer_l[ordered[0]]  # producers come first
        reason = None
        if pinned_root is not None:
            reason = texts[max(int(why[pinned_root]), 0)]
        if not has_out and nch:
            reason = "no layer produces these channels"
        prunable = bool(nch) and has_out
        head = ordered[0]  # producers sort first
        spans = [span[i] for i in ordered if span[i] > 0]
        split: tuple[Any, Any] | None = ((), ())
        if key in seg_of:
            lookup[order] = np.arange(nch)
            if root_label is None:
                root_label = np.full(n, -2, dtype=np.int64)
                root_label[bounds_r[0] : bounds_r[-1]] = np.repeat(glabel, blen)
            ignore = (root_label == key) & pinned_flag
            ignore[fixed_root] = True
            split = _cells(lookup, nch, [seg_roots[j] for j in seg_of[key]], ignore)
            lookup[order] = -1
        if split is None:
            prunable = False
            reason = "it is split into equal parts together with another group's channels"
            split = ((), ())
        cells, constraints = split
        groups.append(
            ChannelGroup(
                id=f"{raw_name[head]}:{raw_dim[head]}",
                channels=nch,
                prunable=prunable,
                reason=reason,
                blocks=max(len(cells), 1),
                pinned=pinned_first[run],
                _cells=cells,
                _constraints=constraints,
                _rows=rows,
                _entries=tuple(ordered),
                _chans=chans,
                _min_span=min(spans, default=0),
            )
        )
        first_name.append(raw_name[ordered[0]])
        group_roots.append(order)
    return _Made(groups, first_name, group_roots)


def _assemble(
    an: Analysis,
    params: Mapping[str, tuple[int, ...]],
    cls: _Classes,
    cand: _Candidates,
    made: _Made,
) -> ChannelGraph:
    """Pass 12: groups in a stable order with unique ids, the channel slot of every
    position, and the graph."""
    groups, first_name = made.groups, made.first_name
    node_names, all_roots = cand.node_names, cls.all_roots
    # Stable order: by the trace order of each group's first member.
    first_seen = {name: i for i, name in enumerate(dict.fromkeys(node_names))}
    perm = sorted(
        range(len(groups)),
        key=lambda i: (first_seen.get(first_name[i], 0), groups[i].id),
    )
    groups = [groups[i] for i in perm]
    ids: dict[str, int] = {}
    for i, g in enumerate(groups):
        if g.id in ids:
            groups[i] = replace(g, id=f"{g.id}#{i}")
        ids[groups[i].id] = i
    offset = [0]
    for g in groups:
        offset.append(offset[-1] + g.channels)

    slot = np.full(cls.n, offset[-1], dtype=np.int64)  # sentinel: never removed
    if groups:  # the groups' channels in their new order fill the slots in order
        slot[np.concatenate([made.group_roots[i] for i in perm])] = np.arange(offset[-1])
    # Channel slot of every parameter/buffer position (each shared atom array once).
    slots_u = slot[cand.r_u]
    cap_shapes = an.cap.shapes
    shapes = dict(zip(node_names, [tuple(cap_shapes[n]) for n in an.param_atoms], strict=True))
    shapes.update({name: tuple(s) for name, s in params.items() if name not in shapes})
    c_name, c_u = cand.c_name, cand.c_u
    return ChannelGraph(
        groups=groups,
        shapes=shapes,
        unknown_ops=dict(an.unknown_ops),
        macs_total=sum(t.macs for t in an.mac_terms),
        _gid=ids,
        _offset=offset,
        _term_src=(slot, all_roots, an.mac_terms),
        _tensor_src=(slots_u, cand.lo_u, cand.hi_u, c_name, c_u, list(params)),
        _dims=list(zip(c_name, cand.c_dim, strict=True)),
        _dim_slots=[slots_u, cand.starts_u, cand.cand_u] if c_u else [],
        _sizes=[(m, attr, slot[all_roots[a]]) for m, attr, a in an.sizes],
    )


def _member_order(
    head_dim: np.ndarray, heads_per_run: np.ndarray, canon_of: np.ndarray, consumer: np.ndarray
) -> tuple[list[int], list[int]]:
    """Every run's member dims: all dims sharing the rows of its canonical dims, sorted by
    (consumer, trace order); returned flat with the bounds of each run.

    Args:
        head_dim: the canonical dim of each (run, canonical dim) pair, runs in order.
        heads_per_run: how many such pairs each run has.
        canon_of: the canonical dim of every dim.
        consumer: whether every dim consumes its channels (role "in").
    """
    nraw = canon_of.size
    head_run = np.repeat(np.arange(heads_per_run.size, dtype=np.int64), heads_per_run)
    by_canon = np.argsort(canon_of, kind="stable")  # dims grouped by canonical, in order
    per_canon = np.bincount(canon_of, minlength=nraw)
    per_head = per_canon[head_dim]
    head_end = np.cumsum(per_head)
    take = np.repeat(np.cumsum(per_canon)[head_dim] - head_end, per_head) + np.arange(
        int(head_end[-1]) if head_end.size else 0
    )
    dims = by_canon[take]
    dims_run = np.repeat(head_run, per_head)
    dims = dims[np.argsort((dims_run * 2 + consumer[dims]) * nraw + dims, kind="stable")]
    per_run = np.bincount(head_run, weights=per_head, minlength=heads_per_run.size)
    return dims.tolist(), [0, *np.cumsum(per_run).astype(np.int64).tolist()]


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The integers ``start, start + 1, ..., start + len - 1`` of every range, concatenated."""
    ends = np.cumsum(lens)
    return np.repeat(starts - ends + lens, lens) + np.arange(ends[-1] if ends.size else 0)


def _runs(s: np.ndarray) -> tuple[list[int], list[int]]:
    """Distinct values of a sorted array and the bounds of their runs (one more than values)."""
    cut = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts = [0, *cut.tolist()]
    return s[starts].tolist(), [*starts, int(s.size)]


def _cells(
    lookup: np.ndarray, nch: int, seg_roots: list[list[np.ndarray]], ignore: np.ndarray
) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[tuple[int, ...], ...], ...]] | None:
    """Cells and equal-split constraints that ops like ``chunk`` impose on one group.

    ``lookup`` maps class roots to this group's channels (-1: not one of them); ``ignore``
    flags roots a constraint may hold besides them (pinned ones). Returns ``(cells,
    constraints)``: cells are the channel sets that every constraint treats alike; each
    constraint lists, per segment, the channel of every position (with repeats). ``None``
    when a constraint also spans channels of another group.
    """
    sig: list[list[int]] = [[] for _ in range(nch)]
    constraints: list[tuple[tuple[int, ...], ...]] = []
    for segs in seg_roots:
        chans = [lookup[s] for s in segs]
        if not any((c >= 0).any() for c in chans):
            continue
        if any(((c < 0) & ~ignore[s]).any() for s, c in zip(segs, chans, strict=True)):
            return None
        constraints.append(tuple(tuple(c[c >= 0].tolist()) for c in chans))
        for k, c in enumerate(chans):
            for ch in unique(c[c >= 0]).tolist():
                sig[ch].append(k)
    if not constraints:
        return (), ()
    cells: dict[tuple[int, ...], list[int]] = {}
    for ch in range(nch):
        cells.setdefault(tuple(sig[ch]), []).append(ch)
    return tuple(tuple(c) for c in cells.values()), tuple(constraints)
