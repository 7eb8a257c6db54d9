"""One way to call a model on example inputs, shared by tracing, calibration and timing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import TraceError

__all__ = ["as_inputs", "call_model"]


def as_inputs(inputs: Any) -> tuple[Any, ...]:
    """The positional inputs of ``model(*inputs)``: what `trace`, `profile` and `prune` take.

    Args:
        inputs: a tensor (one input) or a tuple/list of positional inputs.

    Returns:
        ``(inputs,)`` for a tensor, else ``tuple(inputs)``.

    Raises:
        TraceError: anything else (a model taking one dict or list is given ``(inputs,)``).
    """
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs)
    raise TraceError(
        "example_inputs must be a tensor or a tuple of positional inputs; got "
        f"{type(inputs).__name__} (for a model taking one dict or list, pass (inputs,))"
    )


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on example inputs, as tracing does, plus keyword inputs.

    ``model(x)`` for a tensor, ``model(*inputs)`` for a tuple/list (as `as_inputs`),
    ``model(**inputs)`` for a mapping (keyword inputs, e.g. a tokenizer's output), and
    ``model(inputs)`` for any other object. Autograd and device are the caller's business.
    """
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)
