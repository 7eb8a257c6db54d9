"""Connected components of atom classes against a plain union-find."""

from __future__ import annotations

import numpy as np
import pytest

from prunepilot.core._atoms import components


def _reference(n: int, a: np.ndarray, b: np.ndarray, lab: np.ndarray | None) -> np.ndarray:
    parent = list(range(n)) if lab is None else lab.tolist()

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


@pytest.mark.parametrize("dense", [False, True])
def test_components_match_union_find(dense: bool) -> None:
    """Smallest node of each component, from scratch or extending resolved labels."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        k = int(rng.integers(0, 3 * n if dense else max(n // 8, 1)))
        a, b = rng.integers(0, n, k), rng.integers(0, n, k)
        lab = None
        if trial % 2:
            lab = _reference(n, rng.integers(0, n, k), rng.integers(0, n, k), None)
        assert np.array_equal(components(n, a, b, lab), _reference(n, a, b, lab)), trial
