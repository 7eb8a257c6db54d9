"""Calibration: collect data-driven channel statistics while the user runs their own data.

``with Calibration(model, graph) as cal:`` hooks every layer that produces a prunable
channel (conv, linear, normalisation) and every parameter slice a group owns. Inside, the
user runs forward and backward passes; the hooks accumulate per-channel statistics for the
requested data-driven criteria (activations, per-channel gate gradients, weight * gradient).
On exit every hook is removed and buffers (BatchNorm running statistics), gradients and
train/eval modes are restored, so the model is exactly as before. `calibrate` is the
one-call form for a loader and a loss function.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunepilot.core import ChannelGraph, ChannelGroup, trace

from .._batches import call_model, model_device, split_batch, to_device
from ..errors import CalibrationError
from ._channels import owner, position_channels
from ._criteria import (
    NORM_TYPES,
    ActivationCriterion,
    Criterion,
    GradientWeightCriterion,
    Sensitivity,
    available_criteria,
    get_criterion,
)

__all__ = ["Calibration", "calibrate"]

log = logging.getLogger("prunepilot.search")

Key = tuple[str, int]  # (member tensor name, dim)
LossFn = Callable[[Any, Any], torch.Tensor]


def _channel_dim(module: nn.Module, attr: str, dim: int) -> int | None:
    """The output dimension holding the positions of ``module.<attr>`` dim ``dim``."""
    if attr not in ("weight", "bias"):
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            ok = module.groups == 1 and (dim == 1 if attr == "weight" else dim == 0)
        else:
            ok = dim == 0
        return 1 if ok else None
    if isinstance(module, nn.Linear):
        return -1 if dim == 0 else None
    if isinstance(module, nn.LayerNorm):
        return -1 if len(module.normalized_shape) == 1 and dim == 0 else None
    if isinstance(module, NORM_TYPES):
        return 1 if dim == 0 else None
    return None


@dataclass
class _Hooked:
    """A producing layer whose output carries group channels."""

    module: nn.Module
    dim: int  # channel dimension of the output
    size: int  # channels (positions) of the output
    key: Key  # the member whose positions index the output channels


class Calibration:
    """Context manager collecting data-driven channel statistics; see the module docstring.

    Args:
        model: the model; it must match ``graph`` (traced from it, not pruned since).
        graph: its channel graph; statistics are collected for the prunable groups.
        criteria: data-driven criteria to collect (names or instances); default every
            registered data-driven criterion except ``sensitivity`` (which costs one
            forward per channel; `measure_sensitivity` adds it).
        restore: restore buffers, gradients and modes on exit (default true). Parameter
            values are not snapshotted: do not step an optimizer inside the block.
    """

    def __init__(
        self,
        model: nn.Module,
        graph: ChannelGraph,
        criteria: Iterable[str | Criterion] | None = None,
        *,
        restore: bool = True,
    ) -> None:
        names: list[str | Criterion] = (
            [n for n in available_criteria(data_driven=True) if n != "sensitivity"]
            if criteria is None
            else list(criteria)
        )
        crits = [get_criterion(c) for c in names]
        self.model = model
        self.graph = graph
        self.restore = restore
        self.criteria: dict[str, Criterion] = {c.name: c for c in crits if c.data_driven}
        self._act = [c for c in self.criteria.values() if isinstance(c, ActivationCriterion)]
        self._wgrad = [c for c in self.criteria.values() if isinstance(c, GradientWeightCriterion)]
        self._needs_gate = any(c.needs_grad for c in self._act)
        self._hooked: dict[str, _Hooked] = {}
        self._param_dims: dict[str, list[int]] = {}
        self._find_hook_points()
        self._handles: list[RemovableHandle] = []
        self._masks: dict[str, torch.Tensor] = {}
        self._collecting = False
        self._active = False
        self._sums: dict[str, dict[Key, torch.Tensor]] = {n: {} for n in self.criteria}
        self._fwd_samples: dict[str, int] = {}
        self._bwd_samples: dict[str, int] = {}
        self._param_batches: dict[Key, int] = {}
        self._sensitivity: dict[str, np.ndarray] = {}
        self._saved: dict[str, Any] = {}
        self.forward_passes = 0

    # -------------------------------------------------------------- hook points

    def _find_hook_points(self) -> None:
        params = dict(self.model.named_parameters())
        for g in self.graph.prunable:
            for m in g.members:
                if m.name in params:
                    dims = self._param_dims.setdefault(m.name, [])
                    if m.dim not in dims:
                        dims.append(m.dim)
                if m.role != "out":
                    continue
                mod, attr = owner(self.model, m.name)
                if mod is None:
                    continue
                d = _channel_dim(mod, attr, m.dim)
                mod_name = m.name.rpartition(".")[0]
                if d is None or mod_name in self._hooked:
                    continue
                self._hooked[mod_name] = _Hooked(mod, d, m.size, (m.name, m.dim))

    def hooked_modules(self, group: ChannelGroup) -> list[tuple[str, np.ndarray]]:
        """Hooked producers of ``group``: (module name, per-output-position channel)."""
        out: list[tuple[str, np.ndarray]] = []
        for name, h in self._hooked.items():
            for m in group.members:
                if (m.name, m.dim) == h.key:
                    out.append((name, position_channels(m, group.channels)))
        return out

    # -------------------------------------------------------------- context protocol

    def __enter__(self) -> Calibration:
        if self._active:
            raise CalibrationError("this Calibration is already active")
        if self.restore:
            self._saved = {
                "training": {n: m.training for n, m in self.model.named_modules()},
                "buffers": {n: b.detach().clone() for n, b in self.model.named_buffers()},
                "grads": {
                    n: (None if p.grad is None else p.grad.detach().clone())
                    for n, p in self.model.named_parameters()
                },
            }
        self._handles.append(self.model.register_forward_hook(self._count_forward))
        for name, h in self._hooked.items():
            self._handles.append(h.module.register_forward_hook(self._make_forward_hook(name, h)))
        if self._wgrad:
            params = dict(self.model.named_parameters())
            for pname, dims in self._param_dims.items():
                p = params[pname]
                if p.requires_grad:
                    self._handles.append(p.register_hook(self._make_param_hook(pname, p, dims)))
        self._active = True
        self._collecting = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook and restore the model (called on exit of the ``with``)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._masks.clear()
        self._active = False
        self._collecting = False
        if not self._saved:
            return
        with torch.no_grad():
            bufs = dict(self.model.named_buffers())
            for n, b in self._saved["buffers"].items():
                if n in bufs and bufs[n].shape == b.shape:
                    bufs[n].copy_(b)
        for n, p in self.model.named_parameters():
            g = self._saved["grads"].get(n)
            p.grad = g if g is None or g.shape == p.shape else None
        for n, m in self.model.named_modules():
            m.training = self._saved["training"].get(n, m.training)
        self._saved = {}

    # -------------------------------------------------------------- hooks

    def _count_forward(self, module: nn.Module, inputs: Any, out: Any) -> None:
        if self._collecting:
            self.forward_passes += 1

    def _make_forward_hook(self, name: str, h: _Hooked) -> Callable[..., Any]:
        def hook(module: nn.Module, inputs: Any, out: Any) -> Any:
            if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim < 1:
                return None
            d = h.dim % out.ndim
            if out.shape[d] != h.size:
                return None
            mask = self._masks.get(name)
            if mask is not None:
                shape = [1] * out.ndim
                shape[d] = h.size
                out = out * mask.to(out.dtype).view(shape)
            if not self._collecting:
                return out if mask is not None else None
            x = out.detach()
            x = x.movedim(d, 1) if x.ndim >= 2 else x[None]
            n, c = x.shape[0], x.shape[1]
            x = x.reshape(n, c, -1)
            if self._act:
                self._fwd_samples[name] = self._fwd_samples.get(name, 0) + n
                for crit in self._act:
                    s = crit.forward_stat(x)
                    if s is not None:
                        self._add(crit.name, h.key, s)
            if self._needs_gate and torch.is_grad_enabled() and out.requires_grad:
                shape = [1] * out.ndim
                if out.ndim >= 2:
                    shape[0] = n
                shape[d] = c
                gate = torch.ones(n, c, dtype=out.dtype, device=out.device, requires_grad=True)
                rest = x.shape[2]
                gate.register_hook(lambda g: self._on_gate_grad(name, h, g, rest))
                return out * gate.view(shape)
            return out if mask is not None else None

        return hook

    def _on_gate_grad(self, name: str, h: _Hooked, grad: torch.Tensor, rest: int) -> None:
        if not self._collecting:
            return
        self._bwd_samples[name] = self._bwd_samples.get(name, 0) + grad.shape[0]
        g = grad.detach()
        for crit in self._act:
            if crit.needs_grad:
                s = crit.backward_stat(g, rest)
                if s is not None:
                    self._add(crit.name, h.key, s)

    def _make_param_hook(
        self, pname: str, p: nn.Parameter, dims: Sequence[int]
    ) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            if not self._collecting:
                return
            with torch.no_grad():
                w = p.detach().float()
                g = grad.detach().float()
                for d in dims:
                    w2 = w.movedim(d, 0).reshape(w.shape[d], -1)
                    g2 = g.movedim(d, 0).reshape(g.shape[d], -1)
                    key = (pname, d)
                    self._param_batches[key] = self._param_batches.get(key, 0) + 1
                    for crit in self._wgrad:
                        self._add(crit.name, key, crit.param_stat(w2, g2))

        return hook

    def _add(self, crit: str, key: Key, value: torch.Tensor) -> None:
        v = value.detach().float()
        acc = self._sums[crit]
        acc[key] = acc[key] + v if key in acc else v.clone()

    # -------------------------------------------------------------- results

    def records(self, criterion: str) -> dict[Key, torch.Tensor]:
        """Finalised per-position scores of a criterion, keyed by (tensor name, dim)."""
        crit = self.criteria.get(criterion)
        if crit is None:
            raise CalibrationError(
                f"criterion {criterion!r} was not collected by this calibration (it collected "
                f"{sorted(self.criteria)}); pass it in Calibration(..., criteria=[...])"
            )
        sums = self._sums[criterion]
        if not sums:
            needs_grad = isinstance(crit, GradientWeightCriterion) or (
                isinstance(crit, ActivationCriterion) and crit.needs_grad
            )
            what = "backward pass (loss.backward())" if needs_grad else "forward pass"
            raise CalibrationError(
                f"criterion {criterion!r} has no data: run at least one {what} on real "
                "batches inside the calibration"
            )
        out: dict[Key, torch.Tensor] = {}
        for key, total in sums.items():
            if isinstance(crit, ActivationCriterion):
                mod = key[0].rpartition(".")[0]
                samples = (self._bwd_samples if crit.needs_grad else self._fwd_samples).get(mod, 0)
                out[key] = crit.finalize(total, samples).cpu()
            elif isinstance(crit, GradientWeightCriterion):
                out[key] = crit.finalize(total, self._param_batches.get(key, 0)).cpu()
            else:
                out[key] = total.cpu()
        return out

    def sensitivity_scores(self) -> dict[str, np.ndarray]:
        """Loss increase per channel by group id (empty before `measure_sensitivity`)."""
        return dict(self._sensitivity)

    def measure_sensitivity(
        self,
        batches: Iterable[Any],
        loss_fn: LossFn,
        *,
        max_batches: int = 2,
        groups: Iterable[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Mask each channel in turn and record the mean loss increase on a few batches.

        Runs in eval mode without gradients (one forward per channel and batch), so
        keep ``max_batches`` small. Must be called inside the ``with`` block.
        """
        if not self._active:
            raise CalibrationError("measure_sensitivity must run inside the calibration block")
        if "sensitivity" not in self.criteria:
            self.criteria["sensitivity"] = Sensitivity()
        device = model_device(self.model)
        data = [
            tuple(to_device(t, device) for t in split_batch(b))
            for b in itertools.islice(batches, max_batches)
        ]
        if not data:
            raise CalibrationError("measure_sensitivity got no batches")
        wanted = None if groups is None else set(groups)
        modes = {n: m.training for n, m in self.model.named_modules()}
        self.model.eval()
        self._collecting = False
        try:
            with torch.no_grad():

                def mean_loss() -> float:
                    return float(
                        np.mean([float(loss_fn(call_model(self.model, x), y)) for x, y in data])
                    )

                base = mean_loss()
                for g in self.graph.prunable:
                    if wanted is not None and g.id not in wanted:
                        continue
                    mods = self.hooked_modules(g)
                    if not mods:
                        log.warning("sensitivity: group %s has no hookable producer", g.id)
                        continue
                    scores = np.zeros(g.channels)
                    for c in range(g.channels):
                        for name, pos_ch in mods:
                            mask = torch.ones(len(pos_ch), device=device)
                            mask[torch.as_tensor(pos_ch == c, device=device)] = 0.0
                            self._masks[name] = mask
                        scores[c] = mean_loss() - base
                    for name, _ in mods:
                        self._masks.pop(name, None)
                    self._sensitivity[g.id] = scores
        finally:
            self._masks.clear()
            self._collecting = True
            for n, m in self.model.named_modules():
                m.training = modes.get(n, m.training)
        return dict(self._sensitivity)


def calibrate(
    model: nn.Module,
    loader: Iterable[Any],
    loss_fn: LossFn,
    steps: int = 8,
    *,
    graph: ChannelGraph | None = None,
    criteria: Iterable[str | Criterion] | None = None,
    sensitivity_batches: int = 2,
    train_mode: bool = False,
) -> Calibration:
    """Run ``steps`` forward/backward passes from ``loader`` inside a `Calibration`.

    Args:
        model: the model (left exactly as it was).
        loader: yields ``(inputs, targets)`` batches.
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar tensor.
        steps: number of batches for the statistics.
        graph: the model's channel graph; traced from the first batch when omitted.
        criteria: data-driven criteria to collect (default: all registered except
            ``sensitivity``; name it to get it).
        sensitivity_batches: batches for the masked-loss sensitivity; only used when
            ``sensitivity`` is among the criteria.
        train_mode: run in train mode (batch statistics, dropout); default eval mode.

    Returns:
        The finished `Calibration`; pass it as ``calibration=`` to `score_channels`.
    """
    if steps < 1:
        raise CalibrationError(f"calibrate needs steps >= 1; got {steps}")
    device = model_device(model)
    it = iter(loader)
    first = next(it, None)
    if first is None:
        raise CalibrationError("the calibration loader yielded no batches")
    if graph is None:
        x0, _ = split_batch(first)
        x0 = to_device(x0, device)
        example = x0[:2] if isinstance(x0, torch.Tensor) else x0
        graph = trace(model, example if isinstance(example, torch.Tensor) else tuple(example))
    seen: list[Any] = []
    cal = Calibration(model, graph, criteria)
    with cal:
        model.train(train_mode)
        for batch in itertools.islice(itertools.chain([first], it), steps):
            x, y = (to_device(t, device) for t in split_batch(batch))
            model.zero_grad(set_to_none=True)
            loss = loss_fn(call_model(model, x), y)
            loss.backward()
            if len(seen) < sensitivity_batches:
                seen.append((x, y))
        if "sensitivity" in cal.criteria and sensitivity_batches > 0:
            cal.measure_sensitivity(seen, loss_fn, max_batches=sensitivity_batches)
    return cal
