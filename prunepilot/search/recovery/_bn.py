"""Adaptive BatchNorm: re-estimate running statistics after pruning, without gradients."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .._batches import call_model, model_device, split_batch, to_device

__all__ = ["recalibrate_bn"]

log = logging.getLogger("prunepilot.search")


def recalibrate_bn(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    steps: int = 20,
    device: torch.device | str | None = None,
) -> int:
    """Reset every BatchNorm's running mean/variance and re-estimate them on a few batches.

    Pruning changes what each normalisation layer sees, so its stored statistics go
    stale; a few forward passes (cumulative average, no gradients, dropout off) fix that
    cheaply (Li et al., EagleEye 2020). Modes and momenta are restored afterwards.

    Args:
        model: the model (modified in place: only BatchNorm running statistics).
        loader: yields ``(inputs, targets)`` or bare inputs.
        steps: the number of batches to use.
        device: where to run (default: the model's device).

    Returns:
        The number of batches used (0 when the model has no BatchNorm).
    """
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns or steps < 1:
        return 0
    dev = torch.device(device) if device is not None else model_device(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    saved = [
        {
            k: t.detach().clone()
            for k, t in (
                ("running_mean", m.running_mean),
                ("running_var", m.running_var),
                ("num_batches_tracked", m.num_batches_tracked),
            )
            if t is not None
        }
        for m in bns
    ]
    used = 0
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the batches seen
            bn.train()
        with torch.no_grad():
            for batch in itertools.islice(loader, steps):
                x = split_batch(batch)[0] if isinstance(batch, (tuple, list)) else batch
                call_model(model, to_device(x, dev))
                used += 1
    finally:
        for bn, mom in momenta.items():
            bn.momentum = mom
        for mod, mode in modes.items():
            mod.training = mode
    if used == 0:
        log.warning("recalibrate_bn: the loader yielded no batches; statistics kept")
        with torch.no_grad():
            for bn, old in zip(bns, saved, strict=True):
                for k, v in old.items():
                    getattr(bn, k).copy_(v)
    return used
