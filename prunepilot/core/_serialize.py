"""Save and load pruned models without pickling code.

A checkpoint is one safetensors file: the weights, plus metadata naming how to build the
original architecture (``torchvision:resnet50``, ``timm:convnext_tiny`` or an importable
``package.module:factory``) and every tensor's pruned shape.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from ._errors import PrunepilotError
from ._modules import sync_module_attrs, tensorless_norm
from ._prune import _tensors

__all__ = ["build_source", "load", "save"]

_FORMAT = "prunepilot/1"


def _source_name(source: str | Callable[..., nn.Module]) -> str:
    if callable(source):
        return f"{source.__module__}:{source.__qualname__}"
    if not isinstance(source, str) or ":" not in source:
        raise PrunepilotError(
            "source must be 'torchvision:NAME', 'timm:NAME', 'package.module:factory' or a "
            f"factory function; got {source!r}"
        )
    return source


def build_source(source: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a randomly initialised model from a source reference."""
    kind, _, name = source.partition(":")
    kw = dict(kwargs or {})
    if kind == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None, **kw)
        except ValueError as e:
            raise PrunepilotError(f"torchvision has no model {name!r}") from e
    if kind == "timm":
        import timm

        return timm.create_model(name, pretrained=False, **kw)
    try:
        mod = importlib.import_module(kind)
    except ImportError as e:
        raise PrunepilotError(f"cannot import module {kind!r} named by source {source!r}") from e
    obj: Any = mod
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise PrunepilotError(f"{kind!r} has no attribute {name!r}")
    model = obj(**kw)
    if not isinstance(model, nn.Module):
        raise PrunepilotError(f"{source!r} returned {type(model).__name__}, not an nn.Module")
    return model


def save(
    model: nn.Module,
    path: str | Path,
    *,
    source: str | Callable[..., nn.Module],
    kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (pruned or not) to ``path`` as safetensors with its rebuild recipe.

    Args:
        model: the model to save.
        path: destination file.
        source: how to build the original architecture (see module docstring).
        kwargs: keyword arguments for that builder (e.g. ``{"num_classes": 10}``).
    """
    name = _source_name(source)
    shapes = {n: list(t.shape) for n, t in model.state_dict(keep_vars=True).items()}
    # sizes no tensor shape gives back (an instance norm without weights)
    sizes = {n: m.num_features for n, m in model.named_modules() if tensorless_norm(m)}
    meta = {
        "format": _FORMAT,
        "source": name,
        "kwargs": json.dumps(dict(kwargs or {})),
        "shapes": json.dumps(shapes),
        "num_features": json.dumps(sizes),
    }
    path = Path(path)
    save_model(model, str(path), metadata=meta)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save`: same architecture, pruned shapes and weights."""
    path = Path(path)
    if not path.is_file():
        raise PrunepilotError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error type for foreign files
        raise PrunepilotError(f"{path} is not a safetensors file: {e}") from e
    if meta.get("format") != _FORMAT:
        raise PrunepilotError(f"{path} is not a prunepilot checkpoint (no {_FORMAT} metadata)")
    model = build_source(meta["source"], json.loads(meta["kwargs"]))
    shapes: dict[str, list[int]] = json.loads(meta["shapes"])
    found = _tensors(model)
    for name, shape in shapes.items():
        if name not in found:
            raise PrunepilotError(f"{meta['source']} has no tensor {name!r}; wrong source?")
        mod, attr, t, is_param = found[name]
        if list(t.shape) == shape:
            continue
        new = torch.empty(shape, dtype=t.dtype)
        if is_param:
            assert isinstance(t, nn.Parameter)
            t.data = new
        else:
            mod._buffers[attr] = new
    sync_module_attrs(model)
    for name, n in json.loads(meta.get("num_features", "{}")).items():  # older files lack it
        try:
            norm = model.get_submodule(name)
        except AttributeError as e:
            raise PrunepilotError(f"{meta['source']} has no module {name!r}; wrong source?") from e
        object.__setattr__(norm, "num_features", int(n))
    load_model(model, str(path), strict=True, device=str(map_location))
    return model.to(map_location)
