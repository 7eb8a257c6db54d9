"""Feeding a model: loader batches, devices, and calling a model on its inputs.

Calibration, fine-tuning, BatchNorm recalibration and latency timing all call a model the
same way, through core's `prunepilot.core.call_model` (re-exported here): a tensor is one
positional input, a tuple or list several (the convention of `prunepilot.core.trace`), a
mapping keyword inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from prunepilot.core import call_model

from .errors import CalibrationError

__all__ = ["TensorBatches", "call_model", "model_device", "split_batch", "to_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU if it has none)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors (possibly nested in tuples/lists/dicts) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` from a loader batch (a pair or a longer sequence)."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise CalibrationError(
        f"loader batches must be (inputs, targets) pairs; got {type(batch).__name__}"
    )


class TensorBatches:
    """A re-iterable loader of ``(inputs, labels)`` batches over in-memory tensors.

    It lives here, not in the service that makes it, because it travels inside a workload
    to Ray workers: unpickling it there must import nothing above the search.

    Args:
        x: inputs, samples along dim 0.
        y: integer labels.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: a new order on every pass (seeded, so runs repeat).
        seed: the shuffling seed.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self._epoch = 0

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self._epoch)
            self._epoch += 1
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]
