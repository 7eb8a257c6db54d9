"""Core engine: trace a model, find coupled channel groups, prune for real, count, save/load.

`core` imports nothing from the rest of prunepilot.
"""

from __future__ import annotations

from ._api import PruneReport, profile, prune, trace
from ._graph import ChannelGraph, ChannelGroup, Member
from ._inputs import as_inputs, call_model
from ._profile import Profile
from ._prune import prune_channels, zero_channels
from ._resolve import ARCHITECTURE_LIBRARIES, DEFAULT_TRUST, build_source, check_kwargs
from ._select import channel_scores, select
from ._serialize import load, save
from .errors import PlanError, PrunepilotError, TraceError, UntrustedSourceError

__all__ = [
    "ARCHITECTURE_LIBRARIES",
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
    "as_inputs",
    "build_source",
    "call_model",
    "channel_scores",
    "check_kwargs",
    "load",
    "profile",
    "prune",
    "prune_channels",
    "save",
    "select",
    "trace",
    "zero_channels",
]
