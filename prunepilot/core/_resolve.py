"""Turn a model reference into a model: the one resolver, with the one trust policy.

Every path that builds a model from a name (``prunepilot.load``, a job's submit check and
its runner, the SDK and CLI through the service) goes through `build_source`, so a name
from a file or a request can only ever run code somebody chose to trust.

A reference is one of:

* ``torchvision:NAME`` / ``timm:NAME``: an architecture of that library's registry, built
  with random weights (``weights=None`` / ``pretrained=False``);
* ``package.module:NAME``: a function, or an ``nn.Module`` class, *defined* in that module
  under that one public name. No attribute walk (``module:a.b``), no member a module
  imported from elsewhere (``zoo:torch``), no ``_private`` name.

The policy, applied in this order:

1. the reference is well formed (syntax only);
2. it matches one of the caller's ``fnmatch`` patterns: `DEFAULT_TRUST` for
   `prunepilot.load` (plus its ``allow``), `ARCHITECTURE_LIBRARIES` plus the operator's
   allowlist for the service. Only then is its module imported;
3. the object is a function or class defined in that module (``__module__``/``__qualname__``);
4. the builder's kwargs are JSON data (``None``, bools, numbers, strings, lists, dicts) and
   no key, at any depth, names a way to read something from elsewhere: keys containing
   weight, pretrain, checkpoint, path, file, url, dir, cache, hub, ... or ``f`` are
   refused, as are string values that look like a path or URL. Trained weights come from a
   safetensors file, never from a builder.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from .errors import PrunepilotError, UntrustedSourceError

__all__ = [
    "ARCHITECTURE_LIBRARIES",
    "DEFAULT_TRUST",
    "build_source",
    "call_factory",
    "check_kwargs",
    "trust_patterns",
]

ARCHITECTURE_LIBRARIES: tuple[str, ...] = ("torchvision:*", "timm:*")
"""Registry architectures, built with random weights: trusted everywhere."""

DEFAULT_TRUST: tuple[str, ...] = (*ARCHITECTURE_LIBRARIES, "prunepilot.demo.models:*")
"""What `prunepilot.load` trusts without being told (a pattern: core imports no service)."""

_LIBRARIES = ("torchvision", "timm")
_MAX_REFERENCE = 200
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ARCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_MAX_SIMILAR = 5

# kwargs that could make a builder read weights, files, URLs or caches
_FORBIDDEN_KEY_PARTS = (
    "weight", "pretrain", "checkpoint", "ckpt", "path", "file", "url", "dir", "cache",
    "hub", "root", "download", "load", "repo",
)  # fmt: skip
_FORBIDDEN_KEYS = frozenset({"f", "fp", "fd", "fn", "fname", "uri", "src"})
# numbers whose names contain a forbidden part (timm's stochastic depth rate)
_NUMERIC_KEYS = frozenset({"drop_path_rate"})
_MAX_DEPTH = 16
_KWARGS_RULE = (
    "builder kwargs may not name weights, pretrained models, checkpoints, files, paths, "
    "URLs, directories, caches or hubs (models are built with random weights; trained weights "
    "come from a safetensors state dict: model.weights in a job spec)"
)


def trust_patterns(allow: str | Iterable[str]) -> tuple[str, ...]:
    """``allow`` as a tuple of patterns (one string is one pattern, not its characters)."""
    patterns = (allow,) if isinstance(allow, str) else tuple(allow)
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise PrunepilotError(f"trust patterns must be non-empty strings; got {p!r}")
    return patterns


def _parse(source: str) -> tuple[str, str]:
    """Split a reference into (module, name), refusing anything but the two plain forms."""
    if not isinstance(source, str):
        raise PrunepilotError(f"a model reference is a string; got {type(source).__name__}")
    shown = source if len(source) <= _MAX_REFERENCE else source[:_MAX_REFERENCE] + "..."
    module, sep, name = source.partition(":")
    forms = "'torchvision:NAME', 'timm:NAME' or 'package.module:NAME'"
    if not sep or len(source) > _MAX_REFERENCE:
        raise PrunepilotError(f"model reference must be {forms}; got {shown!r}")
    if module in _LIBRARIES:
        if not _ARCH.fullmatch(name):
            raise PrunepilotError(
                f"{module} architecture names are letters, digits, '_', '.' and '-'; "
                f"got {name!r} in {shown!r}"
            )
        return module, name
    if not _MODULE.fullmatch(module):
        raise PrunepilotError(
            f"{module!r} in {shown!r} is not a dotted module name; the reference must be {forms}"
        )
    if not _NAME.fullmatch(name):
        if "." in name:
            why = "one name, not an attribute path: name the module that defines it"
        elif name.startswith("_"):
            why = "a public name (private '_names' are refused)"
        else:
            why = "one plain name (letters, digits, '_')"
        raise PrunepilotError(
            f"after the ':' in {shown!r} comes the function or class defined in {module!r}, "
            f"as {why}; e.g. 'mypkg.models:make_net'"
        )
    return module, name


def _require_allowed(source: str, allow: tuple[str, ...], how_to_allow: str) -> None:
    if not any(fnmatch.fnmatchcase(source, p) for p in allow):
        raise UntrustedSourceError(
            f"model reference {source!r} is not allowed (allowed patterns: "
            f"{', '.join(allow) or '(none)'}); {how_to_allow}"
        )


def _torchvision(name: str) -> Callable[..., Any]:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        close = [n for n in names if n.startswith(name[:4])][:_MAX_SIMILAR]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise PrunepilotError(f"torchvision has no model {name!r}{hint}")
    return functools.partial(torchvision.models.get_model, name, weights=None)


def _timm(name: str) -> Callable[..., Any]:
    try:
        import timm
    except ImportError:
        raise PrunepilotError("timm is not installed here; use a torchvision model") from None
    if not timm.is_model(name):
        raise PrunepilotError(f"timm has no model {name!r}")
    return functools.partial(timm.create_model, name, pretrained=False)


def _factory(module: str, name: str, source: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise PrunepilotError(f"cannot import module {module!r} named by {source!r}: {e}") from e
    obj = vars(mod).get(name)  # the module's own namespace: no __getattr__ hooks
    if obj is None:
        raise PrunepilotError(f"module {module!r} defines no {name!r} (named by {source!r})")
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise PrunepilotError(
            f"{source!r} is a {type(obj).__name__}, not a function or class; name a model "
            "factory function or nn.Module class"
        )
    if obj.__module__ != module or obj.__qualname__ != name:
        raise PrunepilotError(
            f"{source!r} is {obj.__module__}:{obj.__qualname__}, defined elsewhere; name a "
            "function or class where it is defined, at the top level of its module"
        )
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise PrunepilotError(f"{source!r} is a class but not an nn.Module")
    return obj


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise PrunepilotError(f"{where} nests deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if "/" in value or "\\" in value or value.startswith("~"):
            raise PrunepilotError(
                f"{where} = {value[:80]!r} looks like a path or URL; {_KWARGS_RULE}"
            )
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PrunepilotError(f"{where} has a non-string key {key!r}")
            low = key.lower()
            numeric = isinstance(item, (int, float)) and not isinstance(item, bool)
            if not (key in _NUMERIC_KEYS and numeric) and (
                low in _FORBIDDEN_KEYS or any(p in low for p in _FORBIDDEN_KEY_PARTS)
            ):
                raise PrunepilotError(f"{where}.{key} is refused: {_KWARGS_RULE}")
            _check_value(item, f"{where}.{key}", depth + 1)
        return
    raise PrunepilotError(
        f"{where} is a {type(value).__name__}; builder kwargs are JSON data only (null, "
        "booleans, numbers, strings, lists and objects)"
    )


def check_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Builder kwargs as a dict, refused if they are not JSON data or could load anything.

    Raises:
        PrunepilotError: naming the offending key and the rule.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise PrunepilotError(f"kwargs must be a mapping; got {type(kwargs).__name__}")
    _check_value(kwargs, "kwargs", 0)
    return dict(kwargs)


def call_factory(
    factory: Callable[..., Any], kwargs: Mapping[str, Any] | None, label: str | None = None
) -> nn.Module:
    """Call a factory the caller chose, with checked kwargs; the result must be a module.

    Args:
        factory: the function or class to call.
        kwargs: its keyword arguments (checked by `check_kwargs`).
        label: how errors name the factory (default: its qualified name).
    """
    if not callable(factory):
        raise PrunepilotError(f"factory must be callable; got {type(factory).__name__}")
    model = factory(**check_kwargs(kwargs))
    if not isinstance(model, nn.Module):
        what = label or getattr(factory, "__qualname__", repr(factory))
        raise PrunepilotError(f"{what} returned {type(model).__name__}, not an nn.Module")
    return model


def build_source(
    source: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    allow: str | Iterable[str] = DEFAULT_TRUST,
    how_to_allow: str = "pass it in allow=[...] if you trust that code",
) -> nn.Module:
    """Build a randomly initialised model from a reference, if the trust policy allows it.

    Args:
        source: ``torchvision:NAME``, ``timm:NAME`` or ``package.module:NAME``.
        kwargs: the builder's keyword arguments (checked by `check_kwargs`).
        allow: ``fnmatch`` patterns of trusted references (default `DEFAULT_TRUST`).
        how_to_allow: what the refusal tells the reader to do to trust ``source``.

    Raises:
        UntrustedSourceError: no pattern matches (nothing was imported).
        PrunepilotError: a malformed reference, an unknown name, an object that is not a
            factory defined where named, refused kwargs, or a result that is no module.
    """
    module, name = _parse(source)
    _require_allowed(source, trust_patterns(allow), how_to_allow)
    kw = check_kwargs(kwargs)
    if module == "torchvision":
        builder = _torchvision(name)
    elif module == "timm":
        builder = _timm(name)
    else:
        builder = _factory(module, name, source)
    return call_factory(builder, kw, source)
