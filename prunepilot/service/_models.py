"""Models a job can name: checked at submit time, built in the job runner.

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

`check` (API process) builds trusted architectures on the ``meta`` device, so it costs no
memory or compute, and runs a forward pass with the dataset's sample shape: a model that
cannot take the data is refused with both shapes in the message. That forward (and the
runner's real one in `check_fit`) also measures the model's `Footprint` for the operator's
limits (`_limits`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.core import (
    ARCHITECTURE_LIBRARIES,
    PrunepilotError,
    UntrustedSourceError,
    build_source,
)
from prunepilot.schemas import ModelSpec

from ._db import UploadRow
from ._errors import Forbidden, ServiceError, SpecError
from ._limits import Footprint, MeasureMemory
from ._settings import Settings

__all__ = ["BuiltModel", "build", "check", "check_fit", "check_output"]

log = logging.getLogger("prunepilot.service")

UploadLookup = Callable[[str], UploadRow | None]
_MAX_LISTED = 5


@dataclass
class BuiltModel:
    """A model ready to prune, and how its checkpoint will be rebuilt.

    Attributes:
        model: the module (CPU, eval mode).
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
        raise SpecError(f"unknown upload id {upload_id!r} in {what}; upload it with POST /uploads")
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
        raise Forbidden(str(e)) from e
    except PrunepilotError as e:
        raise SpecError(str(e)) from e
    except (TypeError, ValueError) as e:
        raise SpecError(f"cannot build {spec.source} with kwargs {spec.kwargs}: {e}") from e


def _weights_shapes(path: Path, upload_id: str) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types
        raise SpecError(
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
        raise SpecError(
            f"weights upload {upload_id} does not fit the model: {'; '.join(problems)}. "
            "Upload the state dict of the same architecture and kwargs"
        )


def _fit_error(spec: ModelSpec, batch: list[int], err: Exception) -> SpecError:
    return SpecError(
        f"model {spec.source} cannot take inputs of shape {batch} (batches of the "
        f"dataset's {batch[1:]} samples): {type(err).__name__}: {err}"
    )


def check_output(spec: ModelSpec, out: Any, num_classes: int | None, batch: list[int]) -> None:
    """Refuse a model whose output is not ``[batch, classes]`` with enough classes."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(
            f"model {spec.source} returns {got} for inputs {batch}; the search needs "
            "class scores of shape [batch, classes]"
        )
    if num_classes is not None and out.shape[1] < num_classes:
        raise SpecError(
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
    """Refuse a model spec that cannot work, without building real weights.

    Returns:
        The model's footprint, or ``None`` when it cannot be built here (uploads, builders
        that fail on ``meta``): the runner measures those.

    Raises:
        SpecError: unknown name or upload, weights that do not fit, inputs that do not fit.
        Forbidden: a factory outside the allowlist, or an untrusted upload without the
            operator's permission.
    """
    if tuple(spec.input_shape) != tuple(sample_shape):
        raise SpecError(
            f"model.input_shape is {list(spec.input_shape)} but the dataset yields samples of "
            f"shape {list(sample_shape)}; make them agree (dataset.channels and "
            "dataset.image_size convert images)"
        )
    if spec.source.startswith("upload:"):
        upload_id = spec.source.removeprefix("upload:")
        row = _upload(uploads, upload_id, "model.source")
        if row.kind not in ("pickle", "pt2"):
            raise SpecError(
                f"upload {upload_id} is a {row.kind} file, not a model: name the architecture "
                "as model.source and pass a safetensors state dict as model.weights"
            )
        if not settings.allow_untrusted_models:
            what = "pickled module" if row.kind == "pickle" else ".pt2 program"
            raise Forbidden(
                f"upload {upload_id} is a {what}"
                ", which runs code when loaded; this server refuses untrusted models (the "
                "operator can enable PRUNEPILOT_ALLOW_UNTRUSTED_MODELS). Upload a safetensors "
                "state dict as model.weights with a torchvision/timm/allowlisted architecture"
            )
        if spec.weights is not None:
            row_w = _upload(uploads, spec.weights, "model.weights")
            if row_w.kind != "safetensors":
                raise SpecError(f"model.weights upload {spec.weights} must be a safetensors file")
        return None
    model: nn.Module | None = None
    try:
        with torch.device("meta"):
            model = _build_named(spec, settings)
    except ServiceError:
        raise
    except Exception as e:  # some builders cannot run on meta; the runner checks for real
        log.info("skipping the submit-time check of %s on meta: %s", spec.source, e)
    weights: dict[str, list[int]] | None = None
    if spec.weights is not None:
        row_w = _upload(uploads, spec.weights, "model.weights")
        if row_w.kind != "safetensors":
            raise SpecError(
                f"model.weights upload {spec.weights} is a {row_w.kind} file; weights must be a "
                "safetensors state dict"
            )
        weights = _weights_shapes(settings.uploads_path / row_w.path, spec.weights)
    if model is None:
        return None
    if weights is not None:
        expected = {k: list(v.shape) for k, v in model.state_dict().items()}
        _match_state(expected, weights, spec.weights or "")
    model.eval()
    measure = MeasureMemory()
    try:
        with torch.no_grad(), measure:
            out = model(torch.empty((2, *sample_shape), device="meta"))
    except Exception as e:  # any failure on the sample shape: report it with the shapes
        raise _fit_error(spec, [2, *sample_shape], e) from e
    check_output(spec, out, num_classes, [2, *sample_shape])
    return measure.footprint(model, 2)


def build(spec: ModelSpec, settings: Settings, uploads: UploadLookup) -> BuiltModel:
    """Build the model for real (job runner only: may unpickle an allowed upload).

    Raises:
        SpecError / Forbidden: as `check`, found while building.
    """
    note = None
    if spec.source.startswith("upload:"):
        upload_id = spec.source.removeprefix("upload:")
        row = _upload(uploads, upload_id, "model.source")
        if not settings.allow_untrusted_models:
            raise Forbidden("this server refuses pickled and .pt2 models")
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
            raise SpecError(
                f"cannot load model upload {upload_id}: {type(e).__name__}: {e}. A pickled "
                "module needs its defining code importable on the workers"
            ) from e
        if not isinstance(loaded, nn.Module):
            raise SpecError(
                f"model upload {upload_id} holds a {type(loaded).__name__}, not an nn.Module"
            )
        model = loaded
        cls = type(model)
        source = f"{cls.__module__}:{cls.__qualname__}"
        note = (
            f"the model came from uploaded {row.kind} {upload_id}: prunepilot.load rebuilds it "
            f"from {source}, which needs the original code importable and trusted "
            f"(prunepilot.load(path, allow=[{source!r}]) or factory=the class; it may not "
            "rebuild a .pt2 graph module at all); the ONNX export does not"
        )
        kwargs: dict[str, Any] = {}
    else:
        model = _build_named(spec, settings)  # the current allowlist, not the submit-time one
        source, kwargs = spec.source, dict(spec.kwargs)
    if spec.weights is not None:
        row_w = _upload(uploads, spec.weights, "model.weights")
        path = settings.uploads_path / row_w.path
        expected = {k: list(v.shape) for k, v in model.state_dict().items()}
        _match_state(expected, _weights_shapes(path, spec.weights), spec.weights)
        from safetensors.torch import load_file

        state = load_file(str(path))
        model.load_state_dict(state, strict=False)
    return BuiltModel(model.to("cpu").eval(), source, kwargs, note)


def check_fit(
    built: BuiltModel, spec: ModelSpec, sample: torch.Tensor, num_classes: int | None
) -> Footprint:
    """Run one real batch through the model (job runner); refuse a misfit with shapes.

    Returns:
        The model's footprint, measured on that batch.
    """
    measure = MeasureMemory()
    try:
        with torch.no_grad(), measure:
            out = built.model(sample)
    except Exception as e:  # any failure on the real batch: report it with the shapes
        raise _fit_error(spec, list(sample.shape), e) from e
    check_output(spec, out, num_classes, list(sample.shape))
    return measure.footprint(built.model, len(sample))
