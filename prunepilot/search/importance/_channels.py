"""Map tensor positions of a group member to the group's channels.

A group channel may occupy several positions of a member tensor (a channel flattened into a
linear layer's input, channels repeated by an expand), or none; these helpers turn
per-position values into per-channel values without touching core internals.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from prunepilot.core import Member

__all__ = ["Reduce", "owner", "position_channels", "to_channels"]

Reduce = Literal["sum", "mean", "max"]


def position_channels(member: Member, channels: int) -> np.ndarray:
    """The group channel of every position along ``member.dim`` (-1: not a group channel)."""
    direct = getattr(member, "channel_of_positions", None)  # newer core: one call
    if callable(direct):
        return np.asarray(direct(), dtype=np.int64)
    out = np.full(member.size, -1, dtype=np.int64)
    for c in range(channels):
        idx = member.indices([c])
        if idx:
            out[np.asarray(idx, dtype=np.int64)] = c
    return out


def to_channels(
    values: np.ndarray | torch.Tensor, pos_ch: np.ndarray, channels: int, reduce: Reduce = "sum"
) -> np.ndarray:
    """Reduce per-position ``values`` to one value per group channel.

    Channels without a position in this member get ``nan`` (ignored by the aggregation).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().numpy()
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    if vals.size != pos_ch.size:
        raise ValueError(f"{vals.size} values for a member with {pos_ch.size} positions")
    sel = pos_ch >= 0
    ch, v = pos_ch[sel], vals[sel]
    counts = np.bincount(ch, minlength=channels).astype(np.float64)
    if reduce == "max":
        out = np.full(channels, -np.inf)
        np.maximum.at(out, ch, v)
    else:
        out = np.bincount(ch, weights=v, minlength=channels)
        if reduce == "mean":
            out = out / np.maximum(counts, 1.0)
    out[counts == 0] = np.nan
    return out


def owner(model: nn.Module, tensor_name: str) -> tuple[nn.Module | None, str]:
    """The module holding a parameter/buffer name and the attribute name within it."""
    mod_name, _, attr = tensor_name.rpartition(".")
    try:
        mod = model.get_submodule(mod_name) if mod_name else model
    except AttributeError:
        return None, attr
    return mod, attr
