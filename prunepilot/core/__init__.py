"""Core engine: trace a model, find coupled channel groups, prune for real, count, save/load.

`core` imports nothing from the rest of prunepilot.
"""

from __future__ import annotations

from ._api import PruneReport, profile, prune, trace
from ._errors import PlanError, PrunepilotError, TraceError
from ._graph import ChannelGraph, ChannelGroup, Member
from ._profile import Profile
from ._prune import prune_channels, zero_channels
from ._select import channel_scores, select
from ._serialize import build_source, load, save

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "Member",
    "PlanError",
    "Profile",
    "PruneReport",
    "PrunepilotError",
    "TraceError",
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
