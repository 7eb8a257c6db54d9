"""A latency model learned from measurements (NetAdapt/HALP style).

`LatencyModel.build` times every layer whose cost depends on pruned channels as a
standalone module over a grid of kept (out, in) channel counts on the target device, a
lookup table per distinct layer signature (repeated blocks are measured once). `predict`
sums the bilinearly interpolated tables for a plan and adds what the layers miss
(normalisation, activations, additions, Python overhead); `fit` learns that correction
from whole-model measurements. Prediction is pure numpy/Python, cheap enough to run for
every candidate of a search, so only promising candidates are measured for real.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from prunepilot.core import ChannelGraph, PlanError
from prunepilot.schemas import LatencyTarget

from .._batches import call_model
from ..errors import LatencyError
from ._measure import (
    cpu_threads,
    first_run,
    prepare,
    resolve_device,
    target_dtype,
    time_calls,
)

__all__ = ["LatencyModel"]

log = logging.getLogger("prunepilot.search")

PlanLike = Mapping[str, Sequence[int]]
BuildCallback = Callable[[int, int], None]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_FORMAT = 1
_PER_LAYER_MIN_SAMPLES = 8  # whole-model measurements needed before per-layer multipliers
_PER_LAYER_RIDGE = 0.05  # pull of each layer's multiplier towards the shared one
_RIDGE = 1e-3  # pull of the fit towards the build-time prior (in normalised units)


@dataclass(frozen=True)
class _Layer:
    """One call of a layer whose cost depends on pruned channels.

    Table axes are the kept sizes of the weight's dims 0 and 1 (conv: out, in per group;
    transposed conv: in, out per group; linear: out, in).
    """

    name: str
    table: str
    full: tuple[int, int]
    out_axis: int  # output channels = kept[out_axis] * out_mult
    out_mult: int
    out_volume: float  # output elements per output channel (batch included)


@dataclass(frozen=True)
class _Table:
    """Measured milliseconds on a grid of kept sizes, raw and made monotone."""

    grid0: tuple[int, ...]
    grid1: tuple[int, ...]
    raw: tuple[tuple[float, ...], ...]
    ms: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class _Spec:
    """How to build and feed the standalone module of one table."""

    module: nn.Module
    kind: str  # "conv", "convT" or "linear"
    in_shape: tuple[int, ...]
    depthwise: bool


def _kind(mod: nn.Module) -> str | None:
    if isinstance(mod, _CONV):
        return "conv"
    if isinstance(mod, _CONVT):
        return "convT"
    if isinstance(mod, nn.Linear):
        return "linear"
    return None


def _base_class(mod: nn.Module) -> type[nn.Module]:
    for cls in (*_CONV, *_CONVT, nn.Linear):
        if isinstance(mod, cls):
            return cls
    raise LatencyError(f"{type(mod).__name__} is not a layer the latency model times")


def _grid(size: int, ratios: Sequence[float], quantum: int, vary: bool) -> tuple[int, ...]:
    """Kept counts on the ratio grid: multiples of ``quantum`` in [quantum, size]."""
    if not vary or size <= quantum:
        return (size,)
    counts = {size}
    for r in ratios:
        k = round(r * size / quantum) * quantum
        counts.add(min(max(k, quantum), size))
    return tuple(sorted(counts))


def _monotone(raw: np.ndarray) -> np.ndarray:
    """Make a table non-decreasing along both axes: the mean of the upper (running max)
    and lower (reverse running min) monotone envelopes, so one noisy cell moves little."""
    out = raw.astype(np.float64)
    for axis in (0, 1):
        up = np.maximum.accumulate(out, axis=axis)
        down = np.flip(np.minimum.accumulate(np.flip(out, axis=axis), axis=axis), axis=axis)
        out = (up + down) / 2
    return out


def _retime_outliers(
    raw: np.ndarray,
    bench: _Bench,
    grid0: Sequence[int],
    grid1: Sequence[int],
    repeats: int,
    tolerance: float = 1.15,
) -> int:
    """Time again each cell slower than a larger neighbour (by more than ``tolerance``)
    and that neighbour, keeping the faster time: a burst of load on the machine makes a
    cell look slow, while real latency rarely falls as channels are added."""
    suspects: set[tuple[int, int]] = set()
    n0, n1 = raw.shape
    for i, j in itertools.product(range(n0), range(n1)):
        for ni, nj in ((i + 1, j), (i, j + 1)):
            if ni < n0 and nj < n1 and raw[i, j] > tolerance * raw[ni, nj]:
                suspects.update({(i, j), (ni, nj)})
    for i, j in sorted(suspects):
        raw[i, j] = min(raw[i, j], bench.time(grid0[i], grid1[j], 0, repeats))
    return len(suspects)


def _bracket(grid: Sequence[int], v: float) -> tuple[int, int, float]:
    if v <= grid[0]:
        return 0, 0, 0.0
    last = len(grid) - 1
    if v >= grid[last]:
        return last, last, 0.0
    j = bisect_right(grid, v)
    i = j - 1
    return i, j, (v - grid[i]) / (grid[j] - grid[i])


def _bilinear(t: _Table, v0: float, v1: float) -> float:
    i0, j0, a = _bracket(t.grid0, v0)
    i1, j1, b = _bracket(t.grid1, v1)
    ms = t.ms
    lo = ms[i0][i1] * (1 - b) + ms[i0][j1] * b
    hi = ms[j0][i1] * (1 - b) + ms[j0][j1] * b
    return lo * (1 - a) + hi * a


def _nnls_ridge(x: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    """``argmin ||x b - y||^2 + lam ||b - prior||^2`` subject to ``b >= 0``.

    Exact for the few coefficients used here: the optimum is the unconstrained optimum
    of its own support, so trying every support and keeping the best feasible one works.
    """
    k = x.shape[1]
    best: np.ndarray | None = None
    best_obj = np.inf
    for mask in itertools.product((False, True), repeat=k):
        sup = np.flatnonzero(mask)
        coef = np.zeros(k)
        if sup.size:
            xs = x[:, sup]
            lhs = xs.T @ xs + lam * np.eye(sup.size)
            rhs = xs.T @ y + lam * prior[sup]
            coef[sup] = np.linalg.solve(lhs, rhs)
            if (coef[sup] < 0).any():
                continue
        obj = float(np.sum((x @ coef - y) ** 2) + lam * np.sum((coef - prior) ** 2))
        if obj < best_obj:
            best, best_obj = coef, obj
    assert best is not None  # the empty support is always feasible
    return best


class LatencyModel:
    """Per-layer latency lookup tables keyed by kept channel counts, plus a fitted correction.

    ``predict(plan) = a + b * (sum of interpolated layer tables) + c * (activation volume)``
    in milliseconds, where the volume is the layers' output elements under the plan as a
    fraction of the unpruned model's. Until `fit` is called, ``a`` is the unpruned model's
    measured time outside the tabulated layers, ``b = 1`` and ``c = 0``.

    Build with `LatencyModel.build`; ship with `to_dict`/`from_dict` or pickle.

    Attributes:
        target: the device and settings measured on.
        keep_ratios: the ratio grid the tables were built on.
        full_ms: the unpruned model's measured median latency.
        lut_full_ms: the tables' sum at full width.
        entries: table cells measured.
        build_seconds: wall time of `build`.
        fitted: samples of the last `fit` (0: the build-time prior).
    """

    def __init__(
        self,
        *,
        target: LatencyTarget,
        keep_ratios: Sequence[float],
        layers: Sequence[_Layer],
        tables: Mapping[str, _Table],
        terms: Mapping[str, tuple[np.ndarray, np.ndarray]],
        group_ids: Sequence[str],
        full_ms: float,
        entries: int,
        build_seconds: float,
        coef: tuple[float, float, float] | None = None,
        fitted: int = 0,
        layer_coef: Sequence[float] | None = None,
    ) -> None:
        self.target = target
        self.keep_ratios = tuple(float(r) for r in keep_ratios)
        self._layers = tuple(layers)
        self._tables = dict(tables)
        self._terms = {
            gid: (np.asarray(t, np.intp), np.asarray(m, np.float64))
            for gid, (t, m) in terms.items()
        }
        self._group_ids = frozenset(group_ids)
        # Most members hold one position per channel: their removed count is a product.
        self._fast: dict[str, tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        for gid, (t, m) in self._terms.items():
            even = (m == m[:1]).all(axis=0) if m.shape[0] else np.ones(t.size, bool)
            first = m[0] if m.shape[0] else np.zeros(t.size)
            self._fast[gid] = (int(m.shape[0]), t[even], first[even], t[~even], m[:, ~even])
        self.full_ms = float(full_ms)
        self.entries = int(entries)
        self.build_seconds = float(build_seconds)
        self._full = np.asarray([s for layer in self._layers for s in layer.full], np.float64)
        self._by_layer = tuple(self._tables[layer.table] for layer in self._layers)
        self._out_index = np.asarray(
            [2 * i + layer.out_axis for i, layer in enumerate(self._layers)], np.intp
        )
        self._out_coef = np.asarray(
            [layer.out_mult * layer.out_volume for layer in self._layers], np.float64
        )
        self.volume_full = (
            float(self._full[self._out_index] @ self._out_coef) if self._layers else 0.0
        )
        self.lut_full_ms = self._lut(self._full.tolist())
        self.coef = coef if coef is not None else self._prior()
        self.fitted = int(fitted)
        # per-layer multipliers of the tables (None: the shared ``b`` of ``coef``)
        self.layer_coef: np.ndarray | None = (
            None if layer_coef is None else np.asarray(layer_coef, np.float64)
        )

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Module names of the tabulated layer calls, in forward order."""
        return tuple(layer.name for layer in self._layers)

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        model: nn.Module,
        graph: ChannelGraph,
        example_inputs: Any,
        target: LatencyTarget | None = None,
        *,
        keep_ratios: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        callback: BuildCallback | None = None,
        warmup: int = 1,
        repeats: int = 5,
    ) -> LatencyModel:
        """Measure the lookup tables of ``model``'s pruning-dependent layers on ``target``.

        Args:
            model: the model ``graph`` was traced from (not modified: a copy is measured).
            graph: its channel graph; layers whose weights are members of prunable groups
                are tabulated, along the weight dims the groups touch.
            example_inputs: as for `measure_latency` (resized to the target batch).
            target: device, batch, dtype, threads, memory format (default: CPU, fp32).
            keep_ratios: fractions of each axis's channels kept on the grid (1.0 is added).
            callback: called as ``callback(done, total)`` after each table cell.
            warmup: untimed runs per table cell.
            repeats: timed runs per table cell; the fastest is kept (robust to bursts of
                load), and cells slower than a larger neighbour are timed again. The full
                model is timed with the target's own ``warmup``/``repeats`` before and
                after the tables; the faster median is kept.

        Raises:
            LatencyError: the target cannot run the model (see `measure_latency`), or bad
                ``keep_ratios``.
        """
        t_start = time.perf_counter()
        target = target or LatencyTarget()
        ratios = sorted({float(r) for r in keep_ratios} | {1.0})
        if not all(0 < r <= 1 for r in ratios):
            raise LatencyError(f"keep_ratios must lie in (0, 1]; got {list(keep_ratios)}")
        if warmup < 0 or repeats < 1:
            raise LatencyError(f"need warmup >= 0 and repeats >= 1; got {warmup}, {repeats}")
        device = resolve_device(target)
        private, inputs = prepare(model, example_inputs, target)

        varying: set[tuple[str, int]] = set()
        member_names: set[str] = set()
        for g in graph.groups:
            if g.prunable and g.channels > 0:
                for m in g.members:
                    varying.add((m.name, m.dim))
                    member_names.add(m.name)

        calls: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
        handles = []
        modules = dict(private.named_modules())
        for name, mod in modules.items():
            wname = f"{name}.weight" if name else "weight"
            if _kind(mod) is None or wname not in member_names:
                continue

            def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
                if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    calls.append((name, tuple(args[0].shape), tuple(out.shape)))

            handles.append(mod.register_forward_hook(hook))
        threads = target.threads if device.type == "cpu" else None
        with cpu_threads(threads):
            try:
                first_run(private, inputs, target)
            finally:
                for h in handles:
                    h.remove()

            def time_full() -> float:
                runs = time_calls(
                    lambda: call_model(private, inputs), device, target.warmup, target.repeats
                )
                return float(np.median(runs))

            full_before = time_full()
            layers, specs, grids = cls._plan_tables(modules, calls, varying, ratios)
            total = sum(len(g0) * len(g1) for g0, g1 in grids.values())
            log.info(
                "latency model: %d layer calls, %d distinct signatures, %d table cells on %s",
                len(layers),
                len(specs),
                total,
                device,
            )
            tables: dict[str, _Table] = {}
            done = 0
            for key, spec in specs.items():
                g0, g1 = grids[key]
                bench = _Bench(spec, device, target)
                raw = np.zeros((len(g0), len(g1)))
                for (i, k0), (j, k1) in itertools.product(enumerate(g0), enumerate(g1)):
                    raw[i, j] = bench.time(k0, k1, warmup, repeats)
                    done += 1
                    if callback is not None:
                        callback(done, total)
                retimed = _retime_outliers(raw, bench, g0, g1, repeats)
                if retimed:
                    log.debug("latency model: re-timed %d suspicious cells of %s", retimed, key)
                tables[key] = _Table(
                    grid0=g0,
                    grid1=g1,
                    raw=tuple(tuple(float(v) for v in row) for row in raw),
                    ms=tuple(tuple(float(v) for v in row) for row in _monotone(raw)),
                )
            # Timed again after the tables: the faster median wins, so a burst of load
            # during one of them does not inflate the overhead the prior adds.
            full_ms = min(full_before, time_full())
        terms = cls._terms_of(graph, layers)
        timed = {f"{layer.name}.weight" if layer.name else "weight" for layer in layers}
        unmodelled = sorted(
            {
                m.name
                for g in graph.prunable
                for m in g.members
                if len(graph.shapes.get(m.name, ())) >= 2 and m.name not in timed
            }
        )
        if unmodelled:
            log.info(
                "latency model: %d pruned tensors are not in a timed layer (costs folded into "
                "the correction): %s",
                len(unmodelled),
                unmodelled[:8],
            )
        out = cls(
            target=target,
            keep_ratios=ratios,
            layers=layers,
            tables=tables,
            terms=terms,
            group_ids=[g.id for g in graph.groups],
            full_ms=full_ms,
            entries=total,
            build_seconds=time.perf_counter() - t_start,
        )
        log.info(
            "latency model built in %.1f s: %d cells, full model %.3f ms, tables %.3f ms",
            out.build_seconds,
            total,
            full_ms,
            out.lut_full_ms,
        )
        return out

    @staticmethod
    def _plan_tables(
        modules: Mapping[str, nn.Module],
        calls: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
        varying: set[tuple[str, int]],
        ratios: Sequence[float],
    ) -> tuple[list[_Layer], dict[str, _Spec], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
        layers: list[_Layer] = []
        specs: dict[str, _Spec] = {}
        grids: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for name, in_shape, out_shape in calls:
            mod = modules[name]
            kind = _kind(mod)
            assert kind is not None
            weight = mod.weight
            assert isinstance(weight, torch.Tensor)
            wname = f"{name}.weight" if name else "weight"
            s0, s1 = int(weight.shape[0]), int(weight.shape[1])
            groups = int(getattr(mod, "groups", 1))
            in_ch = int(getattr(mod, "in_channels", s1))
            depthwise = kind != "linear" and groups > 1 and groups == in_ch
            q0, q1 = 1, 1
            out_axis, out_mult = 0, 1
            if kind == "conv":
                q0 = s0 // groups if depthwise else groups
                out_channels = s0
            elif kind == "convT":
                q0 = 1 if depthwise else groups
                out_axis, out_mult = (0, s1) if depthwise else (1, groups)
                out_channels = s1 * groups
            else:
                out_channels = s0
            vary0 = (wname, 0) in varying
            vary1 = (wname, 1) in varying and not (kind == "conv" and depthwise)
            g0 = _grid(s0, ratios, q0, vary0)
            g1 = _grid(s1, ratios, q1, vary1)
            sig = (
                type(mod).__name__,
                tuple(weight.shape),
                getattr(mod, "kernel_size", None),
                getattr(mod, "stride", None),
                getattr(mod, "padding", None),
                getattr(mod, "dilation", None),
                getattr(mod, "output_padding", None),
                groups,
                depthwise,
                getattr(mod, "padding_mode", None),
                getattr(mod, "bias", None) is not None,
                in_shape,
                g0,
                g1,
            )
            key = repr(sig)
            if key not in specs:
                specs[key] = _Spec(module=mod, kind=kind, in_shape=in_shape, depthwise=depthwise)
                grids[key] = (g0, g1)
            numel = 1
            for d in out_shape:
                numel *= d
            layers.append(
                _Layer(
                    name=name,
                    table=key,
                    full=(s0, s1),
                    out_axis=out_axis,
                    out_mult=out_mult,
                    out_volume=numel / max(out_channels, 1),
                )
            )
        return layers, specs, grids

    @staticmethod
    def _terms_of(
        graph: ChannelGraph, layers: Sequence[_Layer]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per group: flat (layer, axis) targets and positions removed per channel."""
        index: dict[str, list[int]] = {}
        for i, layer in enumerate(layers):
            index.setdefault(f"{layer.name}.weight" if layer.name else "weight", []).append(i)
        terms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for g in graph.groups:
            if not g.prunable or g.channels == 0:
                continue
            cols: dict[int, np.ndarray] = {}
            for m in g.members:
                if m.dim > 1 or m.name not in index:
                    continue
                chan = m.channel_of_positions()
                counts = np.bincount(chan[chan >= 0], minlength=g.channels).astype(np.float64)
                for i in index[m.name]:
                    flat = 2 * i + m.dim
                    cols[flat] = cols.get(flat, 0) + counts
            if cols:
                targets = np.asarray(sorted(cols), np.intp)
                terms[g.id] = (targets, np.stack([cols[t] for t in sorted(cols)], axis=1))
        return terms

    # ------------------------------------------------------------------ prediction

    def _prior(self) -> tuple[float, float, float]:
        overhead = self.full_ms - self.lut_full_ms
        if overhead >= 0:
            return (overhead, 1.0, 0.0)
        # The layers alone measured slower than the whole model: scale them down instead.
        return (0.0, self.full_ms / self.lut_full_ms, 0.0)

    def _kept(self, plan: PlanLike) -> list[float]:
        """Kept size of every layer's weight dims 0 and 1 under ``plan`` (flat)."""
        removed = np.zeros_like(self._full)
        for gid, remove in plan.items():
            n = len(remove)
            if n == 0:
                continue
            fast = self._fast.get(gid)
            if fast is None:
                if gid in self._group_ids:
                    continue  # a group without timed layers
                raise PlanError(
                    f"unknown group id {gid!r} (not in the graph the model was built on)"
                )
            channels, t_even, per_channel, t_uneven, counts = fast
            if n > channels:
                raise PlanError(f"group {gid!r} has {channels} channels; the plan removes {n}")
            removed[t_even] += n * per_channel
            if t_uneven.size:
                try:
                    removed[t_uneven] += counts[np.asarray(remove, dtype=np.intp)].sum(axis=0)
                except IndexError:
                    raise PlanError(
                        f"group {gid!r} has {channels} channels; the plan names others"
                    ) from None
        return np.maximum(self._full - removed, 1.0).tolist()

    def _lut(self, kept: Sequence[float]) -> float:
        return float(self._layer_luts(kept).sum())

    def _layer_luts(self, kept: Sequence[float]) -> np.ndarray:
        return np.fromiter(
            (_bilinear(t, kept[2 * i], kept[2 * i + 1]) for i, t in enumerate(self._by_layer)),
            np.float64,
            count=len(self._by_layer),
        )

    def _volume(self, kept: Sequence[float]) -> float:
        if not self.volume_full:
            return 0.0
        k = np.asarray(kept, np.float64)[self._out_index]
        return float(k @ self._out_coef) / self.volume_full

    def features(self, plan: PlanLike) -> tuple[float, float]:
        """``(sum of layer tables in ms, activation volume as a fraction of the full model's)``."""
        kept = self._kept(plan)
        return self._lut(kept), self._volume(kept)

    def predict(self, plan: PlanLike) -> float:
        """Predicted median latency (ms) of the model pruned by ``plan``."""
        kept = self._kept(plan)
        a, b, c = self.coef
        vol = self._volume(kept)
        if self.layer_coef is not None:
            return float(a + self.layer_coef @ self._layer_luts(kept) + c * vol)
        return a + b * self._lut(kept) + c * vol

    # ------------------------------------------------------------------ correction

    def fit(self, samples: Sequence[tuple[PlanLike, float]]) -> LatencyModel:
        """Fit the correction to whole-model measurements ``[(plan, measured_ms), ...]``.

        Non-negative least squares of ``measured ~ a + b * tables + c * volume``, gently
        pulled towards the build-time prior; one sample rescales the prior, two fit an
        offset and a scale. Returns ``self``.
        """
        if not samples:
            raise LatencyError("fit needs at least one (plan, measured_ms) sample")
        feats = np.asarray([self.features(plan) for plan, _ in samples], np.float64)
        y = np.asarray([float(ms) for _, ms in samples], np.float64)
        if not np.isfinite(y).all() or (y <= 0).any():
            raise LatencyError("measured latencies must be positive, finite milliseconds")
        prior = self._prior()
        if len(samples) == 1:
            base = prior[0] + prior[1] * feats[0, 0] + prior[2] * feats[0, 1]
            s = float(y[0] / base) if base > 0 else 1.0
            self.coef = (prior[0] * s, prior[1] * s, prior[2] * s)
        else:
            # Normalised units: targets and features are O(1) fractions of the full model.
            sy = self.full_ms or float(y.mean())
            sl = self.lut_full_ms or 1.0
            cols = [np.ones(len(y)), feats[:, 0] / sl]
            p = [prior[0] / sy, prior[1] * sl / sy]
            if len(samples) >= 3:
                cols.append(feats[:, 1])
                p.append(prior[2] / sy)
            x = np.stack(cols, axis=1)
            beta = _nnls_ridge(x, y / sy, np.asarray(p), _RIDGE * len(y))
            a = float(beta[0]) * sy
            b = float(beta[1]) * sy / sl
            c = float(beta[2]) * sy if len(beta) > 2 else 0.0
            self.coef = (a, b, c)
        self.layer_coef = None
        if len(samples) >= _PER_LAYER_MIN_SAMPLES and len(self._by_layer) > 1:
            self._fit_layers(samples, y)
        self.fitted = len(samples)
        log.debug("latency model fit on %d samples: coef %s", len(samples), self.coef)
        return self

    def _fit_layers(self, samples: Sequence[tuple[PlanLike, float]], y: np.ndarray) -> None:
        """Refine the shared table multiplier ``b`` into one per layer.

        Standalone layer timings misjudge how much each layer costs inside the model
        (caching, fusion, framework overhead differ per shape); with enough whole-model
        measurements, a non-negative ridge fit pulled towards the shared ``b`` learns each
        layer's own multiplier, keeping ``a`` and ``c``.
        """
        from scipy.optimize import nnls

        a, b, c = self.coef
        luts = np.stack([self._layer_luts(self._kept(plan)) for plan, _ in samples])
        vols = np.asarray([self._volume(self._kept(plan)) for plan, _ in samples])
        scale = max(float(luts.mean()), 1e-9)
        x = luts / scale
        target = (y - a - c * vols) / scale
        prior = np.full(x.shape[1], b)
        lam = math.sqrt(_PER_LAYER_RIDGE * len(y))
        xa = np.vstack([x, lam * np.eye(x.shape[1])])
        ya = np.concatenate([target, lam * prior])
        coef, _ = nnls(xa, ya)
        candidate = a + luts @ coef + c * vols
        before = a + b * luts.sum(axis=1) + c * vols
        # keep the per-layer fit only if it explains the samples better
        if np.abs(candidate - y).sum() < np.abs(before - y).sum():
            self.layer_coef = coef

    def error(self, samples: Sequence[tuple[PlanLike, float]]) -> float:
        """Median absolute percentage error on ``samples``, as a fraction (0.1 = 10%)."""
        if not samples:
            raise LatencyError("error needs at least one (plan, measured_ms) sample")
        ape = [abs(self.predict(plan) - ms) / ms for plan, ms in samples]
        return float(np.median(ape))

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that `from_dict` turns back into an identical model."""
        return {
            "format": _FORMAT,
            "target": self.target.model_dump(),
            "keep_ratios": list(self.keep_ratios),
            "layers": [
                {
                    "name": layer.name,
                    "table": layer.table,
                    "full": list(layer.full),
                    "out_axis": layer.out_axis,
                    "out_mult": layer.out_mult,
                    "out_volume": layer.out_volume,
                }
                for layer in self._layers
            ],
            "tables": {
                key: {
                    "grid0": list(t.grid0),
                    "grid1": list(t.grid1),
                    "raw": [list(r) for r in t.raw],
                    "ms": [list(r) for r in t.ms],
                }
                for key, t in self._tables.items()
            },
            "terms": {
                gid: {"targets": t.tolist(), "counts": m.tolist()}
                for gid, (t, m) in self._terms.items()
            },
            "group_ids": sorted(self._group_ids),
            "full_ms": self.full_ms,
            "entries": self.entries,
            "build_seconds": self.build_seconds,
            "coef": list(self.coef),
            "fitted": self.fitted,
            "layer_coef": None if self.layer_coef is None else self.layer_coef.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyModel:
        """Rebuild a model saved with `to_dict`."""
        if data.get("format") != _FORMAT:
            raise LatencyError(
                f"unsupported latency model format {data.get('format')!r}; expected {_FORMAT}"
            )
        try:
            a, b, c = (float(v) for v in data["coef"])
            return cls(
                target=LatencyTarget.model_validate(data["target"]),
                keep_ratios=data["keep_ratios"],
                layers=[
                    _Layer(
                        name=d["name"],
                        table=d["table"],
                        full=(int(d["full"][0]), int(d["full"][1])),
                        out_axis=int(d["out_axis"]),
                        out_mult=int(d["out_mult"]),
                        out_volume=float(d["out_volume"]),
                    )
                    for d in data["layers"]
                ],
                tables={
                    key: _Table(
                        grid0=tuple(int(v) for v in t["grid0"]),
                        grid1=tuple(int(v) for v in t["grid1"]),
                        raw=tuple(tuple(float(v) for v in r) for r in t["raw"]),
                        ms=tuple(tuple(float(v) for v in r) for r in t["ms"]),
                    )
                    for key, t in data["tables"].items()
                },
                terms={
                    gid: (
                        np.asarray(t["targets"], np.intp),
                        np.asarray(t["counts"], np.float64).reshape(-1, len(t["targets"])),
                    )
                    for gid, t in data["terms"].items()
                },
                group_ids=data["group_ids"],
                full_ms=data["full_ms"],
                entries=data["entries"],
                build_seconds=data["build_seconds"],
                coef=(a, b, c),
                fitted=data["fitted"],
                layer_coef=data.get("layer_coef"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise LatencyError(f"malformed latency model data ({type(e).__name__}: {e})") from e

    def __repr__(self) -> str:
        a, b, c = self.coef
        return (
            f"LatencyModel({len(self._layers)} layers, {len(self._tables)} tables, "
            f"{self.entries} cells on {self.target.device}, full {self.full_ms:.3f} ms, "
            f"coef a={a:.3f} b={b:.3f} c={c:.3f}, fitted on {self.fitted})"
        )


class _Bench:
    """Times standalone modules of one table's signature: fresh random weights and input
    at full size, sliced to each cell's kept sizes."""

    def __init__(self, spec: _Spec, device: torch.device, target: LatencyTarget) -> None:
        self.spec = spec
        self.device = device
        self.target = target
        dtype = target_dtype(target)
        mod = spec.module
        weight = mod.weight
        assert isinstance(weight, torch.Tensor)
        gen = torch.Generator(device="cpu").manual_seed(0)
        self.weight = (torch.randn(tuple(weight.shape), generator=gen) * 0.05).to(device, dtype)
        bias = getattr(mod, "bias", None)
        self.bias = (
            (torch.randn(tuple(bias.shape), generator=gen) * 0.05).to(device, dtype)
            if isinstance(bias, torch.Tensor)
            else None
        )
        self.x = torch.randn(spec.in_shape, generator=gen).to(device, dtype)
        n_spatial = len(getattr(mod, "kernel_size", ()))
        self.channel_dim = self.x.ndim - 1 if spec.kind == "linear" else self.x.ndim - n_spatial - 1
        self.channels_last = target.memory_format == "channels_last"
        self._inputs: dict[int, torch.Tensor] = {}

    def _input(self, cin: int) -> torch.Tensor:
        x = self._inputs.get(cin)
        if x is None:
            x = self.x.narrow(self.channel_dim, 0, cin)
            fmt = (
                torch.channels_last
                if self.channels_last and x.ndim == 4
                else torch.contiguous_format
            )
            x = x.contiguous(memory_format=fmt)
            self._inputs[cin] = x
        return x

    def module(self, k0: int, k1: int) -> tuple[nn.Module, int]:
        """A fresh module of this kind with kept weight sizes ``(k0, k1)``, and its input
        channel count."""
        spec, mod = self.spec, cast(Any, self.spec.module)
        cls: Any = _base_class(mod)
        new: nn.Module
        if spec.kind == "linear":
            cin, cout = k1, k0
            new = cls(cin, cout, bias=self.bias is not None, device="meta")
        elif spec.kind == "conv":
            groups = int(mod.groups)
            if spec.depthwise:
                groups = k0 // (self.weight.shape[0] // groups)
                cin = groups
            else:
                cin = k1 * groups
            cout = k0
            extra: dict[str, Any] = {}
        else:
            groups = k0 if spec.depthwise else int(mod.groups)
            cin, cout = k0, k1 * groups
            extra = {"output_padding": mod.output_padding}
        if spec.kind != "linear":
            new = cls(
                cin,
                cout,
                mod.kernel_size,
                stride=mod.stride,
                padding=mod.padding,
                dilation=mod.dilation,
                groups=groups,
                bias=self.bias is not None,
                padding_mode=mod.padding_mode,
                device="meta",
                **extra,
            )
        w = self.weight[:k0, :k1]
        fmt = torch.channels_last if self.channels_last and w.ndim == 4 else torch.contiguous_format
        new.weight = nn.Parameter(w.contiguous(memory_format=fmt), requires_grad=False)
        if self.bias is not None:
            new.bias = nn.Parameter(self.bias[:cout].contiguous(), requires_grad=False)
        return new.eval(), cin

    def time(self, k0: int, k1: int, warmup: int, repeats: int) -> float:
        """Median milliseconds of the standalone module with kept sizes ``(k0, k1)``."""
        try:
            mod, cin = self.module(k0, k1)
            x = self._input(cin)
            times = time_calls(lambda: mod(x), self.device, warmup, repeats)
        except Exception as e:  # a standalone layer failing is a finding about the target
            raise LatencyError(
                f"timing {type(self.spec.module).__name__} with kept sizes ({k0}, {k1}) on "
                f"{self.device} in {self.target.dtype} failed ({type(e).__name__}: {e})"
            ) from e
        return min(times)  # the fastest run: robust to interruptions on a shared machine
