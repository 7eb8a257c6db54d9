"""`as_inputs` and `call_model`: the one way core (and the search) calls a model on inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from prunepilot.core import TraceError, as_inputs, call_model


class Echo(nn.Module):
    """Returns what it was called with."""

    def forward(self, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs


def test_as_inputs_takes_a_tensor_or_a_sequence() -> None:
    x, y = torch.zeros(1), torch.ones(2)
    assert as_inputs(x) == (x,)
    assert as_inputs((x, y)) == (x, y)
    assert as_inputs([x, y]) == (x, y)


def test_as_inputs_refuses_anything_else_and_says_how_to_pass_it() -> None:
    with pytest.raises(TraceError, match=r"pass \(inputs,\)"):
        as_inputs({"ids": torch.zeros(1)})


def test_call_model_spreads_sequences_and_mappings() -> None:
    x, y = torch.zeros(1), torch.ones(2)
    echo = Echo()
    assert call_model(echo, x) == ((x,), {})
    assert call_model(echo, (x, y)) == ((x, y), {})
    assert call_model(echo, [x, y]) == ((x, y), {})
    assert call_model(echo, {"ids": x}) == ((), {"ids": x})
    assert call_model(echo, 3) == ((3,), {})  # any other object: one positional input
