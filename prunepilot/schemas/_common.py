"""What every wire model shares: the frozen base, device names, hard bounds, short reprs."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, WithJsonSchema

__all__ = ["MAX_BATCHES", "MAX_SEED", "MAX_STEPS", "MAX_TRIALS", "DeviceName"]

_DEVICE_PATTERN = r"^(cpu|cuda(:0)?)$"
_INDEXED_CUDA = re.compile(r"^cuda:[0-9]+$")
_MAX_DEVICE_CHARS = 32
# hard bounds: anything beyond is a typo or an attack (the operator's limits are lower)
MAX_SEED = 2**32 - 1  # numpy's RandomState (Optuna's samplers) takes seeds below 2**32
MAX_STEPS = 10**7
MAX_BATCHES = 100_000
MAX_TRIALS = 100_000


class _Frozen(BaseModel):
    """Immutable, no unknown fields, no NaN or infinity: specs are compared and re-parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _short(raw: Any) -> str:
    """``repr`` of a value, cut short (a huge number must not flood the error)."""
    text = repr(raw)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} chars)"


def _device(raw: str) -> str:
    """``cpu`` or ``cuda``: a device type, not a local index (``cuda:0`` is read as ``cuda``).

    An evaluator on Ray holds one GPU, which it sees as ``cuda:0`` whatever the GPU's index
    on its node (Ray sets ``CUDA_VISIBLE_DEVICES``), so ``cuda:1`` names nothing there.
    """
    if raw in ("cpu", "cuda"):
        return raw
    if raw == "cuda:0":
        return "cuda"
    if _INDEXED_CUDA.match(raw):
        raise ValueError(
            f"device {_short(raw)} names a GPU by its index, but each GPU evaluator holds one "
            "GPU and sees it as cuda:0; write 'cuda' (the evaluator's own GPU) or 'cpu'"
        )
    raise ValueError(f"device must be 'cpu' or 'cuda' (the evaluator's own GPU); got {_short(raw)}")


DeviceName = Annotated[
    str,
    StringConstraints(max_length=_MAX_DEVICE_CHARS),
    AfterValidator(_device),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DEVICE_PATTERN,
            "description": "'cpu' or 'cuda' (the evaluator's own GPU; 'cuda:0' means the same)",
        }
    ),
]
