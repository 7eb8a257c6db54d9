"""The operator's configuration: one pydantic-settings model (keywords, ``PRUNEPILOT_*``, flags).

Every field can be set by an environment variable named ``PRUNEPILOT_`` + the field name in
capitals (``PRUNEPILOT_DATA_DIR``, ``PRUNEPILOT_TOKENS``, ...), read by `Settings.from_env`
(``Settings(...)`` itself reads keywords only, so an embedding program is not steered by its
environment). A field annotated with a `_Flag` is also a ``prunepilot serve`` flag: the
parser and the mapping back are derived from the fields (`add_flags`, `flag_values`), so a
setting is added in one place. Derived locations (database, artifacts, uploads) default to
paths inside ``data_dir`` so a bare ``prunepilot serve`` works with no set-up: a SQLite file
in WAL mode, local Ray, a generated local token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

__all__ = ["Settings", "add_flags", "flag_values"]

log = logging.getLogger("prunepilot.service")

_ENV_PREFIX = "PRUNEPILOT_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# the environment `Settings.from_env` reads; unset (plain ``Settings(...)``): none
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("_prunepilot_environ", default=None)


def _default_data_dir() -> Path:
    home = Path.home()
    if os.access(home, os.W_OK):
        return home / ".prunepilot"
    return Path.cwd() / ".prunepilot"


def _token_pairs(items: list[str]) -> dict[str, str]:
    """Repeated ``--token TOKEN=OWNER`` values as token -> owner.

    Raises:
        ValueError: an item is not ``TOKEN=OWNER`` (the message never echoes it: a secret).
    """
    tokens: dict[str, str] = {}
    for item in items:
        token, sep, owner = item.partition("=")
        if not sep or not token or not owner:
            raise ValueError("--token expects TOKEN=OWNER")
        tokens[token] = owner
    return tokens


@dataclass(frozen=True)
class _Flag:
    """How a settings field appears as a ``prunepilot serve`` flag (``Annotated`` metadata).

    Attributes:
        help: the flag's help text.
        name: the flag (default: ``--`` and the field name with dashes).
        action: ``value`` (``--flag VALUE``, typed and with choices from the annotation),
            ``append`` (repeatable; the list goes through ``convert``, default a tuple),
            ``true`` / ``false`` (a bare switch that sets the field to that value).
        metavar: the value's placeholder in ``--help``.
        convert: turns the repeated values into the field's value.
    """

    help: str | None = None
    name: str | None = None
    action: Literal["value", "append", "true", "false"] = "value"
    metavar: str | None = None
    convert: Callable[[list[str]], Any] | None = None


class Settings(BaseSettings):
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
    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX, frozen=True, extra="forbid", hide_input_in_errors=True
    )

    data_dir: Annotated[Path, _Flag("state directory (default ~/.prunepilot)")] = Field(
        default_factory=_default_data_dir
    )
    database_url: Annotated[
        str | None, _Flag("SQLAlchemy URL (default: SQLite in the data dir)")
    ] = None
    artifact_dir: Annotated[
        Path | None, _Flag("where artifacts go (default: DATA_DIR/artifacts)")
    ] = None
    upload_dir: Path | None = None
    data_root: Annotated[Path | None, _Flag("the directory dir: datasets may name")] = None
    tokens: Annotated[
        dict[str, str],
        _Flag(
            "accept this bearer token for OWNER (repeatable; default: one generated local "
            "token in DATA_DIR/token, which the client reads for local URLs)",
            name="--token",
            action="append",
            metavar="TOKEN=OWNER",
            convert=_token_pairs,
        ),
    ] = Field(default_factory=dict)
    auth: Annotated[
        bool, _Flag("no tokens (single-user demo only)", name="--no-auth", action="false")
    ] = True
    model_allowlist: Annotated[
        tuple[str, ...],
        _Flag(
            "allow package.module:NAME factories matching this fnmatch pattern",
            name="--allow",
            action="append",
            metavar="PATTERN",
        ),
    ] = ("prunepilot.demo.models:*",)
    allow_untrusted_models: Annotated[bool, _Flag("accept pickles", action="true")] = False
    max_upload_bytes: Annotated[int, _Flag()] = Field(default=1 << 30, ge=1)
    max_jobs_per_token: Annotated[int, _Flag()] = Field(default=10, ge=1)
    concurrent_jobs: Annotated[int, _Flag()] = Field(default=1, ge=1)
    ray_address: Annotated[str | None, _Flag("Ray cluster (default: start a local Ray)")] = None
    ray_num_cpus: Annotated[int | None, _Flag("CPUs of the local Ray")] = Field(default=None, ge=1)
    ray_auth_mode: Annotated[
        Literal["token", "disabled"] | None, _Flag("Ray token authentication")
    ] = None
    ray_auth_token_file: Annotated[Path | None, _Flag("file holding the Ray cluster's token")] = (
        None
    )
    workers_per_job: Annotated[int, _Flag()] = Field(default=2, ge=1)
    max_workers_per_job: int = Field(default=16, ge=1)
    worker_device: Annotated[Literal["auto", "cpu", "cuda"], _Flag()] = "auto"
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
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords first, then the environment `from_env` was given (none otherwise)."""
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return (init_settings, _Environment(settings_cls, environ))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PRUNEPILOT_*`` variables, then ``overrides`` (e.g. CLI flags).

        ``PRUNEPILOT_TOKENS`` is ``token=owner,token2=owner2`` or a JSON object;
        ``PRUNEPILOT_MODEL_ALLOWLIST`` is comma-separated patterns; booleans accept
        ``1/0``, ``true/false``, ``yes/no``, ``on/off``. Overrides that are ``None`` are
        ignored.

        Raises:
            ValueError: a variable cannot be parsed or a value is invalid (the message
                names the setting and never repeats the value: it may be a secret).
        """
        reset = _ENVIRON.set(os.environ if environ is None else environ)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except SettingsError as e:  # a variable `_parse_env` refused: its message
            raise ValueError(str(e.__cause__ or e)) from None
        except ValidationError as e:
            raise ValueError(_describe(e)) from None
        finally:
            _ENVIRON.reset(reset)


class _Environment(EnvSettingsSource):
    """``PRUNEPILOT_*`` variables of a given mapping, parsed as the service always has.

    Names match exactly (``PRUNEPILOT_`` and the field name in capitals); values go through
    `_parse_env` rather than pydantic-settings' JSON decoding, so the comma-separated
    formats and the boolean words stay as documented.

    Args:
        settings_cls: the settings model.
        environ: the variables to read.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls, case_sensitive=False, env_prefix=_ENV_PREFIX)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # lower-cased for the case-insensitive lookup, but only the exact capitalised names
        return {
            k.lower(): v
            for k, v in self._environ.items()
            if k.startswith(_ENV_PREFIX) and k == k.upper()
        }

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        """The field's value from its variable's text (``None``: unset or empty optional)."""
        if value is None:
            return None
        try:
            return _parse_env(field_name, field.annotation, value)
        except ValueError as e:
            raise ValueError(f"{_ENV_PREFIX}{field_name.upper()}: {e}") from None


# ---------------------------------------------------------------------------- flags


def _flags() -> list[tuple[str, FieldInfo, _Flag]]:
    """``(field name, field, flag)`` of every field that is a flag, in field order."""
    out = []
    for name, field in Settings.model_fields.items():
        flag = next((m for m in field.metadata if isinstance(m, _Flag)), None)
        if flag is not None:
            out.append((name, field, flag))
    return out


def _value_type(annotation: Any) -> Any:
    """The annotation without ``| None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def add_flags(p: argparse.ArgumentParser, dests: Mapping[str, str] | None = None) -> None:
    """Add a flag for every `Settings` field annotated with a `_Flag`.

    Args:
        p: the parser to extend.
        dests: field name -> the attribute its flag is stored in (default: the field name).
    """
    for name, field, flag in _flags():
        option = flag.name or "--" + name.replace("_", "-")
        kw: dict[str, Any] = {"dest": (dests or {}).get(name, name), "help": flag.help}
        if flag.action in ("true", "false"):
            kw["action"] = "store_true"
        else:
            kw["metavar"] = flag.metavar
            if flag.action == "append":
                kw["action"] = "append"
            else:
                kind = _value_type(field.annotation)
                if typing.get_origin(kind) is Literal:
                    kw["choices"] = list(typing.get_args(kind))
                elif kind in (int, float):
                    kw["type"] = kind
        p.add_argument(option, **kw)


def flag_values(args: argparse.Namespace, dests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings the parsed flags set (flags not given are left out).

    Raises:
        ValueError: a repeated flag's values cannot be converted (e.g. ``--token``).
    """
    values: dict[str, Any] = {}
    for name, _field, flag in _flags():
        given = getattr(args, (dests or {}).get(name, name), None)
        if given is None or given is False:
            continue
        if flag.action in ("true", "false"):
            values[name] = flag.action == "true"
        elif flag.action == "append":
            values[name] = flag.convert(given) if flag.convert else tuple(given)
        else:
            values[name] = given
    return values


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
