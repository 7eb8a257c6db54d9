"""Channel atoms: integer ids for tensor positions, merged with a union-find.

Every position along a channel-carrying dimension is an atom. Ops that force positions to be
removed together unite their atoms; atom 0 (``FIXED``) stands for positions that can never be
removed, so anything united with it is pinned. Other atoms are pinned with a reason; a class is
pinned when any of its atoms is.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIXED", "Atoms"]

FIXED = 0


class Atoms:
    """A growable union-find over channel atoms, with reasons for pinned atoms."""

    def __init__(self) -> None:
        self.parent: list[int] = [FIXED]
        self.reasons: dict[int, str] = {
            FIXED: "its size is fixed by a tensor prunepilot cannot track"
        }
        self.inward: list[np.ndarray] = []  # atoms that consume a channel (role "in")
        self.tagged: list[np.ndarray] = []  # atoms whose dims are meaningful channels
        self.producers: list[np.ndarray] = []  # output-channel atoms of conv/linear weights
        self.flagged: set[int] = {FIXED}  # roots of pinned classes

    def new(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh atoms."""
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo
            if hi in self.flagged:
                self.flagged.add(lo)

    def unite(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unite two equally shaped atom arrays position by position."""
        a = np.asarray(a, dtype=np.int64).ravel()
        b = np.asarray(b, dtype=np.int64).ravel()
        if a.shape != b.shape:
            raise AssertionError(f"atom arrays differ in shape: {a.shape} vs {b.shape}")
        if a.size == 0:
            return
        keep = a != b
        if not keep.any():
            return
        pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
        for x, y in pairs.tolist():
            self.union(x, y)

    def unite_all(self, a: np.ndarray) -> None:
        """Unite every atom of ``a`` into one class."""
        flat = np.unique(np.asarray(a, dtype=np.int64).ravel())
        for x in flat[1:].tolist():
            self.union(int(flat[0]), x)

    def pin(self, a: np.ndarray | None, reason: str) -> None:
        """Mark atoms as never removable, remembering the first reason given."""
        if a is None:
            return
        for x in np.unique(np.asarray(a, dtype=np.int64).ravel()).tolist():
            self.reasons.setdefault(x, reason)
            self.flagged.add(self.find(x))

    def pinned(self, a: np.ndarray) -> bool:
        """Whether every atom of ``a`` belongs to a pinned class."""
        return all(self.find(x) in self.flagged for x in np.unique(a).tolist())

    def roots(self, a: np.ndarray) -> np.ndarray:
        """Class root of every atom in ``a`` (same shape)."""
        flat = np.asarray(a, dtype=np.int64).ravel()
        out = np.fromiter((self.find(x) for x in flat.tolist()), dtype=np.int64, count=flat.size)
        return out.reshape(np.shape(a))
