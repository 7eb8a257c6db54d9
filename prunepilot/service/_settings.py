"""The operator's configuration: one pydantic model, from keyword arguments or ``PRUNEPILOT_*``.

Every field can be set by an environment variable named ``PRUNEPILOT_`` + the field name in
capitals (``PRUNEPILOT_DATA_DIR``, ``PRUNEPILOT_TOKENS``, ...). Derived locations (database,
artifacts, uploads) default to paths inside ``data_dir`` so a bare ``prunepilot serve``
works with no set-up: a SQLite file in WAL mode, local Ray, a generated local token.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

__all__ = ["Settings"]

log = logging.getLogger("prunepilot.service")

_ENV_PREFIX = "PRUNEPILOT_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _default_data_dir() -> Path:
    home = Path.home()
    if os.access(home, os.W_OK):
        return home / ".prunepilot"
    return Path.cwd() / ".prunepilot"


class Settings(BaseModel):
    """How the service runs; every field has a working default.

    Attributes:
        data_dir: root of the service's state (database, uploads, artifacts, job files).
        database_url: SQLAlchemy URL of the job store and the Optuna studies (default: a
            SQLite file in ``data_dir``, WAL mode); ``postgresql+psycopg://...`` for a
            shared database.
        artifact_dir: where jobs' checkpoints, ONNX files and reports go.
        upload_dir: where uploads are stored.
        data_root: the only directory ``dir:PATH`` datasets may name (unset: refused).
        auth: require a bearer token (``False`` only for an embedded single-user demo:
            every request then acts as the owner ``local``).
        tokens: bearer token -> owner name. Empty with ``auth``: one local token, created
            in ``data_dir/token`` (see `local_token`).
        model_allowlist: ``fnmatch`` patterns of ``package.module:NAME`` factories jobs
            may name (NAME: one public function or class defined in that module, see
            `prunepilot.core.build_source`); torchvision and timm architectures are always
            allowed. Checked at submit and again by the runner.
        allow_untrusted_models: accept pickled modules and ``.pt2`` uploads as models
            (they run code when loaded; they are only loaded in job runners, on Ray).
        max_upload_bytes: largest accepted upload (413 above).
        max_jobs_per_token: unfinished jobs one token may have (429 above).
        concurrent_jobs: jobs running at once on the Ray cluster.
        ray_address: a Ray cluster to use (unset: a local Ray started on demand).
        ray_num_cpus: logical CPUs of the local Ray (unset: the machine's).
        ray_auth_mode: Ray's token authentication (``RAY_AUTH_MODE``) for this server's
            connection: ``token`` for a cluster started with ``RAY_AUTH_MODE=token``,
            ``disabled``, or unset (Ray's own environment and defaults decide).
        ray_auth_token_file: a file holding the cluster's Ray token (given to Ray as
            ``RAY_AUTH_TOKEN_PATH``; implies ``ray_auth_mode=token``). The token itself
            never enters the settings, logs, job records or task arguments.
        workers_per_job: evaluator actors per job when the spec does not say.
        max_workers_per_job: the most a spec may ask for.
        worker_device: ``auto`` (GPUs when the cluster has them), ``cpu`` or ``cuda``.
        worker_threads: torch CPU threads per evaluator (and per job runner).
        worker_niceness: niceness of the evaluators (0: normal priority; Ray's own
            default is 15, which starves them on a shared machine). A local Ray runs its
            workers (evaluators and job runners) at it; on a cluster (``ray_address``)
            each evaluator lowers its niceness to it where permitted (root or
            ``CAP_SYS_NICE``) and warns in the job's log otherwise: start the cluster
            with ``RAY_worker_niceness=0``.
        worker_lost_timeout_s: how long a job waits with none of its evaluators alive (all
            lost with their nodes, replacements not placed) before it fails with that
            reason.
        scheduler: run queued jobs from this process (``False`` for an API-only replica).
        poll_interval_s: how often the scheduler looks for work and event streams poll.
        cancel_grace_s: after this long a cancelled job's runner is killed outright.
        archive_max_files: most files an ImageFolder archive may hold.
        archive_max_bytes: most bytes an archive may expand to.
        max_image_pixels: most pixels (width x height) a dataset image may have; larger
            ones are refused before they are decoded (decompression bombs).
        onnx_export: export an ONNX file next to each pruned checkpoint.
        upload_quota_bytes: most bytes one token's uploads may hold together (413 above).
        upload_quota_count: most uploads one token may keep (429 above).
        upload_ttl_s: an upload no job references is deleted this long after it was
            made (0: never). The scheduling process does it, at start and every
            ``upload_expiry_interval_s``; API-only replicas rely on it.
        upload_expiry_interval_s: how often the scheduler looks for expired uploads.
        max_trials: most ``search.trials`` a job may ask for.
        max_finetune_steps: most ``finetune.steps`` (and ``search.score_steps``) a job may ask for.
        max_model_params: most parameters a job's model may have.
        max_job_memory_bytes: most memory a job's model may need in one evaluator, as
            estimated at submit (weights, gradients, optimizer state, one batch of
            activations; see `prunepilot.service._limits`).
        max_image_size: largest ``dataset.image_size`` a job may resize images to.
        max_job_seconds: wall-clock limit of one running job (queued time not counted);
            past it the job is FAILED and its runner stopped.
        max_event_streams_per_token: event streams (``GET /jobs/{id}/events``) one token
            may hold open at once in this process (429 above).
    """

    # inputs stay out of validation errors: tokens and database URLs are secrets
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    artifact_dir: Path | None = None
    upload_dir: Path | None = None
    data_root: Path | None = None
    auth: bool = True
    tokens: dict[str, str] = Field(default_factory=dict)
    model_allowlist: tuple[str, ...] = ("prunepilot.demo.models:*",)
    allow_untrusted_models: bool = False
    max_upload_bytes: int = Field(default=1 << 30, ge=1)
    max_jobs_per_token: int = Field(default=10, ge=1)
    concurrent_jobs: int = Field(default=1, ge=1)
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(default=None, ge=1)
    ray_auth_mode: Literal["token", "disabled"] | None = None
    ray_auth_token_file: Path | None = None
    workers_per_job: int = Field(default=2, ge=1)
    max_workers_per_job: int = Field(default=16, ge=1)
    worker_device: Literal["auto", "cpu", "cuda"] = "auto"
    worker_threads: int = Field(default=1, ge=1)
    worker_niceness: int = Field(default=0, ge=0, le=19)
    worker_lost_timeout_s: float = Field(default=300.0, gt=0, le=7 * 24 * 3600.0)
    scheduler: bool = True
    poll_interval_s: float = Field(default=0.5, gt=0)
    cancel_grace_s: float = Field(default=5.0, ge=0)
    archive_max_files: int = Field(default=100_000, ge=1)
    archive_max_bytes: int = Field(default=4 << 30, ge=1)
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    onnx_export: bool = True
    upload_quota_bytes: int = Field(default=10 << 30, ge=1)
    upload_quota_count: int = Field(default=100, ge=1)
    upload_ttl_s: float = Field(default=7 * 24 * 3600.0, ge=0, le=100 * 365 * 24 * 3600.0)
    upload_expiry_interval_s: float = Field(default=300.0, gt=0)
    max_trials: int = Field(default=1000, ge=1)
    max_finetune_steps: int = Field(default=10_000, ge=0)
    max_model_params: int = Field(default=150_000_000, ge=1)
    max_job_memory_bytes: int = Field(default=16 << 30, ge=1)
    max_image_size: int = Field(default=1024, ge=1)
    max_job_seconds: float = Field(default=86_400.0, gt=0)
    max_event_streams_per_token: int = Field(default=8, ge=1)

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: dict[str, str]) -> dict[str, str]:
        # messages name owners, never a token or part of one
        for token, owner in v.items():
            if not owner:
                raise ValueError("every token needs an owner name (TOKEN=OWNER)")
            if len(token) < 8:
                raise ValueError(f"the token of {owner!r} has fewer than 8 characters")
        return v

    @field_validator("ray_auth_token_file")
    @classmethod
    def _ray_token_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and info.data.get("ray_auth_mode") == "disabled":
            raise ValueError("a token file needs ray_auth_mode 'token' (or unset), not 'disabled'")
        return v

    # ------------------------------------------------------------------ derived paths

    @property
    def db_url(self) -> str:
        """The database URL (default: ``sqlite:///DATA_DIR/prunepilot.db``)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.expanduser().resolve() / 'prunepilot.db'}"

    @property
    def artifacts_path(self) -> Path:
        """Directory of job artifacts, one sub-directory per job."""
        return (self.artifact_dir or self.data_dir / "artifacts").expanduser()

    @property
    def uploads_path(self) -> Path:
        """Directory of stored uploads."""
        return (self.upload_dir or self.data_dir / "uploads").expanduser()

    @property
    def jobs_path(self) -> Path:
        """Scratch directory of job runners (extracted archives), one per job."""
        return self.data_dir.expanduser() / "jobs"

    def ensure_dirs(self) -> None:
        """Create the data, artifact, upload and job directories."""
        for p in (self.data_dir.expanduser(), self.artifacts_path, self.uploads_path):
            p.mkdir(parents=True, exist_ok=True)
        self.jobs_path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ tokens

    def local_token(self) -> str:
        """The generated single-user token (``data_dir/token``), created on first use."""
        path = self.data_dir.expanduser() / "token"
        if path.is_file():
            token = path.read_text().strip()
            if token:
                return token
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.info("created a local API token in %s", path)
        return token

    def token_owners(self) -> dict[str, str]:
        """Token -> owner, with the generated local token when none are configured."""
        if self.tokens:
            return dict(self.tokens)
        return {self.local_token(): "local"}

    # ------------------------------------------------------------------ environment

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PRUNEPILOT_*`` variables, then ``overrides`` (e.g. CLI flags).

        ``PRUNEPILOT_TOKENS`` is ``token=owner,token2=owner2`` or a JSON object;
        ``PRUNEPILOT_MODEL_ALLOWLIST`` is comma-separated patterns; booleans accept
        ``1/0``, ``true/false``, ``yes/no``, ``on/off``.

        Raises:
            ValueError: a variable cannot be parsed or a value is invalid (the message
                names the setting and never repeats the value: it may be a secret).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is None:
                continue
            try:
                values[name] = _parse_env(name, field.annotation, raw)
            except ValueError as e:
                raise ValueError(f"{_ENV_PREFIX}{name.upper()}: {e}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            raise ValueError(_describe(e)) from None


def _describe(err: ValidationError) -> str:
    """Each invalid setting with its variable and what is wrong, without its value."""
    parts = []
    for e in err.errors(include_input=False, include_url=False):
        name = str(e["loc"][0]) if e["loc"] else "settings"
        ctx = e.get("ctx") or {}
        msg = str(ctx["error"]) if "error" in ctx else e["msg"]
        parts.append(f"{name} ({_ENV_PREFIX}{name.upper()}): {msg}")
    return "invalid settings: " + "; ".join(parts)


def _parse_env(name: str, annotation: Any, raw: str) -> Any:
    text = str(annotation)
    if name == "tokens":
        raw = raw.strip()
        if raw.startswith("{"):
            parsed = json.loads(raw)
            if not isinstance(parsed, dict):
                raise ValueError("expected a JSON object of token -> owner")
            return parsed
        out: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in raw.split(","))):
            token, sep, owner = item.partition("=")
            if not sep:
                raise ValueError("expected TOKEN=OWNER pairs separated by commas")
            out[token.strip()] = owner.strip()
        return out
    if name == "model_allowlist":
        return tuple(s.strip() for s in raw.split(",") if s.strip())
    if annotation is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected a boolean (1/0, true/false); got {raw!r}")
    if raw.strip() == "" and "None" in text:
        return None
    return raw
