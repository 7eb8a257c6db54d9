"""Jobs and what the API reports about them: specs, status, trials, artifacts, uploads, errors."""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._budget import Constraints
from ._common import MAX_SEED
from ._search import FinetuneSettings, SearchSettings, SearchSpace, SearchSpec

__all__ = [
    "DATASET_SOURCE_PATTERN",
    "MODEL_SOURCE_PATTERN",
    "UPLOAD_ID_PATTERN",
    "ArtifactInfo",
    "DatasetSpec",
    "ErrorBody",
    "JobInfo",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "ModelSpec",
    "TrialInfo",
    "TrialsPage",
    "UploadInfo",
    "UploadPage",
]

_MODEL_SOURCE = re.compile(
    r"^(torchvision|timm):[A-Za-z0-9][A-Za-z0-9_.\-]*$"
    r"|^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z][A-Za-z0-9_]*$"
)
_UPLOAD_ID = re.compile(r"^[a-z0-9]{8,64}$")
_MAX_SAMPLE_ELEMENTS = 3 * 2048 * 2048  # one sample: a 3-channel 2048x2048 image
_KWARGS_DEPTH = 16


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse builder arguments that would not survive a JSON round trip (NaN, infinity)
    or nest absurdly deep; walked iteratively so depth cannot exhaust the stack."""
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in kwargs.items()]
    while stack:
        where, value, depth = stack.pop()
        if depth > _KWARGS_DEPTH:
            raise ValueError(f"nested deeper than {_KWARGS_DEPTH} levels at {where}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number; got {value}")
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# The sources' and upload ids' JSON Schema patterns, built from what the validators check
# (one closing `$`: JSON Schema patterns are searches).
UPLOAD_ID_PATTERN = _UPLOAD_ID.pattern
_ID = UPLOAD_ID_PATTERN.removeprefix("^").removesuffix("$")
MODEL_SOURCE_PATTERN = rf"^(?:upload:{_ID}|(?!upload:)(?:{_MODEL_SOURCE.pattern}))$"
DATASET_SOURCE_PATTERN = rf"^(?:(?:builtin|dir):[\s\S]+|upload:{_ID})$"


class ModelSpec(_Spec):
    """The model to prune.

    Attributes:
        source: ``torchvision:NAME``, ``timm:NAME`` or an operator-allowlisted factory
            ``package.module:function``; or ``upload:ID`` of a pickled module / ``.pt2``
            file (refused unless the operator enables untrusted models).
        weights: upload id of a safetensors state dict (default: random initialisation).
        kwargs: keyword arguments for the builder (e.g. ``{"num_classes": 10}``).
        input_shape: one sample's input shape without the batch dim, e.g. ``[3, 224, 224]``.
    """

    source: str = Field(
        min_length=3, max_length=200, json_schema_extra={"pattern": MODEL_SOURCE_PATTERN}
    )
    weights: str | None = Field(default=None, json_schema_extra={"pattern": UPLOAD_ID_PATTERN})
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shape: tuple[int, ...] = Field(
        min_length=1,
        max_length=4,
        description=f"dims in [1, 4096], at most {_MAX_SAMPLE_ELEMENTS:,} values in all",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 4096}},
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("upload:"):
            if not _UPLOAD_ID.fullmatch(v.removeprefix("upload:")):
                raise ValueError(f"'upload:' must be followed by an upload id; got {v!r}")
            return v
        if not _MODEL_SOURCE.fullmatch(v):
            raise ValueError(
                "model source must be 'torchvision:NAME', 'timm:NAME', 'package.module:NAME' "
                "(one public function or class defined in that module: no attribute path "
                f"like 'module:a.b', no '_private' name) or 'upload:ID'; got {v!r}"
            )
        return v

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_kwargs(v)
        return v

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 or d > 4096 for d in v):
            raise ValueError(f"input_shape dims must be in [1, 4096]; got {list(v)}")
        if math.prod(v) > _MAX_SAMPLE_ELEMENTS:
            raise ValueError(
                f"input_shape {list(v)} has {math.prod(v):,} values per sample, over "
                f"{_MAX_SAMPLE_ELEMENTS:,}; use smaller inputs"
            )
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str | None) -> str | None:
        if v is not None and not _UPLOAD_ID.fullmatch(v):
            raise ValueError(f"weights must be the id of a safetensors upload; got {v!r}")
        return v


class DatasetSpec(_Spec):
    """The data: where it comes from and how it is prepared.

    Attributes:
        source: ``builtin:digits`` (scikit-learn), ``builtin:fashion-mnist`` (when
            installed), ``upload:ID`` (a safetensors file with ``inputs`` and ``labels``, or
            a zip/tar ImageFolder archive), or ``dir:PATH`` (an ImageFolder directory under
            the operator's data root).
        image_size: resize images to this side (ImageFolder and built-ins).
        channels: convert images to this many channels (1 or 3).
        mean: per-channel normalisation mean (default: none).
        std: per-channel normalisation std.
        val_fraction: share of the samples held out for validation.
        score_fraction: share of the training samples held out to score candidates.
        batch_size: batch size for training, calibration and scoring.
        limit: use at most this many samples (subsampled with ``seed``).
        seed: split and subsampling seed.
    """

    # mean and std come together, std positive (what `_norm` checks), stated for clients
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"mean": {"type": "null"}, "std": {"type": "null"}}},
                {
                    "required": ["mean", "std"],
                    "properties": {
                        "mean": {"type": "array"},
                        "std": {"type": "array", "items": {"exclusiveMinimum": 0}},
                    },
                },
            ]
        }
    )

    source: str = Field(
        min_length=3, max_length=300, json_schema_extra={"pattern": DATASET_SOURCE_PATTERN}
    )
    image_size: int | None = Field(default=None, ge=1, le=4096)
    channels: Literal[1, 3] | None = None
    mean: tuple[float, ...] | None = Field(default=None, max_length=4096)
    std: tuple[float, ...] | None = Field(default=None, max_length=4096)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    score_fraction: float = Field(default=0.1, gt=0, lt=1)
    batch_size: int = Field(default=64, ge=1, le=4096)
    limit: int | None = Field(default=None, ge=10, le=10**9)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        kind, sep, rest = v.partition(":")
        if not sep or kind not in ("builtin", "upload", "dir") or not rest:
            raise ValueError(
                "dataset source must be 'builtin:digits', 'builtin:fashion-mnist', "
                f"'upload:ID' or 'dir:PATH'; got {v!r}"
            )
        if kind == "upload" and not _UPLOAD_ID.fullmatch(rest):
            raise ValueError(f"'upload:' must be followed by an upload id; got {v!r}")
        return v

    @model_validator(mode="after")
    def _norm(self) -> DatasetSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std for normalisation, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class JobSpec(_Spec):
    """What a user submits: model, data, budgets and search settings."""

    name: str | None = Field(default=None, max_length=200)
    model: ModelSpec
    dataset: DatasetSpec
    constraints: Constraints
    space: SearchSpace = SearchSpace()
    search: SearchSettings = SearchSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    workers: int | None = Field(default=None, ge=1, le=64)

    def search_spec(self) -> SearchSpec:
        """The part of the job the search library consumes."""
        return SearchSpec(
            constraints=self.constraints,
            space=self.space,
            search=self.search,
            finetune=self.finetune,
        )


class JobStatus(StrEnum):
    """A job's life: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLING → CANCELLED."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Whether the job will not change any more."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobInfo(BaseModel):
    """A job as the API reports it.

    ``spec`` is ``None`` only for a job whose stored spec no longer parses (written by an
    older server): it shows as FAILED with an error saying so, and can be deleted.
    """

    id: str
    name: str | None = None
    status: JobStatus
    phase: str | None = None
    trials_done: int = 0
    trials_planned: int = 0
    best_score: float | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    spec: JobSpec | None
    result: dict[str, Any] | None = None


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` to get the next."""

    items: list[JobInfo]
    next_cursor: str | None = None


class TrialInfo(BaseModel):
    """One sampled candidate of a job's search (``baseline``: the allocation whose exact
    plan at the budgets it is, for the baselines evaluated besides the searched trials;
    ``rungs``: its held-out score after each successive-halving rung it reached;
    ``steps``: optimizer steps it trained during the search; ``worker``: the evaluator
    that scored it, ``worker-N@NODE`` with the start of its Ray node id; ``error``: a
    failed trial's exception chain, its traceback frames left in the server's study)."""

    number: int
    config: dict[str, float]
    state: str
    macs: int
    params: int
    predicted_ms: float | None = None
    measured_ms: float | None = None
    score: float | None = None
    feasible: bool = False
    reason: str | None = None
    error: str | None = None
    baseline: Literal["uniform", "global", "lamp"] | None = None
    rungs: list[float] = Field(default_factory=list, max_length=8)
    steps: int = 0
    worker: str = Field(default="", max_length=100)


class TrialsPage(BaseModel):
    """Every trial of a job and the trial numbers on its Pareto front."""

    trials: list[TrialInfo]
    pareto: list[int] = Field(default_factory=list)


class ArtifactInfo(BaseModel):
    """A file a finished job produced."""

    name: str
    size: int
    sha256: str
    media_type: str


class UploadInfo(BaseModel):
    """A stored upload that job specs reference as ``upload:ID``.

    Attributes:
        live_jobs: this token's unfinished jobs that use it (it cannot be deleted while
            there are any).
        expires_at: when the server deletes it unless a job uses it by then (``None``:
            a job uses it, or the server keeps uploads for ever).
    """

    id: str
    filename: str
    size: int
    sha256: str
    kind: Literal["safetensors", "archive", "pickle", "pt2", "other"]
    created_at: datetime
    live_jobs: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: what went wrong and what to fix."""

    detail: str


class UploadPage(BaseModel):
    """One page of uploads, newest first; pass ``next_cursor`` to get the next."""

    items: list[UploadInfo]
    next_cursor: str | None = None
