"""Save and load pruned models without pickling code.

A checkpoint is one safetensors file: the weights, plus metadata naming how to build the
original architecture (``torchvision:resnet50``, ``timm:convnext_tiny`` or an importable
``package.module:factory``) and every tensor's pruned shape.

Loading a file from someone else is safe: the reference and kwargs it names go through the
trust policy of `_resolve` (torchvision, timm and ``prunepilot.demo.models`` by default;
anything else only if the caller passes ``allow=`` or ``factory=``), and no tensor may be
larger than the file holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from ._modules import sync_module_attrs, tensorless_norm
from ._prune import _tensors
from ._resolve import DEFAULT_TRUST, build_source, call_factory, trust_patterns
from .errors import PrunepilotError

__all__ = ["load", "save"]

_FORMAT = "prunepilot/1"


def _source_name(source: str | Callable[..., nn.Module]) -> str:
    if callable(source):
        name = f"{source.__module__}:{source.__qualname__}"
        if "." in source.__qualname__ or source.__qualname__.startswith("_"):
            raise PrunepilotError(
                f"factory {name} is nested or private, so load could not name it; define a "
                "public function or class at the top level of its module"
            )
        return name
    if not isinstance(source, str) or ":" not in source:
        raise PrunepilotError(
            "source must be 'torchvision:NAME', 'timm:NAME', 'package.module:NAME' or a "
            f"factory function; got {source!r}"
        )
    return source


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


def _read(path: Path) -> tuple[dict[str, str], dict[str, list[int]]]:
    """The checkpoint's metadata and the shapes of the tensors the file really holds."""
    if not path.is_file():
        raise PrunepilotError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            held = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error type for foreign files
        raise PrunepilotError(f"{path} is not a safetensors file: {e}") from e
    if meta.get("format") != _FORMAT:
        raise PrunepilotError(f"{path} is not a prunepilot checkpoint (no {_FORMAT} metadata)")
    return meta, held


def _json(meta: Mapping[str, str], key: str, path: Path, default: str | None = None) -> Any:
    raw = meta.get(key, default)
    if raw is None:
        raise PrunepilotError(f"{path} lacks the {key!r} metadata of a {_FORMAT} checkpoint")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise PrunepilotError(f"{path} has unreadable {key!r} metadata: {e}") from e


def _shapes(
    meta: Mapping[str, str], held: dict[str, list[int]], path: Path
) -> dict[str, list[int]]:
    """Metadata shapes, refused where they disagree with the file or exceed what it holds.

    A tensor the file lacks (one of tied tensors) is at most as large as the file's largest.
    """
    shapes = _json(meta, "shapes", path)
    largest = max((math.prod(s) for s in held.values()), default=0)
    if not isinstance(shapes, dict):
        raise PrunepilotError(f"{path} has malformed 'shapes' metadata")
    for name, shape in shapes.items():
        ok = isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
        if not ok or (shape != held[name] if name in held else math.prod(shape) > largest):
            raise PrunepilotError(
                f"{path}: tensor {name!r} has shape {shape!r} in the metadata, which the file's "
                "tensors do not back; the checkpoint is corrupt"
            )
    return shapes


def load(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    allow: str | Iterable[str] = (),
    factory: Callable[..., nn.Module] | None = None,
) -> nn.Module:
    """Rebuild a model saved by `save`: same architecture, pruned shapes and weights.

    Args:
        path: the checkpoint.
        map_location: device of the returned model.
        allow: ``fnmatch`` patterns of factories to trust beyond `DEFAULT_TRUST`
            (torchvision, timm, ``prunepilot.demo.models``), e.g. ``["mypkg.models:*"]``.
        factory: build with this function or class instead of the reference in the file
            (the file's kwargs still apply).

    Raises:
        UntrustedSourceError: the file names a factory nobody trusted (nothing imported).
        PrunepilotError: not a checkpoint, refused kwargs, or tensors that do not fit.
    """
    path = Path(path)
    meta, held = _read(path)
    source = meta.get("source", "")
    kwargs = _json(meta, "kwargs", path)
    if not isinstance(kwargs, dict):
        raise PrunepilotError(f"{path} has malformed 'kwargs' metadata")
    shapes = _shapes(meta, held, path)
    if factory is not None:
        source = getattr(factory, "__qualname__", repr(factory))
        model = call_factory(factory, kwargs)
    else:
        hint = (
            f"if you trust that code, pass allow=[{source!r}] (or a pattern) or "
            "factory=<the function or class> to prunepilot.load"
        )
        allowed = (*DEFAULT_TRUST, *trust_patterns(allow))
        model = build_source(source, kwargs, allow=allowed, how_to_allow=hint)
    found = _tensors(model)
    for name, shape in shapes.items():
        if name not in found:
            raise PrunepilotError(f"{source} has no tensor {name!r}; wrong source?")
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
    sizes = _json(meta, "num_features", path, "{}")  # older files lack it
    if not isinstance(sizes, dict):
        raise PrunepilotError(f"{path} has malformed 'num_features' metadata")
    for name, n in sizes.items():
        try:
            norm = model.get_submodule(name)
        except AttributeError as e:
            raise PrunepilotError(f"{source} has no module {name!r}; wrong source?") from e
        if type(n) is not int or n < 0:
            raise PrunepilotError(f"{path} has a malformed num_features {n!r} for {name!r}")
        object.__setattr__(norm, "num_features", n)
    load_model(model, str(path), strict=True, device=str(map_location))
    return model.to(map_location)
