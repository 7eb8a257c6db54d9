"""prunepilot: search per-layer structured pruning ratios under FLOPs and latency budgets."""

from __future__ import annotations

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
