"""Model sources a job can name, resolved by one function on the meta device or for real.

* ``torchvision:NAME`` / ``timm:NAME``: architectures by name (unknown names are refused
  with a hint); random initialisation unless ``weights`` names an uploaded safetensors
  state dict, whose keys and shapes must match exactly.
* ``package.module:NAME``: a function or class defined in that module, matching the
  operator's allowlist (``fnmatch``). Names go through core's one resolver
  (`prunepilot.core.build_source`): no attribute paths, imported members or private names,
  no kwargs that could load a file or weights; checked again by the runner against the
  settings it runs with, so a queued job is refused if the allowlist was narrowed.
* ``upload:ID``: a pickled module or a ``.pt2`` program. Loading either runs code from the
  file, so it is refused unless the operator sets ``allow_untrusted_models``, and even
  then it is loaded only by the job runner on a Ray worker, never in the API process.

`resolve` is the one resolver, so the submit-time check and the run-time build cannot
drift: with ``meta=True`` (API process, via `check`) it builds trusted architectures on the
``meta`` device, costing no memory or compute, and never loads an upload; with
``meta=False`` (job runner) it builds and loads for real. `check_fit` runs a forward pass
(meta at submit, one real batch in the runner): a model that cannot take the data is refused
with both shapes in the message, and the pass measures the model's `Footprint` for the
operator's limits (`_limits`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import nn

from prunepilot.core import (
    ARCHITECTURE_LIBRARIES,
    PrunepilotError,
    UntrustedSourceError,
    build_source,
)
from prunepilot.schemas import ModelSpec

from ._limits import Footprint, MeasureMemory
from ._rows import UploadRow
from ._settings import Settings
from .errors import ForbiddenError, InvalidSpecError, ServiceError

__all__ = ["BuiltModel", "check", "check_fit", "check_output", "resolve"]

log = logging.getLogger("prunepilot.service")

UploadLookup = Callable[[str], UploadRow | None]
_MAX_LISTED = 5


@dataclass
class BuiltModel:
    """A model ready to prune, and how its checkpoint will be rebuilt.

    Attributes:
        model: the module (eval mode; CPU, or ``meta`` when resolved for the submit check).
        source: the architecture reference written into the checkpoint.
        kwargs: the builder's keyword arguments.
        note: a caveat for the report (e.g. a pickled model needs its original code).
    """

    model: nn.Module
    source: str
    kwargs: dict[str, Any]
    note: str | None = None


def _upload(uploads: UploadLookup, upload_id: str, what: str) -> UploadRow:
    row = uploads(upload_id)
    if row is None:
        raise InvalidSpecError(
            f"unknown upload id {upload_id!r} in {what}; upload it with POST /uploads"
        )
    return row


_HOW_TO_ALLOW = (
    "the operator allows factories with PRUNEPILOT_MODEL_ALLOWLIST (or prunepilot serve "
    "--allow PATTERN); torchvision:NAME and timm:NAME architectures are always allowed"
)


def _build_named(spec: ModelSpec, settings: Settings) -> nn.Module:
    """Build a named architecture through core's resolver, under the operator's policy."""
    try:
        return build_source(
            spec.source,
            spec.kwargs,
            allow=(*ARCHITECTURE_LIBRARIES, *settings.model_allowlist),
            how_to_allow=_HOW_TO_ALLOW,
        )
    except UntrustedSourceError as e:
        raise ForbiddenError(str(e)) from e
    except PrunepilotError as e:
        raise InvalidSpecError(str(e)) from e
    except (TypeError, ValueError) as e:
        raise InvalidSpecError(f"cannot build {spec.source} with kwargs {spec.kwargs}: {e}") from e


def _weights_shapes(path: Path, upload_id: str) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types
        raise InvalidSpecError(
            f"weights upload {upload_id} is not a readable safetensors file: {e}"
        ) from e


def _match_state(
    expected: dict[str, list[int]], given: dict[str, list[int]], upload_id: str
) -> None:
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    wrong = [
        f"{k} {given[k]} != {expected[k]}"
        for k in expected
        if k in given and given[k] != expected[k]
    ]
    problems = []
    if missing:
        problems.append(
            f"missing keys {missing[:_MAX_LISTED]}" + (" ..." if len(missing) > _MAX_LISTED else "")
        )
    if unexpected:
        problems.append(
            f"unexpected keys {unexpected[:_MAX_LISTED]}"
            + (" ..." if len(unexpected) > _MAX_LISTED else "")
        )
    if wrong:
        problems.append(
            f"shape mismatches {wrong[:_MAX_LISTED]}" + (" ..." if len(wrong) > _MAX_LISTED else "")
        )
    if problems:
        raise InvalidSpecError(
            f"weights upload {upload_id} does not fit the model: {'; '.join(problems)}. "
            "Upload the state dict of the same architecture and kwargs"
        )


def _fit_error(spec: ModelSpec, batch: list[int], err: Exception) -> InvalidSpecError:
    return InvalidSpecError(
        f"model {spec.source} cannot take inputs of shape {batch} (batches of the "
        f"dataset's {batch[1:]} samples): {type(err).__name__}: {err}"
    )


def check_output(spec: ModelSpec, out: Any, num_classes: int | None, batch: list[int]) -> None:
    """Refuse a model whose output is not ``[batch, classes]`` with enough classes."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidSpecError(
            f"model {spec.source} returns {got} for inputs {batch}; the search needs "
            "class scores of shape [batch, classes]"
        )
    if num_classes is not None and out.shape[1] < num_classes:
        raise InvalidSpecError(
            f"model {spec.source} outputs {out.shape[1]} classes but the dataset has "
            f"{num_classes}; set model.kwargs.num_classes={num_classes}"
        )


def check(
    spec: ModelSpec,
    settings: Settings,
    uploads: UploadLookup,
    sample_shape: tuple[int, ...],
    num_classes: int | None,
) -> Footprint | None:
    """Refuse a model spec that cannot work, without building real weights (submit time).

    Returns:
        The model's footprint, or ``None`` when it cannot be built here (uploads, builders
        that fail on ``meta``): the runner measures those.

    Raises:
        InvalidSpecError: unknown name or upload, weights that do not fit, inputs that do
            not fit.
        ForbiddenError: a factory outside the allowlist, or an untrusted upload without the
            operator's permission.
    """
    if tuple(spec.input_shape) != tuple(sample_shape):
        raise InvalidSpecError(
            f"model.input_shape is {list(spec.input_shape)} but the dataset yields samples of "
            f"shape {list(sample_shape)}; make them agree (dataset.channels and "
            "dataset.image_size convert images)"
        )
    built = resolve(spec, settings, uploads, meta=True)
    if built is None:
        return None
    return check_fit(built, spec, torch.empty((2, *sample_shape), device="meta"), num_classes)


def _model_upload(spec: ModelSpec, settings: Settings, uploads: UploadLookup) -> UploadRow:
    """The upload ``upload:ID`` names, if it is a model this server may load."""
    upload_id = spec.source.removeprefix("upload:")
    row = _upload(uploads, upload_id, "model.source")
    if row.kind not in ("pickle", "pt2"):
        raise InvalidSpecError(
            f"upload {upload_id} is a {row.kind} file, not a model: name the architecture "
            "as model.source and pass a safetensors state dict as model.weights"
        )
    if not settings.allow_untrusted_models:
        what = "pickled module" if row.kind == "pickle" else ".pt2 program"
        raise ForbiddenError(
            f"upload {upload_id} is a {what}"
            ", which runs code when loaded; this server refuses untrusted models (the "
            "operator can enable PRUNEPILOT_ALLOW_UNTRUSTED_MODELS). Upload a safetensors "
            "state dict as model.weights with a torchvision/timm/allowlisted architecture"
        )
    return row


def _load_upload(row: UploadRow, settings: Settings) -> tuple[nn.Module, str, str]:
    """Unpickle or load an allowed model upload: ``(module, its class reference, note)``."""
    path = settings.uploads_path / row.path
    try:
        if row.kind == "pt2":
            with path.open("rb") as f:  # stored without the .pt2 suffix load() wants
                exported = torch.export.load(f).module()
            # a plain GraphModule: the exported one refuses train() / eval()
            loaded: Any = torch.fx.GraphModule(exported, exported.graph)
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # unpickling fails in many ways (missing classes, ...)
        raise InvalidSpecError(
            f"cannot load model upload {row.id}: {type(e).__name__}: {e}. A pickled "
            "module needs its defining code importable on the workers"
        ) from e
    if not isinstance(loaded, nn.Module):
        raise InvalidSpecError(
            f"model upload {row.id} holds a {type(loaded).__name__}, not an nn.Module"
        )
    cls = type(loaded)
    source = f"{cls.__module__}:{cls.__qualname__}"
    note = (
        f"the model came from uploaded {row.kind} {row.id}: prunepilot.load rebuilds it "
        f"from {source}, which needs the original code importable and trusted "
        f"(prunepilot.load(path, allow=[{source!r}]) or factory=the class; it may not "
        "rebuild a .pt2 graph module at all); the ONNX export does not"
    )
    return loaded, source, note


@overload
def resolve(
    spec: ModelSpec, settings: Settings, uploads: UploadLookup, *, meta: Literal[False]
) -> BuiltModel: ...


@overload
def resolve(
    spec: ModelSpec, settings: Settings, uploads: UploadLookup, *, meta: bool
) -> BuiltModel | None: ...


def resolve(
    spec: ModelSpec, settings: Settings, uploads: UploadLookup, *, meta: bool
) -> BuiltModel | None:
    """The model a spec names, under the operator's current policy.

    Args:
        spec: the job's model section.
        settings: the settings in force (the runner's, so a narrowed allowlist applies to
            queued jobs).
        uploads: upload id -> row of the job's owner.
        meta: build on the ``meta`` device without loading any file (submit time);
            ``False``: build, unpickle an allowed upload and load weights for real (job
            runner only).

    Returns:
        The model; with ``meta``, ``None`` where it cannot be built without running the
        upload's code or the builder fails on ``meta`` (the runner checks those for real).

    Raises:
        InvalidSpecError: unknown name or upload, an upload of the wrong kind, weights that
            do not fit.
        ForbiddenError: a factory outside the allowlist, or an untrusted upload without the
            operator's permission.
    """
    model: nn.Module | None = None
    note = None
    if spec.source.startswith("upload:"):
        row = _model_upload(spec, settings, uploads)
        if meta:  # loading it runs its code: only a job runner does that
            if spec.weights is not None:
                _weights_upload(spec.weights, uploads)
            return None
        model, source, note = _load_upload(row, settings)
        kwargs: dict[str, Any] = {}
    else:
        source, kwargs = spec.source, dict(spec.kwargs)
        if not meta:
            model = _build_named(spec, settings)
        else:
            try:
                with torch.device("meta"):
                    model = _build_named(spec, settings)
            except ServiceError:
                raise
            except Exception as e:  # some builders cannot run on meta; the runner checks
                log.info("skipping the submit-time check of %s on meta: %s", spec.source, e)
    if spec.weights is not None:
        path = settings.uploads_path / _weights_upload(spec.weights, uploads).path
        shapes = _weights_shapes(path, spec.weights)
        if model is None:
            return None
        expected = {k: list(v.shape) for k, v in model.state_dict().items()}
        _match_state(expected, shapes, spec.weights)
        if not meta:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(path)), strict=False)
    if model is None:
        return None
    return BuiltModel((model if meta else model.to("cpu")).eval(), source, kwargs, note)


def _weights_upload(upload_id: str, uploads: UploadLookup) -> UploadRow:
    """The ``model.weights`` upload, if it is a safetensors file."""
    row = _upload(uploads, upload_id, "model.weights")
    if row.kind != "safetensors":
        raise InvalidSpecError(
            f"model.weights upload {upload_id} is a {row.kind} file; weights must be a "
            "safetensors state dict"
        )
    return row


def check_fit(
    built: BuiltModel, spec: ModelSpec, sample: torch.Tensor, num_classes: int | None
) -> Footprint:
    """Run one batch through the model (meta at submit, real in the runner); refuse a misfit
    with both shapes.

    Returns:
        The model's footprint, measured on that batch.
    """
    measure = MeasureMemory()
    try:
        with torch.no_grad(), measure:
            out = built.model(sample)
    except Exception as e:  # any failure on the batch: report it with the shapes
        raise _fit_error(spec, list(sample.shape), e) from e
    check_output(spec, out, num_classes, list(sample.shape))
    return measure.footprint(built.model, len(sample))
