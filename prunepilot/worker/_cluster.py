"""Connecting to Ray: an embedded local instance on demand, or an existing cluster."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

import ray

__all__ = ["cluster_devices", "ensure_ray"]

log = logging.getLogger("prunepilot.worker")


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    worker_niceness: int | None = 0,
    auth_mode: Literal["token", "disabled"] | None = None,
    auth_token_file: Path | None = None,
) -> None:
    """Start a local Ray (``address=None``: always a new one, never a cluster found on the
    machine) or connect to a cluster, once per process.

    The local instance gets the driver's ``sys.path`` so workers import the same modules
    (models defined in user code, test helpers) as the driver; no dashboard, quiet logs.
    Its workers run ``worker_niceness`` above the driver's niceness (Ray's
    ``worker_niceness`` system config; ``None`` keeps Ray's default of 15), so evaluators
    are not starved on a shared machine. A cluster keeps its own setting.

    ``auth_mode`` and ``auth_token_file`` set Ray's token authentication (see
    `_use_auth`); unset, Ray's own ``RAY_AUTH_*`` environment decides.

    Raises:
        ValueError: ``auth_token_file`` is missing, unreadable or empty.
    """
    if auth_token_file is not None:
        _check_token_file(auth_token_file)
    if ray.is_initialized():
        return
    _use_auth(auth_mode, auth_token_file)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address is None:
        path = os.pathsep.join(p for p in sys.path if p)
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        kwargs["num_cpus"] = num_cpus
        if worker_niceness is not None:
            kwargs["_system_config"] = {"worker_niceness": worker_niceness}
        log.info("starting a local Ray instance")
    else:
        log.info("connecting to the Ray cluster at %s", address)
    # "local": a new instance even where `ray start` or RAY_ADDRESS names another
    ray.init(address=address or "local", **kwargs)


def _check_token_file(path: Path) -> None:
    """Refuse a token file Ray could not use; warn when others can read it."""
    try:
        st = path.stat()
        empty = not path.read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read the Ray token file {path}: {e.strerror}") from None
    if empty:
        raise ValueError(f"the Ray token file {path} is empty")
    if st.st_mode & 0o077:
        log.warning("the Ray token file %s is readable by other users: chmod 600 it", path)


def _use_auth(mode: Literal["token", "disabled"] | None, token_file: Path | None) -> None:
    """Set Ray's token authentication for this process (and the local Ray it starts).

    Ray reads it from the environment: ``RAY_AUTH_MODE`` and the token from
    ``RAY_AUTH_TOKEN`` (which wins), ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
    The token stays in its file: only the path goes into the environment. Ray caches
    its config at import, so it is re-read, as ``ray.init`` itself does for local clusters.
    """
    if mode is None and token_file is None:
        return
    if token_file is not None:
        mode = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
        if os.environ.pop("RAY_AUTH_TOKEN", None) is not None:
            log.warning("RAY_AUTH_TOKEN ignored: the configured Ray token file takes its place")
    os.environ["RAY_AUTH_MODE"] = str(mode)
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    log.info("Ray token authentication: %s", mode)


def cluster_devices() -> tuple[int, int]:
    """(CPUs, GPUs) the Ray cluster offers."""
    res = ray.cluster_resources()
    return int(res.get("CPU", 0)), int(res.get("GPU", 0))
