"""Reading job specs from YAML/JSON files or mappings, validated before they are sent.

A spec file may name local files with ``file:PATH`` (relative to the spec file) in
``model.weights``, ``model.source`` and ``dataset.source``; `local_files` finds them so the
client can upload them and substitute ``upload:ID`` before submitting.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from prunepilot.schemas import JobSpec

from .errors import SpecError

__all__ = [
    "FILE_PREFIX",
    "format_validation_error",
    "load_spec",
    "local_files",
    "read_spec",
    "validate",
    "with_uploads",
]

FILE_PREFIX = "file:"

# (section, key, whether the value becomes "upload:ID" or the bare ID)
_FILE_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("model", "weights", False),
    ("model", "source", True),
    ("dataset", "source", True),
)


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, ``location: message``, for people rather than programs."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(spec)"
        lines.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(lines)


def read_spec(source: JobSpec | Mapping[str, Any] | str | Path) -> tuple[dict[str, Any], Path]:
    """The raw spec as a dict and the directory relative ``file:`` paths start from.

    Args:
        source: a `JobSpec`, a mapping, or the path of a ``.yaml``/``.yml``/``.json`` file.

    Raises:
        SpecError: the file is missing or is not a YAML/JSON mapping.
    """
    if isinstance(source, JobSpec):
        return source.model_dump(mode="json", exclude_none=True), Path.cwd()
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), Path.cwd()
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"no spec file at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SpecError(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {e}") from e
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must hold a mapping (model, dataset, constraints, ...)")
    return raw, path.resolve().parent


def local_files(raw: Mapping[str, Any], base: Path) -> dict[tuple[str, str], Path]:
    """The ``file:PATH`` references of a raw spec, resolved against ``base``.

    Raises:
        SpecError: a referenced file does not exist.
    """
    found: dict[tuple[str, str], Path] = {}
    for section, key, _ in _FILE_FIELDS:
        part = raw.get(section)
        value = part.get(key) if isinstance(part, Mapping) else None
        if isinstance(value, str) and value.startswith(FILE_PREFIX):
            path = Path(value.removeprefix(FILE_PREFIX)).expanduser()
            if not path.is_absolute():
                path = base / path
            if not path.is_file():
                raise SpecError(f"{section}.{key} names {value!r}, but {path} is not a file")
            found[(section, key)] = path
    return found


def with_uploads(raw: Mapping[str, Any], ids: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``file:`` reference replaced by its upload id."""
    out = copy.deepcopy(dict(raw))
    for section, key, prefixed in _FILE_FIELDS:
        if (section, key) in ids:
            upload_id = ids[(section, key)]
            out[section] = {**out[section], key: f"upload:{upload_id}" if prefixed else upload_id}
    return out


def load_spec(source: JobSpec | Mapping[str, Any] | str | Path) -> JobSpec:
    """A validated `JobSpec` from a spec object, mapping or YAML/JSON file.

    ``file:`` references are not allowed here (they need an upload first; `Client.submit`
    handles them).

    Raises:
        SpecError: the spec cannot be read or does not validate; the message lists every
            problem with its location.
    """
    if isinstance(source, JobSpec):
        return source
    raw, base = read_spec(source)
    refs = local_files(raw, base)
    if refs:
        names = ", ".join(f"{s}.{k}" for s, k in refs)
        raise SpecError(f"{names} name local files; submit the spec with Client.submit")
    return validate(raw)


def validate(raw: Mapping[str, Any]) -> JobSpec:
    """`JobSpec.model_validate` with a readable `SpecError` on failure."""
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"invalid job spec: {format_validation_error(e)}") from e
