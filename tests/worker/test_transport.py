"""Packing a workload for the object store: tensors' bytes out of band, round trip intact."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prunepilot.worker._transport import pack, unpack


def test_round_trip_keeps_values_sharing_and_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    x = torch.randn(10_000, 3)
    obj = {"model": model, "x": x, "view": x[2:5], "tied": (model[0].weight, model[0].weight)}
    packed = pack(obj)
    # every CPU storage travels as a separate array; x and its view share one
    assert all(isinstance(a, np.ndarray) for a in packed.storages)
    assert sum(a.nbytes for a in packed.storages) >= x.nbytes
    assert len(packed.payload) < 16_384 < x.nbytes  # the pickle holds no tensor bytes
    out = unpack(packed)
    assert torch.equal(out["x"], x) and torch.equal(out["view"], x[2:5])
    assert out["view"].untyped_storage().data_ptr() == out["x"].untyped_storage().data_ptr()
    assert out["tied"][0] is out["tied"][1]
    assert isinstance(out["model"][0].weight, nn.Parameter)
    assert out["model"][0].weight.requires_grad
    assert torch.equal(out["model"](x[:4]), model(x[:4]))


def test_unpacked_tensors_are_writable_copies() -> None:
    x = torch.zeros(1000)
    packed = pack(x)
    for a in packed.storages:  # what Ray hands an actor is read-only shared memory
        a.flags.writeable = False
    y = unpack(packed)
    y.add_(1)  # would fault on a read-only mapping
    assert torch.equal(y, torch.ones(1000)) and torch.equal(x, torch.zeros(1000))
