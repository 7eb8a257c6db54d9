"""Shipping a workload through Ray's object store with its tensors' bytes out of band.

Ray pickles a torch tensor's storage into the object's byte stream, so every actor that
loads the workload copies and re-parses all of it (model weights and the data loaders'
tensors: hundreds of MB for a Fashion-MNIST-sized job). `pack` instead pickles the
workload with each CPU storage replaced by a reference to a NumPy array, which Ray keeps
in shared memory and hands to every actor without a copy; `unpack` copies each array once
into a fresh, writable storage. Storages shared between tensors stay shared.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray import cloudpickle

__all__ = ["Packed", "pack", "unpack"]


@dataclass(frozen=True)
class Packed:
    """A pickled object and the raw bytes of its CPU tensor storages."""

    payload: bytes
    storages: list[np.ndarray]


class _Packer(cloudpickle.CloudPickler):
    """Pickles CPU storages by reference into ``storages``."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.storages: list[np.ndarray] = []
        self._index: dict[tuple[int, int], int] = {}

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, torch.storage.TypedStorage):
            return None
        raw = obj._untyped_storage
        if raw.device.type != "cpu":
            return None
        key = (raw.data_ptr(), raw.nbytes())
        if key not in self._index:
            self._index[key] = len(self.storages)
            self.storages.append(torch.empty(0, dtype=torch.uint8).set_(raw).numpy())
        return (self._index[key], obj.dtype)


class _Unpacker(pickle.Unpickler):
    """Rebuilds each referenced storage once, as a writable copy."""

    def __init__(self, file: io.BytesIO, storages: list[np.ndarray]) -> None:
        super().__init__(file)
        self._arrays = storages
        self._built: dict[int, torch.UntypedStorage] = {}

    def persistent_load(self, pid: Any) -> Any:
        index, dtype = pid
        if index not in self._built:
            copy = np.array(self._arrays[index], copy=True)
            self._built[index] = torch.from_numpy(copy).untyped_storage()
        return torch.storage.TypedStorage(
            wrap_storage=self._built[index], dtype=dtype, _internal=True
        )


def pack(obj: Any) -> Packed:
    """``obj`` pickled, with its CPU tensors' bytes as separate arrays."""
    buf = io.BytesIO()
    packer = _Packer(buf)
    packer.dump(obj)
    return Packed(buf.getvalue(), packer.storages)


def unpack(packed: Packed) -> Any:
    """The object `pack` was given, with tensors in new, writable storages."""
    return _Unpacker(io.BytesIO(packed.payload), packed.storages).load()
