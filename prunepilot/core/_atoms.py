"""Channel atoms: integer ids for tensor positions, merged into classes.

Every position along a channel-carrying dimension is an atom. Ops that force positions to be
removed together unite their atoms; atom 0 (``FIXED``) stands for positions that can never be
removed, so anything united with it is pinned. Other atoms are pinned with a reason; a class is
pinned when any of its atoms is.

Unions are recorded as edge arrays and resolved in bulk with vectorised hook-and-compress
(connected components), which keeps tracing fast on models with millions of positions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIXED", "Atoms", "components", "first_index", "unique"]

FIXED = 0


def components(n: int, a: np.ndarray, b: np.ndarray, lab: np.ndarray | None = None) -> np.ndarray:
    """Label of every node 0..n-1 (the smallest node id of its component) given edges a-b.

    ``lab``: labels already resolved (each a root id no larger than its node), to extend.
    Edges usually touch a small part of the nodes: components are then found among the
    roots they touch, numbered densely in order (so the smallest stays the smallest), and
    every node follows its root.
    """
    lab = np.arange(n, dtype=np.int64) if lab is None else lab.astype(np.int64, copy=True)
    if not a.size:
        return lab
    la, lb = lab[a], lab[b]
    touched = np.zeros(n, dtype=bool)
    touched[la] = True
    touched[lb] = True
    roots = np.flatnonzero(touched)
    if 4 * roots.size > n:
        return _hook_compress(lab, la, lb)
    dense = np.zeros(n, dtype=np.int64)
    dense[roots] = np.arange(roots.size, dtype=np.int64)
    sub = _hook_compress(np.arange(roots.size, dtype=np.int64), dense[la], dense[lb])
    to = np.arange(n, dtype=np.int64)
    to[roots] = roots[sub]
    return to[lab]


def _hook_compress(lab: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`components` by vectorised hook-and-compress, from resolved labels ``lab`` (modified)."""
    while a.size:
        la, lb = lab[a], lab[b]
        moved = la != lb
        if not moved.any():
            break
        a, b, la, lb = a[moved], b[moved], la[moved], lb[moved]
        # Hook each root onto a smaller one (any will do: labels only ever decrease, so the
        # smallest node of a component ends as its only root).
        lab[np.maximum(la, lb)] = np.minimum(la, lb)
        while True:  # compress to roots
            nxt = lab[lab]
            if np.array_equal(nxt, lab):
                break
            lab = nxt
    return lab


def first_index(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a 1-d array and the index of each one's first occurrence."""
    if a.size < 2 or bool((a[1:] > a[:-1]).all()):  # already strictly increasing
        return a, np.arange(a.size)
    order = np.argsort(a, kind="stable")
    s = a[order]
    keep = np.empty(s.size, dtype=bool)
    if s.size:
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep], order[keep]


def unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` without its hash path, slow on small arrays)."""
    s = np.sort(a, axis=None)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


class Atoms:
    """Growable classes of channel atoms, with reasons for pinned atoms."""

    def __init__(self) -> None:
        self.size = 1  # atom 0 is FIXED
        self._lab = np.zeros(1, dtype=np.int64)  # resolved class root per atom
        self._ea: list[np.ndarray] = []  # pending union edges
        self._eb: list[np.ndarray] = []
        # Pins in order: atom arrays and their reasons (an atom keeps its first reason).
        self._pins: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._why: list[str] = ["its size is fixed by a tensor prunepilot cannot track"]
        self.inward: list[np.ndarray] = []  # atoms that consume a channel (role "in")
        self.tagged: list[np.ndarray] = []  # atoms whose dims are meaningful channels
        self.producers: list[np.ndarray] = []  # output-channel atoms of conv/linear weights

    def new(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh atoms."""
        start = self.size
        self.size += n
        return np.arange(start, start + n, dtype=np.int64)

    def _flush(self) -> None:
        if len(self._lab) == self.size and not self._ea:
            return
        lab = np.arange(self.size, dtype=np.int64)
        lab[: len(self._lab)] = self._lab
        cat = np.concatenate
        if self._ea:
            self._lab = components(self.size, cat(self._ea), cat(self._eb), lab)
        else:
            self._lab = lab
        self._ea, self._eb = [], []

    def find(self, x: int) -> int:
        """Class root of one atom (the smallest atom id in its class)."""
        self._flush()
        return int(self._lab[x])

    def union(self, a: int, b: int) -> None:
        self.unite(np.array([a]), np.array([b]))

    def unite(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unite two equally shaped atom arrays position by position."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.shape != b.shape:
            raise AssertionError(f"atom arrays differ in shape: {a.shape} vs {b.shape}")
        if a.size:
            self._ea.append(a)  # self-edges (a == b) are harmless
            self._eb.append(b)

    def pin(self, a: np.ndarray | None, reason: str) -> None:
        """Mark atoms as never removable, remembering the first reason given."""
        if a is None:
            return
        a = np.asarray(a, dtype=np.int64).ravel()
        if a.size:
            self._pins.append(a)
            self._why.append(reason)

    @property
    def reasons(self) -> dict[int, str]:
        """Every pinned atom with its first reason (in pinning order)."""
        out: dict[int, str] = {}
        for a, why in zip(self._pins, self._why, strict=True):
            for x in a.tolist():
                out.setdefault(x, why)
        return out

    def class_reasons(self) -> tuple[np.ndarray, list[str]]:
        """Per atom: index into the returned reasons of its class's first pin, or -1.

        A class's reason is that of the earliest pin touching any of its atoms (entries at
        class roots are meaningful; others are -1).
        """
        lab = self.all_roots()
        sizes = np.fromiter((a.size for a in self._pins), dtype=np.int64, count=len(self._pins))
        roots = lab[np.concatenate(self._pins)]
        which = np.repeat(np.arange(len(self._pins), dtype=np.int64), sizes)
        uniq, first = first_index(roots)
        out = np.full(self.size, -1, dtype=np.int64)
        out[uniq] = which[first]
        return out, list(self._why)

    def pinned(self, a: np.ndarray) -> bool:
        """Whether every atom of ``a`` belongs to a pinned class."""
        why, _ = self.class_reasons()
        return bool((why[self.roots(a)] >= 0).all())

    def roots(self, a: np.ndarray) -> np.ndarray:
        """Class root of every atom in ``a`` (same shape)."""
        self._flush()
        return self._lab[np.asarray(a, dtype=np.int64)]

    def all_roots(self) -> np.ndarray:
        """Class root of every atom."""
        self._flush()
        return self._lab.copy()
