"""prunepilot: search per-layer structured pruning ratios under FLOPs and latency budgets.

The names below come from `prunepilot.core` and load on first use, so that
``import prunepilot.client`` (or `prunepilot.schemas`) never loads torch.

Packages, each importing only those listed after it: `prunepilot.service` (the HTTP API,
job store and scheduler), `prunepilot.worker` (Ray evaluators), `prunepilot.search` (criteria,
strategies, the search engine), `prunepilot.core` (trace and prune). `prunepilot.schemas`
(the wire models) is a leaf any of them may import; `prunepilot.client` needs only it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import (
        DEFAULT_TRUST,
        ChannelGraph,
        ChannelGroup,
        Member,
        PlanError,
        Profile,
        PrunepilotError,
        PruneReport,
        TraceError,
        UntrustedSourceError,
        build_source,
        channel_scores,
        load,
        profile,
        prune,
        prune_channels,
        save,
        select,
        trace,
        zero_channels,
    )

__all__ = [
    "DEFAULT_TRUST",
    "ChannelGraph",
    "ChannelGroup",
    "Member",
    "PlanError",
    "Profile",
    "PruneReport",
    "PrunepilotError",
    "TraceError",
    "UntrustedSourceError",
    "build_source",
    "channel_scores",
    "load",
    "profile",
    "prune",
    "prune_channels",
    "save",
    "select",
    "trace",
    "zero_channels",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Load `prunepilot.core` on the first use of one of its names (it imports torch)."""
    if name in __all__:
        value = getattr(importlib.import_module(".core", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
