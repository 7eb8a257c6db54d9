"""The demos and the model zoo they prune.

* `prunepilot.demo.models`: the zoo, small model factories that specs name as
  ``prunepilot.demo.models:NAME`` (trusted by default by the service and `prunepilot.load`).
* `run_demo` (``prunepilot demo``): the whole service on one machine, from a trained
  ``digits_cnn`` to a pruned one, through the client.
* `main` (``python -m prunepilot.demo``): the library alone, a ResNet-50 pruned to half its
  MACs.

The demos load on first use, so that resolving a zoo model imports only `models`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .models import DigitsCNN, digits_cnn

if TYPE_CHECKING:
    from ._library import main
    from ._service import run_demo
    from ._timing import latency_ms

__all__ = ["DigitsCNN", "digits_cnn", "latency_ms", "main", "run_demo"]

_LAZY = {"latency_ms": "._timing", "main": "._library", "run_demo": "._service"}


def __getattr__(name: str) -> Any:
    """Import a demo on first use (the service demo loads the client, the library the search)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
